"""The mcp suite: `mltp mcp serve` driven as an agent's MCP client drives it (the official SDK's `Client`
over stdio, the server a child process), beside the `mltp` command that answers the same question, on one
private sandbox holding the iris dataset and one model trained on it.

Start: from spawning the server to the answer of its first `tools/list` (the client's handshake in
between), a new server each time, beside `mltp --version`, the CLI's own start. Read tools: every read tool
called in one session, round-robin, after a first call of each that is timed apart; beside each, its
`mltp ... --json` command, a new process each run, as an agent without the server would run it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from sklearn.datasets import load_iris

from benchmarks.harness import MLTP, measure, sandbox
from benchmarks.report import DASH, Row, load_average, p90, summary, table
from benchmarks.results import Section, environment

DATASET = MODEL = "iris"  # `mltp train` names the model after its dataset
PLANNED = "random_forest"  # the algorithm plan_training and `mltp plan` are asked about
STARTS = 5  # servers started, each to its first tools/list answer
CALLS = 20  # measured calls of each read tool in one session, after its first
CLI_RUNS = 3  # runs of each `mltp` command, round-robin
START_TARGET_S, TOOL_TARGET_MS = 2.0, 300.0
PACKAGES = ("mcp", "prefect", "boto3", "moto")


@dataclass(frozen=True)
class Question:
    """A read tool's call and the `mltp` command (without --json) that answers the same question. `ours`
    of the tool's structured content must equal `theirs` of the command's JSON, or the suite fails."""

    tool: str
    arguments: dict[str, Any]
    command: tuple[str, ...]
    ours: Callable[[dict[str, Any]], Any]
    theirs: Callable[[Any], Any]


def _datasets(listed: list[dict[str, Any]]) -> list[str]:
    return sorted(entry["name"] for entry in listed)


def _models(listed: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted((entry["name"], entry["latest_version"]) for entry in listed)


def _dataset(manifest: dict[str, Any]) -> tuple[str, int]:
    return manifest["version"], manifest["rows"]


def _plan(plan: dict[str, Any]) -> tuple[str, int, float]:
    return plan["backend"], plan["memory_mb"], plan["estimated_cost_usd"]


def _model(found: dict[str, Any]) -> tuple[int, str]:
    return found["version"], found["approval"]


def _actions(events: list[dict[str, Any]]) -> list[str]:
    return [event["action"] for event in events]


QUESTIONS = (
    Question(
        "list_datasets", {}, ("datasets", "list"), lambda answer: _datasets(answer["datasets"]), _datasets
    ),
    Question("describe_dataset", {"name": DATASET}, ("datasets", "show", DATASET), _dataset, _dataset),
    Question(
        "plan_training",
        {"dataset": DATASET, "algorithm": PLANNED},
        ("plan", "--dataset", DATASET, "--algorithm", PLANNED),
        _plan,
        _plan,
    ),
    Question("list_models", {}, ("models", "list"), lambda answer: _models(answer["models"]), _models),
    Question("describe_model", {"reference": MODEL}, ("models", "show", MODEL), _model, _model),
    Question(  # no history command: `mltp models show` prints the version's history with the rest
        "model_history",
        {"name": MODEL},
        ("models", "show", MODEL),
        lambda answer: _actions(answer["events"]),
        lambda shown: _actions(shown["history"]),
    ),
    Question("platform_status", {}, ("doctor",), lambda status: status["ok"], lambda status: status["ok"]),
)


@dataclass
class Results:
    load_start: tuple[float, ...]
    initialized_s: list[float] = field(default_factory=list)  # spawn to the handshake's end
    listed_s: list[float] = field(default_factory=list)  # spawn to the first tools/list answer
    version_s: list[float] = field(default_factory=list)  # `mltp --version`
    first_ms: dict[str, float] = field(default_factory=dict)
    calls_ms: dict[str, list[float]] = field(default_factory=lambda: {q.tool: [] for q in QUESTIONS})
    cli_s: dict[tuple[str, ...], list[float]] = field(default_factory=dict)
    load_end: tuple[float, ...] = ()


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def seed(env: dict[str, str], scratch: Path) -> None:
    """The iris dataset with its target, and model `iris` version 1 trained on it on local compute."""
    path = scratch / f"{DATASET}.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    ingest = [MLTP, "datasets", "ingest", path, "--name", DATASET, "--target", "target", "--json"]
    subprocess.run(ingest, env=env, capture_output=True, check=True)
    train = [MLTP, "train", "--dataset", DATASET, "--algorithm", "knn", "--compute", "local", "--json"]
    subprocess.run(train, env=env, capture_output=True, check=True)


def server(env: dict[str, str], log: TextIO) -> Client:
    """What `Client(StdioServerParameters(...))` starts, with the server's stderr (its log) in `log`."""
    parameters = StdioServerParameters(command=str(MLTP), args=["mcp", "serve"], env=env)
    return Client(stdio_client(parameters, errlog=log))


