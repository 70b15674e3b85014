"""What every compute backend (EC2, Lambda, local) offers the flow: launch one job attempt, observe all
of a run's attempts in a few calls, and terminate them. Chosen by the plan, never by `if sandbox`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from mltp.errors import MltpError


@dataclass(frozen=True)
class JobLaunch:
    """Everything needed to start one attempt of one job."""

    job_id: str
    run_id: str
    job_uri: str
    output_prefix: str
    flow_run_id: str
    attempt: int
    deadline: datetime
    on_demand: bool = False  # after a spot interruption the relaunch asks for on-demand capacity


@dataclass
class Launched:
    """One attempt that was started; `handle` is the instance id or the invocation's request id."""

    job_id: str
    backend: str
    attempt: int
    launched_at: datetime
    handle: str
    spot: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "launched_at": self.launched_at.isoformat(timespec="seconds")}


@dataclass(frozen=True)
class ComputeState:
    """Whether the compute running an attempt is still there, and if not, why."""

    alive: bool
    reason: str = ""
    interrupted: bool = False  # a spot interruption: relaunch on demand


class CapacityError(MltpError):
    """AWS had no capacity (or quota) for the launch: worth relaunching later, not a user error."""


class Backend(Protocol):
    name: str

    def launch(self, job: JobLaunch) -> Launched: ...

    def observe(self, launched: list[Launched]) -> dict[str, ComputeState]: ...

    def terminate(self, launched: list[Launched]) -> list[str]: ...
