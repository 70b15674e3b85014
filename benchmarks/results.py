"""benchmarks/RESULTS.md: one section per suite. Rerunning one suite rewrites its section and keeps the
others as the file had them, so every section carries its own date, machine and versions."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLES = {  # suite -> section heading, in file order
    "ingest": "Dataset ingestion",
    "trainer": "Trainer",
    "monitor": "Monitor: API calls per tick",
    "pipeline": "Pipeline overhead",
    "deployments": "Deployments: event-to-run and watcher latency",
    "load": "Load: pipelines started at once",
    "watchers": "Watchers: files dropped under incoming/ at once",
    "mcp": "MCP server: start and read tools",
}
LEGACY_TITLE = "# Dataset ingestion benchmark"  # the file before it had sections: all of it was ingestion
PREAMBLE = "\n".join(
    [
        "# Benchmarks",
        "",
        "`make bench` (`python -m benchmarks`) runs every suite against a private sandbox and rewrites "
        "this file; `python -m benchmarks SUITE...` (ingest, trainer, monitor, pipeline, deployments, load, "
        "watchers, mcp) reruns the named suites and keeps the other sections as they were, so each section "
        "says when and where it was measured.",
    ]
)


@dataclass(frozen=True)
class Section:
    suite: str
    body: str  # everything under the section's heading

    def render(self) -> str:
        return f"## {TITLES[self.suite]}\n\n{self.body.strip()}"


def environment(packages: tuple[str, ...], extra: str = "") -> list[str]:
    """The date, machine and versions lines that open a section."""
    meminfo = Path("/proc/meminfo").read_text().split("\n")
    mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    versions = ", ".join(f"{package} {version(package)}" for package in packages)
    return [
        f"- Date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Machine: {os.cpu_count()} cores, {mem_kb / 1024**2:.1f} GiB memory, {platform.platform()}",
        f"- Python {platform.python_version()}, {versions}{extra}",
    ]


def existing_sections(text: str) -> dict[str, Section]:
    if text.startswith(LEGACY_TITLE):
        return {"ingest": Section("ingest", text.removeprefix(LEGACY_TITLE))}
    suites = {title: suite for suite, title in TITLES.items()}
    found: dict[str, Section] = {}
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)  # [preamble, title, body, title, body, ...]
    for title, body in zip(parts[1::2], parts[2::2], strict=True):
        if title.strip() in suites:
            found[suites[title.strip()]] = Section(suites[title.strip()], body)
    return found


def write(new: list[Section], path: Path = RESULTS) -> str:
    """Merge `new` into the file (other suites' sections kept) and return the new sections' text."""
    sections = existing_sections(path.read_text()) if path.exists() else {}
    sections.update({section.suite: section for section in new})
    ordered = [sections[suite].render() for suite in TITLES if suite in sections]
    path.write_text("\n\n".join([PREAMBLE, *ordered]) + "\n")
    return "\n\n".join(section.render() for section in new)
