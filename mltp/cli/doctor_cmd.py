"""`mltp doctor`: the connection test. One line per check, a fix for each failure."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import typer
from botocore.exceptions import BotoCoreError, ClientError

from mltp.aws import caller_identity, error_code
from mltp.buckets import inspect_bucket
from mltp.cli.output import console, emit_json
from mltp.errors import MltpError
from mltp.home import mltp_home


@dataclass
class Check:
    name: str
    status: str  # ok | fail | skip
    detail: str
    fix: str | None = None


class CheckFailed(Exception):
    def __init__(self, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


def _run(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, "ok", probe())
    except CheckFailed as failure:
        return Check(name, "fail", failure.detail, failure.fix)
    except MltpError as error:
        return _failed(name, error)
    except (ClientError, BotoCoreError) as error:
        return Check(
            name, "fail", f"AWS error: {error}", "see the AWS error; `mltp blocks init` re-creates setup"
        )


def _failed(name: str, error: MltpError) -> Check:
    message = str(error)
    detail, separator, fix = message.rpartition(": ")  # our messages end in ": what to do"
    return Check(name, "fail", detail, fix) if separator else Check(name, "fail", message)


@dataclass(frozen=True)
class _Step:
    name: str
    probe: Callable[[], str]
    gates: str | None = None  # when set, a failure skips every later step, which "needs" this


class Sources(Protocol):
    """Where the checks get the blocks and the clients they ask through. `mltp doctor` makes them afresh
    (`Afresh`); a long-lived server keeps them across calls (the MCP server's `Platform`). Either way
    every check asks its service again: only the means of asking are reused."""

    def blocks(self) -> Any: ...

    def prefect_client(self, url: str) -> AbstractContextManager[Any]:
        """A sync Prefect client for `url`, the API the settings point at when this is called."""
        ...

    def single_attempt_client(self, blocks: Any, service: str) -> Any: ...


class Afresh:
    """`Sources` made anew for one run of the checks."""

    def blocks(self) -> Any:
        from blocks.platform import load_blocks

        return load_blocks()

    def prefect_client(self, url: str) -> AbstractContextManager[Any]:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)  # for the API the settings point at: `url`

    def single_attempt_client(self, blocks: Any, service: str) -> Any:
        return blocks.single_attempt_client(service)


class _Checkup:
    """The checks in order. Each probe returns a detail line or raises; state flows to later probes."""

    def __init__(self, stack: ExitStack, sources: Sources | None = None) -> None:
        self.stack = stack
        self.sources = sources or Afresh()
        self.api_url: str | None = None
        self.blocks = None
        self.account: str | None = None

    def steps(self) -> list[_Step]:
        return [
            _Step("prefect-api", self.prefect_api, gates="the Prefect API"),
            _Step("blocks", self.load_blocks, gates="the blocks"),
            _Step("aws-credentials", self.credentials, gates="working AWS credentials"),
            _Step("bucket:datasets", lambda: self.bucket(self.blocks.datasets.bucket_name)),
            _Step("bucket:models", lambda: self.bucket(self.blocks.models.bucket_name)),
            _Step("ec2", self.ec2),
        ]

    def prefect_api(self) -> str:
        from prefect.settings import PREFECT_API_URL

        from mltp.prefect_api import activated, resolve_api, server_version

        target = resolve_api(mltp_home())
        self.api_url = target.url
        if PREFECT_API_URL.value() != target.url:  # a server already points there: no new settings
            self.stack.enter_context(activated(target.url))
        with self.sources.prefect_client(target.url) as client:
            return f"Prefect {server_version(target, client)} at {target.url} ({target.source})"

    def load_blocks(self) -> str:
        self.blocks = self.sources.blocks()
        names = [name for name, _ in self.blocks.named()]
        return f"{len(names)} blocks: {', '.join(names)}"

    def clients(self, service: str):
        return self.blocks.client(service)

    def credentials(self) -> str:
        # One attempt: a diagnosis should answer at once, not retry an unreachable endpoint for a minute.
        identity = caller_identity(lambda service: self.sources.single_attempt_client(self.blocks, service))
        self.account = identity["account"]
        return f"account {identity['account']} as {identity['arn']}"

    def bucket(self, bucket: str) -> str:
        report = inspect_bucket(self.clients, bucket, self.account)
        problem = report.problem()
        if problem:
            raise CheckFailed(*problem)
        transport = "plain-HTTP endpoint, so no TLS-only policy" if report.plain_http else "TLS only"
        return (
            f"{report.s3_uri} reachable, ours, encrypted ({report.encryption}), public access blocked, "
            f"{transport}"
        )

    def ec2(self) -> str:
        settings, ec2 = self.blocks.ec2, self.clients("ec2")
        lookups = [
            (settings.subnet_id, "subnet", lambda: ec2.describe_subnets(SubnetIds=[settings.subnet_id])),
            (
                settings.security_group_ids,
                "security groups",
                lambda: ec2.describe_security_groups(GroupIds=settings.security_group_ids),
            ),
            (settings.ami_id, "AMI", lambda: ec2.describe_images(ImageIds=[settings.ami_id])["Images"][0]),
        ]
        for configured, what, lookup in lookups:
            if not configured:
                continue
            try:
                lookup()
            except (ClientError, IndexError) as error:
                raise CheckFailed(
                    f"{what} {configured} not found ({error_code(error) or 'no such image'})",
                    f"fix the EC2_* variable for the {what} and run `mltp blocks init`",
                ) from error
        subnet = settings.subnet_id or "default VPC"
        ami = settings.ami_id or "latest Amazon Linux 2023 at launch"
        return f"{settings.instance_type} in {subnet}, AMI {ami}"


def _batches(steps: list[_Step]) -> Iterator[list[_Step]]:
    """Each gating step alone, and each run of steps between them together: those need only what the
    gates before them established, so they ask their services at once."""
    batch: list[_Step] = []
    for step in steps:
        if step.gates:
            if batch:
                yield batch
            yield [step]
            batch = []
        else:
            batch.append(step)
    if batch:
        yield batch


def _run_all(batch: list[_Step]) -> list[Check]:
    if len(batch) == 1:
        return [_run(batch[0].name, batch[0].probe)]
    with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="mltp-check") as pool:
        # Each thread sees the settings of this one (the Prefect API it points at).
        futures = [pool.submit(contextvars.copy_context().run, _run, step.name, step.probe) for step in batch]
        return [future.result() for future in futures]


def run_checks(sources: Sources | None = None) -> tuple[str | None, list[Check]]:
    """All checks in order; a failed gating check skips the ones after it. The checks between two gates
    run concurrently. `sources`: where the blocks and clients come from (default: `Afresh`)."""
    checks: list[Check] = []
    with ExitStack() as stack:
        checkup = _Checkup(stack, sources)
        missing: str | None = None
        for batch in _batches(checkup.steps()):
            if missing:
                checks.extend(Check(step.name, "skip", f"needs {missing}") for step in batch)
                continue
            ran = _run_all(batch)
            checks.extend(ran)
            gate = batch[0].gates
            if gate and ran[0].status != "ok":
                missing = gate
    return checkup.api_url, checks


def doctor(json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Check the Prefect API, the blocks, the AWS credentials, the buckets and the EC2 settings."""
    api_url, checks = run_checks()
    ok = all(check.status == "ok" for check in checks)
    if json:
        emit_json({"ok": ok, "prefect_api_url": api_url, "checks": [asdict(check) for check in checks]})
    else:
        marks = {"ok": "[green]ok  [/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]"}
        for check in checks:
            fix = f"  -> fix: {check.fix}" if check.fix else ""
            console.print(f"{marks[check.status]}  {check.name:<16} {check.detail}{fix}")
        failed = sum(check.status == "fail" for check in checks)
        console.print("all checks passed" if ok else f"{failed} check(s) failed, the rest skipped or passed")
    if not ok:
        raise typer.Exit(1)
