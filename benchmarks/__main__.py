"""`make bench`: `python -m benchmarks [ingest|trainer|monitor|pipeline|deployments|load|watchers|mcp ...]`
runs the named suites (all by default, in order) against private sandboxes, writes their sections of
benchmarks/RESULTS.md and prints them."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks import deployments, ingest, load, mcp, monitor, pipeline, trainer, watchers
from benchmarks.results import RESULTS, Section, write

SUITES: dict[str, Callable[[], Section]] = {
    "ingest": ingest.run,
    "trainer": trainer.run,
    "monitor": monitor.run,
    "pipeline": pipeline.run,
    "deployments": deployments.run,
    "load": load.run,
    "watchers": watchers.run,
    "mcp": mcp.run,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"{' or '.join(SUITES)}; default: all")
    chosen = parser.parse_args(argv).suites or list(SUITES)
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    sections = [SUITES[suite]() for suite in SUITES if suite in chosen]
    print(write(sections, RESULTS))


if __name__ == "__main__":
    main()
