"""What the trainer tells the outside while it runs: CloudWatch metric `ML/Training` `TrainingProgress`
(0..1, dimension JobId, plus JobId+InstanceId on EC2), a `Heartbeat` metric from a background thread,
and its log lines in CloudWatch Logs (group `/mltp/training`, one stream per job)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mltp.aws import ClientFactory, error_code

NAMESPACE = "ML/Training"
LOG_GROUP = "/mltp/training"
HEARTBEAT_SECONDS = 15.0

logger = logging.getLogger("mltp.trainer")


class Telemetry(logging.Handler):
    def __init__(
        self,
        clients: ClientFactory,
        job_id: str,
        instance_id: str | None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(level=logging.INFO)
        self.cloudwatch, self.logs = clients("cloudwatch"), clients("logs")
        self.job_id, self.instance_id = job_id, instance_id
        self.value = 0.0
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ensure_stream()
        logger.setLevel(logging.INFO)  # the job's log must reach CloudWatch whatever the root logger says
        logger.addHandler(self)
        self._beat = threading.Thread(
            target=self._heartbeat, args=(heartbeat,), daemon=True, name="heartbeat"
        )
        self._beat.start()

    def _ensure_stream(self) -> None:
        for create in (
            lambda: self.logs.create_log_group(logGroupName=LOG_GROUP),
            lambda: self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.job_id),
        ):
            try:
                create()
            except ClientError as error:
                if error_code(error) != "ResourceAlreadyExistsException":
                    raise

    def _dimensions(self) -> list[list[dict[str, str]]]:
        job = [{"Name": "JobId", "Value": self.job_id}]
        return [job, [*job, {"Name": "InstanceId", "Value": self.instance_id}]] if self.instance_id else [job]

    def _put(self, name: str, value: float) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                # high resolution: the monitor reads 5-second periods to notice a lost heartbeat quickly
                {
                    "MetricName": name,
                    "Dimensions": dimensions,
                    "Value": value,
                    "Unit": "None",
                    "StorageResolution": 1,
                }
                for dimensions in self._dimensions()
            ],
        )

    def progress(self, value: float, stage: str) -> None:
        """Publish progress; it only ever rises."""
        self.value = max(self.value, min(1.0, value))
        logger.info("progress %.0f%%: %s", 100 * self.value, stage)
        self._put("TrainingProgress", self.value)

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._events.append({"timestamp": int(record.created * 1000), "message": self.format(record)})

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        for start in range(0, len(events), 1000):
            self.logs.put_log_events(
                logGroupName=LOG_GROUP, logStreamName=self.job_id, logEvents=events[start : start + 1000]
            )

    def _heartbeat(self, every: float) -> None:
        while True:  # the first beat goes out at once: the monitor's start-up wait ends with it
            try:
                self._put("Heartbeat", 1.0)
                self.flush()
            except (BotoCoreError, ClientError):  # a missed beat is what the monitor watches for
                logger.warning("heartbeat could not be published", exc_info=False)
            if self._stop.wait(every):
                return

    def close(self) -> None:
        self._stop.set()
        self._beat.join(timeout=5)
        logger.removeHandler(self)
        self.flush()
        super().close()
