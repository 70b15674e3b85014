"""Print a deployed mltp stack's settings as `.env` lines.

    .venv/bin/python deployments/aws/stack_env.py mltp >> .env     # [--region R] [--endpoint-url URL]

The template marks each output that is a setting by starting its description with `.env NAME:`.
Appended to a copy of `.env.example`, these lines win over its examples (the last assignment counts).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import boto3

_SETTING = re.compile(r"^\.env ([A-Z][A-Z0-9_]*):")


def env_lines(outputs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for output in outputs:
        found = _SETTING.match(output.get("Description", ""))
        if found:
            lines.append(f"{found.group(1)}={output['OutputValue']}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack name, e.g. mltp")
    parser.add_argument("--region", help="the stack's region (default: the AWS CLI's)")
    parser.add_argument("--endpoint-url", help="another CloudFormation endpoint (e.g. a moto server)")
    args = parser.parse_args(argv)
    cloudformation = boto3.client("cloudformation", region_name=args.region, endpoint_url=args.endpoint_url)
    stack = cloudformation.describe_stacks(StackName=args.stack)["Stacks"][0]
    print(f"# from CloudFormation stack {args.stack}")
    print("\n".join(env_lines(stack.get("Outputs", []))))


if __name__ == "__main__":
    main()
