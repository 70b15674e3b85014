"""`python -m mltp.trainer run --job s3://bucket/runs/<job_id>/job.json`: what EC2 user-data runs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mltp.aws import boto3_client_factory
from mltp.trainer.job_input import start_reading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mltp.trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train as the job spec says and write status.json")
    run.add_argument("--job", required=True, help="s3:// URI of the job spec")
    args = parser.parse_args(argv)
    # On EC2 the bootstrap exports the instance id; credentials and region come from the instance role.
    clients = boto3_client_factory()
    reading = start_reading(clients, args.job)
    from mltp.trainer.runner import configure_logging, run_job  # scikit-learn: imported while it reads

    configure_logging()
    status = run_job(args.job, clients, instance_id=os.environ.get("MLTP_INSTANCE_ID"), reading=reading)
    return 0 if status["state"] == "succeeded" else (2 if status.get("kind") == "user" else 1)


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown of scikit-learn, pandas and the data (about 0.4 s after a
    1M-row run): by now the model, metrics and status.json are written and the log is flushed to
    CloudWatch; only this process's own output is left to flush."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
