"""What the workflow's tasks use (an S3 client, a launcher, the output bucket), scoped to one workflow call.

The local executor sets the context around its in-process workflow call (flytekit local execution runs the
tasks synchronously in the calling thread); a task in a Flyte pod finds none set and builds one from that
pod's FLYWHEEL_* environment (`adapters.task_context_from_env`), the one config source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from flywheel_orchestrator.launchers.base import Launcher


@dataclass
class TaskContext:
    s3: Any
    launcher: Launcher
    artifact_bucket: str
    poll_s: float = 0.5
    max_poll_s: float = 30.0
    log_lines: dict[str, Callable[[str], None]] = field(default_factory=dict)  # run_id -> service log
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown: waits return
    # Per run: set at shutdown or when this worker lets the run's model go (rebalance, fenced): its wait
    # returns (Interrupted), the job goes on and the model's new owner re-attaches to it.
    run_stops: dict[str, threading.Event] = field(default_factory=dict)

    def stop_event(self, run_id: str) -> threading.Event:
        event = self.run_stops.setdefault(run_id, threading.Event())
        if self.stopping.is_set():
            event.set()
        return event

    def release(self, run_id: str) -> None:
        self.stop_event(run_id).set()

    def stop_all(self) -> None:
        self.stopping.set()
        for event in list(self.run_stops.values()):
            event.set()

    def forget(self, run_id: str) -> None:
        self.run_stops.pop(run_id, None)


_active: ContextVar[TaskContext | None] = ContextVar("flywheel_orchestrator_task_context", default=None)


@contextmanager
def scoped(context: TaskContext) -> Iterator[TaskContext]:
    """`context` is the tasks' context for the duration of the block (in this thread/task only)."""
    token = _active.set(context)
    try:
        yield context
    finally:
        _active.reset(token)


def active() -> TaskContext | None:
    """The context set by the caller of the workflow, or None (a task running in a Flyte pod)."""
    return _active.get()
