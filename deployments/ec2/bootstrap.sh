#!/bin/bash
# User-data of one mltp training instance, rendered by mltp/compute/user_data.py (string.Template: a
# literal dollar is written doubled here). It holds no credentials: the instance profile provides them.
# The instance is launched with shutdown behaviour "terminate", so powering off ends it and its bill.
set -euo pipefail

LOG=/var/log/mltp-bootstrap.log
MLTP_OUTPUT_PREFIX='${output_prefix}'
MLTP_REQUIREMENTS_URI='${requirements_uri}'
export MLTP_JOB_URI='${job_uri}'
export MLTP_TRAINER_WHEEL_URI='${wheel_uri}'
export AWS_DEFAULT_REGION='${region}' AWS_REGION='${region}'
export PYTHONUNBUFFERED=1

finish() {
    local status=$$?
    set +e
    echo "mltp bootstrap: exit status $$status; shipping this log, then powering off" >>"$$LOG"
    timeout 300 aws s3 cp --only-show-errors --sse AES256 --region "$$AWS_REGION" \
        "$$LOG" "$${MLTP_OUTPUT_PREFIX}logs/bootstrap.log"
    shutdown -h now
}
trap finish EXIT
trap 'exit 143' TERM INT HUP
# The hard limit: a hung install or trainer cannot keep the instance alive past it.
shutdown -h +${max_runtime_minutes}

imds() {
    curl -sSf --connect-timeout 2 --retry 5 --retry-connrefused "$$@"
}

install_trainer() {
    local dist=/opt/mltp-dist
    dnf install -y python3.11 python3.11-pip
    python3.11 -m venv /opt/mltp
    mkdir -p "$$dist"
    aws s3 cp --only-show-errors --region "$$AWS_REGION" "$$MLTP_REQUIREMENTS_URI" "$$dist/requirements.txt"
    # The wheel keeps its own file name: pip reads the name and version from it.
    aws s3 cp --only-show-errors --region "$$AWS_REGION" "$$MLTP_TRAINER_WHEEL_URI" "$$dist/"
    /opt/mltp/bin/python -m pip install --disable-pip-version-check --no-input -r "$$dist/requirements.txt"
    /opt/mltp/bin/python -m pip install --disable-pip-version-check --no-input --no-deps \
        "$$dist/$${MLTP_TRAINER_WHEEL_URI##*/}"
}

main() {
    local token
    token=$$(imds -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)
    MLTP_INSTANCE_ID=$$(imds -H "X-aws-ec2-metadata-token: $$token" \
        http://169.254.169.254/latest/meta-data/instance-id)
    export MLTP_INSTANCE_ID
    echo "mltp bootstrap: instance $$MLTP_INSTANCE_ID, job $$MLTP_JOB_URI"
    if [ -n "$$MLTP_TRAINER_WHEEL_URI" ]; then
        install_trainer
    fi
    /opt/mltp/bin/python -m mltp.trainer run --job "$$MLTP_JOB_URI"
}

main 2>&1 | tee -a "$$LOG"