async def start(env: dict[str, str], log: TextIO) -> tuple[float, float]:
    """Seconds from the spawn to the handshake's end and to the first tools/list answer."""
    started = time.perf_counter()
    async with server(env, log) as client:
        initialized = time.perf_counter() - started
        listed = {tool.name for tool in (await client.list_tools()).tools}
        answered = time.perf_counter() - started
    missing = {question.tool for question in QUESTIONS} - listed
    if missing:
        raise RuntimeError(f"tools/list did not list {sorted(missing)}")
    return initialized, answered


async def call(client: Client, question: Question) -> tuple[float, dict[str, Any]]:
    """Milliseconds to the tool's answer, and its structured content."""
    started = time.perf_counter()
    result = await client.call_tool(question.tool, question.arguments)
    ms = 1000 * (time.perf_counter() - started)
    if result.is_error:
        raise RuntimeError(f"{question.tool} failed: {result.content[0].text}")
    return ms, result.structured_content


async def session(env: dict[str, str], log: TextIO, results: Results) -> dict[str, dict[str, Any]]:
    """Every read tool's first call, then CALLS rounds of them all; returns each tool's last answer."""
    answers = {}
    async with server(env, log) as client:
        for question in QUESTIONS:
            results.first_ms[question.tool], answers[question.tool] = await call(client, question)
        for _ in range(CALLS):
            for question in QUESTIONS:
                ms, answers[question.tool] = await call(client, question)
                results.calls_ms[question.tool].append(ms)
    return answers


def measure_cli(env: dict[str, str], results: Results) -> dict[tuple[str, ...], Any]:
    """CLI_RUNS runs of each command, round-robin; returns each command's last JSON."""
    printed = {}
    for _ in range(CLI_RUNS):
        for command in dict.fromkeys(question.command for question in QUESTIONS):
            measured = measure([MLTP, *command, "--json"], env, timed_inside=False, json_stdout=True)
            results.cli_s.setdefault(command, []).append(measured.seconds)
            printed[command] = measured.output
    return printed


def check(answers: dict[str, dict[str, Any]], printed: dict[tuple[str, ...], Any]) -> None:
    for question in QUESTIONS:
        ours, theirs = question.ours(answers[question.tool]), question.theirs(printed[question.command])
        if ours != theirs:
            raise RuntimeError(
                f"{question.tool} answered {ours}, `mltp {' '.join(question.command)}` {theirs}"
            )


def measure_all(env: dict[str, str], log: TextIO) -> Results:
    results = Results(os.getloadavg())
    for _ in range(STARTS):
        initialized, listed = asyncio.run(start(env, log))
        results.initialized_s.append(initialized)
        results.listed_s.append(listed)
        results.version_s.append(measure([MLTP, "--version"], env, timed_inside=False).seconds)
        _print(
            f"start: tools/list answered after {listed:.2f} s, `mltp --version` {results.version_s[-1]:.2f} s"
        )
    answers = asyncio.run(session(env, log, results))
    for question in QUESTIONS:
        calls = results.calls_ms[question.tool]
        _print(f"{question.tool}: median {statistics.median(calls):.1f} ms, p90 {p90(calls):.1f} ms")
    printed = measure_cli(env, results)
    for command, runs in results.cli_s.items():
        _print(f"mltp {' '.join(command)} --json: median {statistics.median(runs):.2f} s")
    check(answers, printed)
    results.load_end = os.getloadavg()
    return results


# -- the section ---------------------------------------------------------------------------------


def start_table(results: Results) -> str:
    row = Row(
        f"`mltp mcp serve`: spawn → first `tools/list` answer ({STARTS} servers) vs `mltp --version`, "
        f"spawn → exit ({STARTS} runs)",
        results.listed_s,
        results.version_s,
        "s",
        f"< {START_TARGET_S:.0f} s (median)",
        lambda ours, _: statistics.median(ours) < START_TARGET_S,
    )
    return table([row])


