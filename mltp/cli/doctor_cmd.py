"""`mltp doctor`: the connection test. One line per check, a fix for each failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import typer
from botocore.exceptions import BotoCoreError, ClientError

from mltp.aws import ClientFactory, caller_identity, error_code
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


def _ec2_probe(clients: ClientFactory, ec2_block) -> str:
    ec2 = clients("ec2")
    lookups = [
        (ec2_block.subnet_id, "subnet", lambda: ec2.describe_subnets(SubnetIds=[ec2_block.subnet_id])),
        (
            ec2_block.security_group_ids,
            "security groups",
            lambda: ec2.describe_security_groups(GroupIds=ec2_block.security_group_ids),
        ),
        (ec2_block.ami_id, "AMI", lambda: ec2.describe_images(ImageIds=[ec2_block.ami_id])["Images"][0]),
    ]
    for configured, what, lookup in lookups:
        if not configured:
            continue
        try:
            lookup()
        except (ClientError, IndexError) as error:
            code = error_code(error) or "not found"
            raise CheckFailed(
                f"{what} {configured} not found ({code})",
                f"fix the EC2_* variable for the {what} and run `mltp blocks init`",
            ) from error
    subnet = ec2_block.subnet_id or "default VPC"
    ami = ec2_block.ami_id or "latest Amazon Linux 2023 at launch"
    return f"{ec2_block.instance_type} in {subnet}, AMI {ami}"


def run_checks() -> tuple[str | None, list[Check]]:
    """All checks in order; a failed check skips the ones that depend on it."""
    from mltp.prefect_api import activated, resolve_api, server_version

    checks: list[Check] = []
    try:
        target = resolve_api(mltp_home())
    except MltpError as error:
        checks.append(_failed("prefect-api", error))
        return None, checks + _skipped("the Prefect API")
    with activated(target.url):
        api = _run(
            "prefect-api", lambda: f"Prefect {server_version(target)} at {target.url} ({target.source})"
        )
        checks.append(api)
        if api.status != "ok":
            return target.url, checks + _skipped("the Prefect API")
        from blocks.platform import load_blocks

        loaded = {}
        checks.append(_run("blocks", lambda: _load(loaded, load_blocks)))
        if "blocks" not in loaded:
            return target.url, checks + _skipped("the blocks", after="blocks")
        blocks = loaded["blocks"]
        clients = blocks.credentials.get_client
        identity = {}
        checks.append(_run("aws-credentials", lambda: _identity(identity, clients)))
        if not identity:
            return target.url, checks + _skipped("working AWS credentials", after="aws-credentials")
        for label, bucket_block in (("datasets", blocks.datasets), ("models", blocks.models)):
            checks.append(
                _run(f"bucket:{label}", lambda b=bucket_block.bucket_name: _bucket(clients, b, identity))
            )
        checks.append(_run("ec2", lambda: _ec2_probe(clients, blocks.ec2)))
    return target.url, checks


_DEPENDENT = ["blocks", "aws-credentials", "bucket:datasets", "bucket:models", "ec2"]


def _skipped(needs: str, after: str | None = None) -> list[Check]:
    names = _DEPENDENT[_DEPENDENT.index(after) + 1 :] if after else _DEPENDENT
    return [Check(name, "skip", f"needs {needs}") for name in names]


def _load(into: dict, load_blocks) -> str:
    into["blocks"] = blocks = load_blocks()
    return f"{len(blocks.named())} blocks: " + ", ".join(name for name, _ in blocks.named())


def _identity(into: dict, clients: ClientFactory) -> str:
    into.update(caller_identity(clients))
    return f"account {into['account']} as {into['arn']}"


def _bucket(clients: ClientFactory, bucket: str, identity: dict) -> str:
    report = inspect_bucket(clients, bucket, identity["account"])
    problem = report.problem()
    if problem:
        raise CheckFailed(*problem)
    return f"{report.s3_uri} reachable, ours, encrypted ({report.encryption}), public access blocked"


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
