"""Carry out decisions: emit events at once, run the workflow in a worker thread, report how it ended.

Training never runs on the event loop: the workflow (which waits for the job) runs in a thread pool, so
Faust keeps heartbeating and rebalancing while a job runs for minutes or hours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flywheel.events import now_ms, to_millis
from flywheel_orchestrator import events
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import Decision, Defer, Launch, RunSpec, Skip, Supersede, kind_of
from flywheel_orchestrator.launchers.base import Interrupted, TrainingFailed
from flywheel_orchestrator.metrics import DECISIONS, RUN_ENDS
from flywheel_orchestrator.ports import WorkflowExecutor
from flywheel_orchestrator.taskcontext import TaskContext

log = logging.getLogger("orchestrator")
Send = Callable[[str, dict[str, Any]], Awaitable[Any]]  # (topic, record): FaustPublisher.publish


@dataclass
class Handle:
    spec: RunSpec
    started: dict[str, Any]  # the TrainingRunStarted envelope: causation of everything after it
    superseded: bool = False


class Supervisor:
    def __init__(self, orchestration: Orchestration, executor: WorkflowExecutor, context: TaskContext,
                 send: Send, hyperparameters: dict[str, str], max_workers: int = 16) -> None:
        self.orchestration, self.executor, self.context = orchestration, executor, context
        self.launcher = context.launcher
        self.send, self.hyperparameters = send, hyperparameters
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="workflow")
        self.handles: dict[str, Handle] = {}
        self.tasks: set[asyncio.Task] = set()

    async def carry_out(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            DECISIONS.labels(type(decision).__name__.lower(), kind_of(decision).value).inc()
            if isinstance(decision, Supersede):
                await self._supersede(decision)
            elif isinstance(decision, Launch):
                await self._launch(decision)
            elif isinstance(decision, Skip):
                log.info("skip: %s", decision.reason, extra={"decision": "skip", "model_id": decision.model_id,
                         "trigger": decision.kind.value, "trigger_event_id": decision.trigger_event_id,
                         "reason": decision.reason, **{f"input_{k}": v for k, v in decision.inputs.items()}})
            elif isinstance(decision, Defer):
                log.info("defer: %s", decision.reason, extra={"decision": "defer", "model_id": decision.model_id,
                         "trigger": decision.kind.value, "trigger_event_id": decision.trigger_event_id,
                         "reason": decision.reason, "until_ms": decision.until_ms})

    async def _launch(self, decision: Launch) -> None:
        spec = decision.spec
        record = events.run_started(spec, decision.trigger.causation, self.launcher.name, self.hyperparameters)
        await self.send("training.run-started", record)  # before the long work
        log.info("launch %s", spec.run_id, extra={"decision": "launch", "run_id": spec.run_id,
                 "model_id": spec.model_id, "dataset_version_id": spec.dataset_version_id,
                 "trigger": spec.kind.value, "trigger_event_id": spec.trigger_event_id,
                 "correlation_id": spec.correlation_id, "policy": self.orchestration.policy(spec.model_id).model_dump_json()})
        self.resume(spec, record["envelope"])

    def resume(self, spec: RunSpec, started: dict[str, Any]) -> None:
        """Run (or, after a restart, re-attach to) the workflow of a started run."""
        handle = self.handles[spec.run_id] = Handle(spec, started)
        task = asyncio.ensure_future(self._run(handle))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _supersede(self, decision: Supersede) -> None:
        stale = decision.stale
        handle = self.handles.get(stale.run_id)
        if handle is not None:
            handle.superseded = True
        causation = handle.started if handle else {"event_id": stale.trigger_event_id,
                                                     "correlation_id": stale.correlation_id}
        await self.send("training.run-superseded", events.run_superseded(stale, decision.by, causation))
        log.info("supersede %s by %s", stale.run_id, decision.by.run_id, extra={
            "decision": "supersede", "run_id": stale.run_id, "model_id": stale.model_id,
            "superseded_by_run_id": decision.by.run_id, "dataset_version_id": stale.dataset_version_id,
            "superseded_by_dataset_version_id": decision.by.dataset_version_id})
        await asyncio.get_running_loop().run_in_executor(self.pool, self.launcher.stop, stale.job_name)

    async def _run(self, handle: Handle) -> None:
        spec, loop = handle.spec, asyncio.get_running_loop()
        self.context.log_lines[spec.run_id] = lambda line: log.info(line, extra={
            "run_id": spec.run_id, "model_id": spec.model_id, "source": "training"})
        try:
            result = await loop.run_in_executor(self.pool, self.executor.execute, spec, self.hyperparameters)
        except Exception as exc:  # the workflow's failure is the run's failure; the service goes on
            if find(exc, Interrupted) is not None:
                log.info("left run %s running at shutdown", spec.run_id, extra={"run_id": spec.run_id})
                return
            if not handle.superseded:
                await self._failed(handle, failure_reason(exc))
        else:
            if not handle.superseded:
                await self._succeeded(handle, as_dict(result))
        finally:
            self.context.log_lines.pop(spec.run_id, None)
            self.handles.pop(spec.run_id, None)
            await self.carry_out(self.orchestration.on_run_ended(spec.model_id, spec.run_id, now_ms()))

    async def _succeeded(self, handle: Handle, registration: dict[str, Any]) -> None:
        spec, duration = handle.spec, self._duration(handle)
        RUN_ENDS.labels("succeeded").inc()
        succeeded = events.run_succeeded(spec, handle.started, registration["artifact_uri"],
                                         registration["metrics"], duration)
        await self.send("training.run-succeeded", succeeded)
        await self.send("model.version-registered", events.version_registered(spec, handle.started, registration))
        log.info("run %s succeeded", spec.run_id, extra={"run_id": spec.run_id, "model_id": spec.model_id,
                 "metrics": registration["metrics"], "baseline_metrics": registration["baseline_metrics"],
                 "duration_s": round(duration, 1), "artifact_uri": registration["artifact_uri"]})

    async def _failed(self, handle: Handle, reason: str) -> None:
        spec = handle.spec
        RUN_ENDS.labels("failed").inc()
        await self.send("training.run-failed", events.run_failed(spec, handle.started, reason, self._duration(handle)))
        log.warning("run %s failed: %s", spec.run_id, reason, extra={"run_id": spec.run_id,
                    "model_id": spec.model_id, "reason": reason})

    @staticmethod
    def _duration(handle: Handle) -> float:
        return max(0.0, (now_ms() - to_millis(handle.started["occurred_at"])) / 1000)


def as_dict(result: Any) -> dict[str, Any]:
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)


def find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`kind` wherever flytekit wrapped it (as a cause, a context or a `.value`)."""
    seen: BaseException | None = exc
    while seen is not None:
        for candidate in (seen, getattr(seen, "value", None)):
            if isinstance(candidate, kind):
                return candidate
        seen = seen.__cause__ or seen.__context__
    return None


def failure_reason(exc: BaseException) -> str:
    """The TrainingFailed message if there is one; otherwise the error itself."""
    found = find(exc, TrainingFailed)
    return str(found) if found is not None else f"{type(exc).__name__}: {exc}"
