"""The orchestrator's ports: what the run supervisor and the workflow depend on, as Protocols.

- `WorkflowExecutor`: runs the training workflow for a run to its end (`executors.py`: in this process, or
  the registered launch plan on a Flyte cluster).
- `Launcher`: starts, polls and stops a training job (`launchers/`: local subprocess or SageMaker). It is
  defined in `launchers/base.py` beside the job vocabulary it speaks (JobRequest, JobStatus, JobState).
"""

from __future__ import annotations

from typing import Any, Protocol

from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.launchers.base import Launcher

__all__ = ["Launcher", "WorkflowExecutor"]


class WorkflowExecutor(Protocol):
    def execute(self, spec: RunSpec, hyperparameters: dict[str, str]) -> Any:
        """Run the workflow for `spec` to its end (blocking: call it from a worker thread)."""
