"""Keep the generated parts of the AWS setup in step with their sources.

    .venv/bin/python deployments/aws/render.py          # rewrite what is stale
    .venv/bin/python deployments/aws/render.py --check  # exit 1 if anything is stale

- `mltp.cfn.yaml`'s `ForwarderFunction.Code.ZipFile` is `s3_forwarder/handler.py`, byte for byte:
  CloudFormation can only inline code, so the template carries a copy, and this writes it.
- `iam-policy.json` is the template's `WorkerPolicy` document with every `!Sub` string left as it is, so
  its `${...}` placeholders are the template's parameters, resources and pseudo parameters.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "mltp.cfn.yaml"
HANDLER = HERE / "s3_forwarder" / "handler.py"
POLICY = HERE / "iam-policy.json"
ZIPFILE_LIMIT = 4096  # CloudFormation's limit on inline Lambda code
_ZIPFILE_BLOCK = re.compile(r"^( *)ZipFile: \|\n(?:\1  .*\n|\n)*", re.MULTILINE)


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (`!Sub x` -> `{"Fn::Sub": "x"}`)."""


def _intrinsic(loader: _TemplateLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(text: str | None = None) -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text() if text is None else text, Loader=_TemplateLoader)


def rendered_template() -> str:
    """The template with the forwarder's current code inlined."""
    code = HANDLER.read_text()
    if len(code.encode()) > ZIPFILE_LIMIT:
        raise SystemExit(f"{HANDLER} is {len(code.encode())} bytes: inline Lambda code is limited to 4096")
    text = TEMPLATE.read_text()
    blocks = list(_ZIPFILE_BLOCK.finditer(text))
    if len(blocks) != 1:
        raise SystemExit(f"{TEMPLATE} must have exactly one `ZipFile: |` block, found {len(blocks)}")
    block = blocks[0]
    indent = block.group(1) + "  "
    body = "".join(indent + line if line.strip() else "\n" for line in code.splitlines(keepends=True))
    separator = "\n" * (len(block.group(0)) - len(block.group(0).rstrip("\n")) - 1)  # blank lines after it
    return f"{text[: block.start()]}{block.group(1)}ZipFile: |\n{body}{separator}{text[block.end() :]}"


def _without_sub(node: Any) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return node["Fn::Sub"]
        if any(key == "Ref" or key.startswith("Fn::") for key in node):
            raise SystemExit(f'WorkerPolicy may use only `!Sub "..."` strings, not {node}')
        return {key: _without_sub(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_sub(item) for item in node]
    return node


def rendered_policy(template: dict[str, Any] | None = None) -> str:
    """iam-policy.json: the worker policy with its `${...}` placeholders."""
    document = (template or load_template())["Resources"]["WorkerPolicy"]["Properties"]["PolicyDocument"]
    return json.dumps(_without_sub(document), indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    template = rendered_template()
    stale = []
    for path, content in ((TEMPLATE, template), (POLICY, rendered_policy(load_template(template)))):
        if not path.is_file() or path.read_text() != content:
            stale.append(path.name)
            if not check:
                path.write_text(content)
    if stale:
        print(f"{'stale' if check else 'rewrote'}: {', '.join(stale)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
