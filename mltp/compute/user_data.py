"""EC2 user-data for one training job, rendered from `deployments/ec2/bootstrap.sh`.

Every value is interpolated into a shell script, so each one is checked against a strict pattern first:
nothing that could end a quoted string or start an expansion gets through.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from mltp.errors import ConfigError

TEMPLATE = Path(__file__).resolve().parents[2] / "deployments" / "ec2" / "bootstrap.sh"
USER_DATA_LIMIT = 16 * 1024  # bytes, EC2's limit on the raw user-data, before base64

_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9._/=+@,-]{0,1024}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_EXPORT = re.compile(r"^export (MLTP_JOB_URI|MLTP_TRAINER_WHEEL_URI)='([^']*)'$", re.MULTILINE)


def render_user_data(
    *,
    job_uri: str,
    output_prefix: str,
    wheel_uri: str | None,
    requirements_uri: str | None,
    max_runtime_minutes: int,
    region: str,
) -> str:
    """The boot script of an instance that runs `job_uri` and then terminates.

    `wheel_uri` and `requirements_uri` come from `publish_trainer_code`; both None means the AMI has the
    trainer preinstalled in /opt/mltp.
    """
    _check_s3_uri("job_uri", job_uri, object_key=True)
    _check_s3_uri("output_prefix", output_prefix, object_key=False)
    if (wheel_uri is None) != (requirements_uri is None):
        raise ConfigError(
            "wheel_uri and requirements_uri go together: pass both, or neither for an AMI "
            "with the trainer preinstalled"
        )
    if wheel_uri is not None and requirements_uri is not None:
        _check_s3_uri("wheel_uri", wheel_uri, object_key=True)
        if not wheel_uri.endswith(".whl"):
            raise ConfigError(f"wheel_uri {wheel_uri} does not name a .whl file")
        _check_s3_uri("requirements_uri", requirements_uri, object_key=True)
    if not _REGION.fullmatch(region):
        raise ConfigError(f"region {region!r} is not an AWS region name such as us-east-1")
    if not 1 <= max_runtime_minutes <= 10080:
        raise ConfigError(f"max_runtime_minutes={max_runtime_minutes}: use 1 to 10080 (one week)")
    if not TEMPLATE.is_file():
        raise ConfigError(f"{TEMPLATE} not found: render user-data from a source checkout of mltp")
    script = Template(TEMPLATE.read_text()).substitute(
        job_uri=job_uri,
        output_prefix=output_prefix,
        wheel_uri=wheel_uri or "",
        requirements_uri=requirements_uri or "",
        max_runtime_minutes=max_runtime_minutes,
        region=region,
    )
    size = len(script.encode())
    if size > USER_DATA_LIMIT:
        raise ConfigError(
            f"user-data is {size} bytes, over EC2's limit of {USER_DATA_LIMIT}: shorten the URIs"
        )
    return script


def parse_user_data(text: str) -> dict[str, str | None]:
    """The job and wheel URIs from rendered user-data; None for a line that is missing or empty (an empty
    wheel URI means the trainer is preinstalled)."""
    found = {name: value or None for name, value in _EXPORT.findall(text)}
    return {"job_uri": found.get("MLTP_JOB_URI"), "wheel_uri": found.get("MLTP_TRAINER_WHEEL_URI")}


def _check_s3_uri(name: str, uri: str, *, object_key: bool) -> None:
    if not _S3_URI.fullmatch(uri):
        raise ConfigError(
            f"{name} {uri!r} is not a plain s3:// URI: use a lower-case bucket and a key of letters, digits "
            "and ._/=+@,- only (no quotes, spaces or $)"
        )
    if object_key and uri.endswith("/"):
        raise ConfigError(f"{name} {uri} names a folder: it must name an object")
    if not object_key and not uri.endswith("/"):
        raise ConfigError(f"{name} {uri} must end with / (a folder)")