def tools_table(results: Results) -> str:
    lines = [
        f"| read tool ({CALLS} calls in one session) | ours: median [min{DASH}max] | ours: p90 | ours: first "
        f"call | baseline: the `mltp` command, a new process ({CLI_RUNS} runs) | baseline: median "
        f"[min{DASH}max] | ratio ours/baseline (medians) | target: median < {TOOL_TARGET_MS:.0f} ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for question in QUESTIONS:
        calls, cli = results.calls_ms[question.tool], results.cli_s[question.command]
        met = statistics.median(calls) < TOOL_TARGET_MS
        lines.append(
            f"| {question.tool} | {summary(calls, 'ms')} | {p90(calls):.1f} ms "
            f"| {results.first_ms[question.tool]:.0f} ms | `mltp {' '.join(question.command)} --json` "
            f"| {summary(cli, 's')} | {statistics.median(calls) / 1000 / statistics.median(cli):.3f}x "
            f"| {'**met**' if met else '**NOT met**'} |"
        )
    return "\n".join(lines)


def header(results: Results) -> str:
    load = [load_average(results.load_start), load_average(results.load_end)]
    return "\n".join(
        [
            *environment(PACKAGES),
            f"- Load average (1, 5, 15 min) at the start: {load[0]}; at the end: {load[1]}. The machine is "
            "shared: other processes' load slows the new processes' start most.",
            f"- One private sandbox (`mltp sandbox up`). `{DATASET}` (150 rows) is ingested with its target "
            f"by `mltp datasets ingest` and model `{MODEL}` version 1 registered by one `mltp train "
            "--algorithm knn --compute local`. The server is started as an agent's MCP client starts it: "
            '`Client(StdioServerParameters(command=mltp, args=["mcp", "serve"], env=...))` of the '
            "official SDK, read-only (no --allow-write); the client, in the benchmark's process, is timed "
            "too.",
            f"- Start: {STARTS} times, a new server from its spawn to the answer of the first `tools/list` "
            "(the client's handshake in between), alternating with `mltp --version` (the CLI's own start: "
            "interpreter, imports, argument parsing, no platform access), timed from its spawn to its exit.",
            f'- Read tools: in one session, each tool\'s first call (timed apart, the "first call" column), '
            f"then {CALLS} rounds of one call of every tool, timed from the request to the answer. Baseline: "
            f"the `mltp` command an agent without the server would run for the same question, a new "
            f"process from spawn to exit, {CLI_RUNS} runs, round-robin. model_history has no command of its "
            "own: `mltp models show` prints the version's history with the rest. Each tool's answer must "
            "agree with its command's JSON (names, versions, the plan's backend, size and cost, the "
            "history's actions, the checks' verdict), or the suite fails.",
        ]
    )


def footnotes(results: Results, total_seconds: float) -> str:
    handshake = summary(results.initialized_s, "s")
    listing = [
        1000 * (listed - initialized)
        for listed, initialized in zip(results.listed_s, results.initialized_s, strict=True)
    ]
    return "\n".join(
        [
            f"Of the start, the handshake (spawn to the answer of `initialize`) took {handshake}, the first "
            f"`tools/list` round trip after it {summary(listing, 'ms')}.",
            "",
            "The first call of a tool includes its imports and, for the session's first call, loading the "
            "platform's blocks from the Prefect API (once per server, as every `mltp` command loads them "
            "once per process); later calls reuse the blocks and their AWS clients. So does platform_status, "
            "and one Prefect client kept open, but like `mltp doctor` every call runs the checks afresh: it "
            "asks the Prefect API (health, version), STS, both buckets (five S3 requests each) and EC2 (the "
            "subnet, security groups and AMI configured: none in the sandbox) again, the buckets and EC2 at "
            "once on threads, and keeps no answer. Every call is audited: a line of the server's log (its "
            "stderr, kept in a file) and a Prefect event, sent in the background.",
            "",
            f"moto, the Prefect server, the fleet, the MCP server and the client share the same "
            f"{os.cpu_count()} cores.",
            "",
            f"Whole suite (sandbox start and stop included): {total_seconds / 60:.1f} min.",
        ]
    )


def run() -> Section:
    started = time.monotonic()
    print("mcp: starting a private sandbox ...", file=sys.stderr, flush=True)
    with sandbox() as (_, env), tempfile.TemporaryDirectory(prefix="mltp-bench-data-") as scratch:
        seed(env, Path(scratch))
        with (Path(scratch) / "server.log").open("w") as log:
            results = measure_all(env, log)
    body = [
        header(results),
        start_table(results),
        tools_table(results),
        footnotes(results, time.monotonic() - started),
    ]
    return Section("mcp", "\n\n".join(body))
