"""`python -m benchmarks.ingest_profile ENDPOINT BUCKET FILE NAME MOTO_PID [--threads]`: `benchmarks.child`'s
ingest, plus where its time went: for each step of the ingest its wall time, this process's CPU-seconds
(every thread), the moto server's and every other process's (the machine's busy time less both, so a
run disturbed by other work shows); with `--threads` also the CPU-seconds of each of its threads.

The steps are marked by wrapping the functions that end them. The threads' CPU is sampled from /proc
every 100 ms (a finished thread keeps its last sample), so the sampler's own CPU is listed too.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from benchmarks import child
from mltp import datasets, s3_multipart

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.1
STEPS = ("pre-pass", "stream", "complete", "publish")  # each ends where the next begins
THREAD_GROUPS = {  # Python thread name (prefix) -> what the thread does in an ingest
    "MainThread": "main: pre-pass SHA-256, profiler, S3 requests around the upload",
    "csv-parser": "csv-parser: Arrow's CSV reader parsing the next batch",
    "ingest-reader": "ingest-reader: reads the file once, SHA-256, hands parts to the upload",
    "s3-part": "s3-part (upload threads): UploadPart requests (botocore: payload SHA-256 over http, CRC32)",
    "cpu-sampler": "this profile's own sampler",
}
OTHER_THREADS = "Arrow's own threads: reading the stream"


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds_of(stat_path: str) -> float | None:
    try:
        with open(stat_path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # the thread ended
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU-seconds all cores have been busy since boot (not idle, not waiting for I/O)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class ThreadCpu:
    """CPU-seconds of each thread of this process from `start()` on, by group."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @staticmethod
    def _threads() -> list[int]:
        return [int(tid) for tid in os.listdir("/proc/self/task")]

    def start(self) -> None:
        self._first = {tid: cpu_seconds_of(f"/proc/self/task/{tid}/stat") or 0.0 for tid in self._threads()}
        self._thread.start()

    def _sample(self) -> None:
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        for tid in self._threads():
            seconds = cpu_seconds_of(f"/proc/self/task/{tid}/stat")
            if seconds is not None:
                name = names.get(tid, "")
                group = next(
                    (label for prefix, label in THREAD_GROUPS.items() if name.startswith(prefix)), None
                )
                self._last[tid] = (group or OTHER_THREADS, seconds)

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._sample()
        self._stopping.set()
        self._thread.join()
        groups: dict[str, float] = {}
        for tid, (group, seconds) in self._last.items():
            groups[group] = groups.get(group, 0.0) + seconds - self._first.get(tid, 0.0)
        return groups


class Steps:
    """Wall clock, this process's CPU and moto's CPU where each step of the ingest ends, by wrapping the
    functions that end them."""

    def __init__(self, moto_pid: int) -> None:
        self.moto_stat = f"/proc/{moto_pid}/stat"
        self.marks: dict[str, tuple[float, float, float, float]] = {}
        self.readers: list[datasets.ReadAhead] = []

    def _mark(self, label: str) -> None:
        moto = cpu_seconds_of(self.moto_stat) or 0.0
        self.marks[label] = (time.perf_counter(), own_cpu_seconds(), moto, machine_busy_seconds())

    def wrap(self, owner: Any, name: str, label: str, before: bool = False) -> None:
        original = getattr(owner, name)

        def marked(*args, **kwargs):
            if before:
                self._mark(label)
            result = original(*args, **kwargs)
            if not before:
                self._mark(label)
            return result

        setattr(owner, name, marked)

    def install(self) -> None:
        self.wrap(datasets, "ingest", "start", before=True)
        self.wrap(datasets, "_sha256_of", "pre-pass")
        self.wrap(s3_multipart.MultipartUpload, "complete", "stream", before=True)
        self.wrap(s3_multipart.MultipartUpload, "complete", "complete")
        self.wrap(datasets, "_publish", "publish")
        readers = self.readers

        class RecordedReadAhead(datasets.ReadAhead):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                readers.append(self)

        datasets.ReadAhead = RecordedReadAhead

    def report(self) -> dict[str, dict[str, float]]:
        """Per step: wall seconds, and the CPU-seconds of this process, of moto and of all others."""
        steps = {}
        for previous, step in itertools.pairwise(("start", *STEPS)):
            wall, own, moto, busy = (
                end - start for end, start in zip(self.marks[step], self.marks[previous], strict=True)
            )
            steps[step] = {
                "wall": wall,
                "cpu": own,
                "moto_cpu": moto,
                "other_cpu": max(0.0, busy - own - moto),
            }
        return steps


def main(endpoint: str, bucket: str, path: str, name: str, moto_pid: str, *flags: str) -> dict[str, Any]:
    steps, threads = Steps(int(moto_pid)), ThreadCpu()
    steps.install()
    if "--threads" in flags:
        threads.start()
    result = child.ours(endpoint, bucket, path, name)
    result["steps"] = steps.report()
    result["upload_waited_for_parser_seconds"] = steps.readers[0].seconds_waiting_on_consumer
    if "--threads" in flags:
        result["thread_cpu_seconds"] = threads.stop()
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
