"""Carry out decisions for the models this worker owns: state first (fenced), then effects, then workflows.

Every step for a model runs under that model's lock and follows one order (docs/decisions/0009):

1. the pure decision (core.py) on the model's state, loaded from S3 when the worker took the model;
2. before a run's first effect its id is claimed once in S3 (`runs/<run_id>.json`), so a job name is never
   used by two decisions;
3. the new state and the effects it implies (events with ids derived from the run, job stops, promotion
   decisions) are written to the model's state document in one put conditional on the ETag this worker
   last wrote: a worker whose epoch another replaced writes nothing more and lets the model go;
4. the effects are done in order and each is removed from the document once done (an outbox);
5. a run whose TrainingRunStarted is out gets its workflow.

Training never runs on the event loop: the workflow (which waits for the job) runs in a thread pool, so
Faust keeps heartbeating and rebalancing while a job runs for minutes or hours; state writes and job stops
use their own small pool, never queued behind the workflow threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flywheel.events import now_ms, to_millis
from flywheel.health import loading
from flywheel_orchestrator import events, ids
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import Decision, Defer, Launch, RunSpec, Skip, Supersede, Trigger, kind_of
from flywheel_orchestrator.launchers.base import Interrupted, TrainingFailed, job_links
from flywheel_orchestrator.metrics import DECISIONS, OWNED_MODELS, RUN_ENDS, STATE_WRITES, record_run_cost
from flywheel_orchestrator.ownership import Ownership
from flywheel_orchestrator.ports import WorkflowExecutor
from flywheel_orchestrator.promotions import Promotions
from flywheel_orchestrator.statestore import (
    Snapshot,
    StateStore,
    same_content,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)
from flywheel_orchestrator.taskcontext import TaskContext

log = logging.getLogger("orchestrator")
Send = Callable[..., Awaitable[Any]]  # (topic, record, acked=...): FaustPublisher.publish
MAX_NAME_COLLISIONS = 8


class Fenced(Exception):
    """Another worker wrote the model's state after this one: this worker no longer owns the model."""


class RunNameTaken(Exception):
    """A run id was claimed before by another decision (an earlier era whose state is gone)."""

    def __init__(self, spec: RunSpec) -> None:
        super().__init__(spec.run_id)
        self.spec = spec


@dataclass
class Handle:
    spec: RunSpec
    started: dict[str, Any]  # the TrainingRunStarted envelope: causation of everything after it
    superseded: bool = False
    released: bool = False  # the model went to another worker (or this one stops): report nothing


@dataclass
class Lease:
    """A model this worker owns: its snapshot and the ETag of the document version this worker wrote last."""

    snapshot: Snapshot
    etag: str | None  # None: no document yet (the first write creates it)
    written: dict[str, Any]
    taken: bool = True  # False: loaded for a trigger; the new epoch goes out with the first change (_save)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Supervisor:
    def __init__(self, orchestration: Orchestration, executor: WorkflowExecutor, context: TaskContext,
                 send: Send, hyperparameters: dict[str, str], *, store: StateStore, ownership: Ownership,
                 max_workers: int = 16, promotions: Promotions | None = None, worker_id: str | None = None) -> None:
        self.orchestration, self.executor, self.context = orchestration, executor, context
        self.store, self.ownership, self.promotions = store, ownership, promotions
        self.launcher = context.launcher
        self.send, self.hyperparameters = send, hyperparameters
        self.worker_id = worker_id or default_worker_id()
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="workflow")
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="orchestrator-io")
        self.leases: dict[str, Lease] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.handles: dict[str, Handle] = {}
        self.tasks: set[asyncio.Task] = set()
        self.dirty: set[str] = set()  # models to reload from S3 (a step failed half-way)
        self.stopping = False
        self.migrated = asyncio.Event()  # state documents exist (or were migrated from the event log)

    # --- ownership ----------------------------------------------------------------------------------------
    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def acquire(self, model_id: str, take: bool = True) -> Lease | None:
        """The model's lease, taking the model (load its state, write epoch + 1) on first touch; None when
        this worker does not own the model's partition or is stopping.

        `take=False` (a trigger): load only; epoch + 1 is written by the step's own state write, conditional on
        the ETag read, so a decision costs one round trip less and a step that changes nothing writes nothing.
        The fence is the same: nothing is sent and no workflow starts before a conditional state write succeeded."""
        if self.stopping or not self.ownership.owns(model_id):
            return None
        lease = self.leases.get(model_id)
        if lease is not None:
            return lease
        doc, etag = await self._io(self.store.load, model_id)
        snapshot = Snapshot.from_dict(doc) if doc else Snapshot(model_id)
        previous = (snapshot.owner, snapshot.epoch)
        snapshot.epoch, snapshot.owner = snapshot.epoch + 1, self.worker_id
        if not take:
            self.orchestration.models[model_id] = snapshot.state
            lease = self.leases[model_id] = Lease(snapshot, etag, doc or {}, taken=False)
            OWNED_MODELS.set(len(self.leases))
            return lease
        body = snapshot.to_dict(now_ms())
        new_etag = await self._io(self.store.save, model_id, body, etag)
        STATE_WRITES.labels("took" if new_etag else "fenced").inc()
        if new_etag is None:
            raise Fenced(f"{model_id}: another worker wrote its state while this one was taking it")
        self.orchestration.models[model_id] = snapshot.state
        lease = self.leases[model_id] = Lease(snapshot, new_etag, body)
        OWNED_MODELS.set(len(self.leases))
        log.info("took model %s at epoch %d", model_id, snapshot.epoch, extra={
            "model_id": model_id, "epoch": snapshot.epoch, "previous_owner": previous[0],
            "previous_epoch": previous[1], "in_flight": sorted(snapshot.state.in_flight),
            "outbox": len(snapshot.outbox)})
        return lease

    def release(self, model_id: str, reason: str) -> None:
        """Stop deciding for the model: forget its state, stop waiting for its runs (their jobs go on and its
        new owner re-attaches to them), report nothing more about them."""
        lease = self.leases.pop(model_id, None)
        self.orchestration.models.pop(model_id, None)
        self.dirty.discard(model_id)
        for handle in [h for h in self.handles.values() if h.spec.model_id == model_id]:
            handle.released = True
            self.context.release(handle.spec.run_id)
        OWNED_MODELS.set(len(self.leases))
        if lease is not None:
            log.info("let go of model %s: %s", model_id, reason, extra={
                "model_id": model_id, "epoch": lease.snapshot.epoch, "reason": reason})

    def _forget(self, model_id: str) -> None:
        """A step failed half-way: memory may hold what was never written. Reload from S3 on the next touch
        (this worker's own workflows stay: they belong to the same owner)."""
        self.leases.pop(model_id, None)
        self.orchestration.models.pop(model_id, None)
        self.dirty.add(model_id)

    async def on_revoked(self) -> None:
        """Rebalance started: decide nothing until the assignment; wait for steps already running to end."""
        self.ownership.revoke()
        for lock in list(self.locks.values()):
            async with lock:
                pass

    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        owned = self.ownership.assign(assigned)
        for model_id in list(self.leases):
            if not self.ownership.owns(model_id):
                self.release(model_id, "its partition is assigned to another worker")
        for handle in list(self.handles.values()):
            if not self.ownership.owns(handle.spec.model_id):
                handle.released = True
                self.context.release(handle.spec.run_id)
        log.info("assigned partitions %s", sorted(owned), extra={"partitions": sorted(owned),
                 "models": sorted(self.leases)})
        self._spawn(self.load_owned(self.ownership.generation))

    def own_all(self) -> None:
        """Without a consumer group (tests): this worker owns every model."""
        self.ownership.own_all()

    async def load_owned(self, generation: int) -> None:
        """Take every model with a state document on an owned partition: resume its runs, finish its outbox,
        keep its debounced and queued triggers."""
        with loading("orchestrator-state"):
            await self.migrated.wait()
            try:
                models = await self._io(self.store.models)
            except Exception:
                log.exception("could not list the orchestrator's state documents")
                return
            for model_id in models:
                if self.ownership.generation != generation or self.stopping:
                    return
                if self.ownership.owns(model_id) and model_id not in self.leases:
                    await self.guarded(model_id, self._flush_step)

    # --- steps --------------------------------------------------------------------------------------------
    async def with_model(self, model_id: str, step: Callable[[Lease], Awaitable[None]], *,
                         retake: bool = True, take: bool = True) -> bool:
        """Run `step` under the model's lock with its lease; False when this worker does not own the model.
        A worker fenced out lets the model go and (with `retake`, for a new trigger on a partition it still
        owns) takes it again from the state the other wrote; any other error reloads the model."""
        for attempt in (1, 2) if retake else (2,):
            async with self.locks[model_id]:
                try:
                    if not retake and model_id not in self.leases:
                        return False  # let go (or to be reloaded): not this step's to take back
                    lease = await self.acquire(model_id, take)
                    if lease is None:
                        return False
                    await step(lease)
                    self.dirty.discard(model_id)
                    return True
                except Fenced as exc:
                    self.release(model_id, f"fenced: {exc}")
                    if attempt == 2:
                        return False
                except BaseException:
                    self._forget(model_id)
                    raise
        return False

    async def guarded(self, model_id: str, step: Callable[[Lease], Awaitable[None]], *, retake: bool = True) -> bool:
        """`with_model` for timers and workflow ends: errors are logged, and the model reloads later."""
        try:
            return await self.with_model(model_id, step, retake=retake)
        except Exception:
            log.exception("step for model %s failed; its state will be reloaded", model_id,
                          extra={"model_id": model_id})
            return False

    async def on_trigger(self, trigger: Trigger) -> bool:
        """Decide on a trigger; False when the model is not this worker's. Raises when the step failed (the
        caller retries the same record; the model's state is reloaded from S3 first)."""
        async def step(lease: Lease) -> None:
            await self._decide(lease, lambda: self.orchestration.on_trigger(trigger, now_ms()))
        return await self.with_model(trigger.model_id, step, take=False)

    async def tick(self) -> None:
        """Debounced versions whose window passed; outboxes left half-done; models to reload."""
        if self.stopping:
            return
        now = now_ms()
        for model_id, lease in list(self.leases.items()):
            st = lease.snapshot.state
            if st.pending is not None and st.pending_due_ms <= now:
                async def step(lease: Lease, model_id: str = model_id) -> None:
                    await self._decide(lease, lambda: self.orchestration.on_tick(now_ms(), model_id))
                await self.guarded(model_id, step)
            elif lease.snapshot.outbox:
                await self.guarded(model_id, self._flush_step)
        for model_id in list(self.dirty):
            await self.guarded(model_id, self._flush_step)

    async def _flush_step(self, lease: Lease) -> None:
        await self._flush(lease)

    async def _decide(self, lease: Lease, decide: Callable[[], list[Decision]],
                      outbox: list[dict[str, Any]] | None = None) -> None:
        """Decide, claim the new runs' ids, write state + effects (fenced), then carry the effects out.

        A run id claimed in another era is skipped: the state is put back as it was, the attempt counted,
        and the decision taken again, so a job name is never reused."""
        snap = lease.snapshot
        before = (state_to_dict(snap.state), list(snap.outbox), dict(snap.started))
        for _ in range(MAX_NAME_COLLISIONS):
            try:
                snap.outbox.extend(outbox or [])
                await self._record(lease, decide())
                break
            except RunNameTaken as taken:
                snap.state = state_from_dict(before[0])
                snap.outbox, snap.started = list(before[1]), dict(before[2])
                self.orchestration.models[snap.model_id] = snap.state
                spec = taken.spec
                self.orchestration.burn_attempt(spec.model_id, spec.dataset_version_id, spec.kind)
                before = (state_to_dict(snap.state), before[1], before[2])
                log.warning("run id %s was claimed before by another decision; taking the next attempt",
                            spec.run_id, extra={"run_id": spec.run_id, "model_id": spec.model_id})
        else:
            raise RuntimeError(f"{MAX_NAME_COLLISIONS} run ids in a row were taken for {snap.model_id}")
        await self._save(lease)
        await self._flush(lease)

    async def _record(self, lease: Lease, decisions: list[Decision]) -> None:
        """Turn decisions into state and outbox entries (nothing is sent here)."""
        snap = lease.snapshot
        for decision in decisions:
            if isinstance(decision, Supersede):
                stale = decision.stale
                causation = snap.started.get(stale.run_id) or {"event_id": stale.trigger_event_id,
                                                               "correlation_id": stale.correlation_id}
                record = events.fixed_id(events.run_superseded(stale, decision.by, causation),
                                         stale.run_id, "superseded")
                snap.outbox += [{"kind": "event", "topic": "training.run-superseded", "record": record},
                                {"kind": "stop", "job_name": stale.job_name, "run_id": stale.run_id,
                                 "cause": f"superseded by run {decision.by.run_id}"}]
                handle = self.handles.get(stale.run_id)
                if handle is not None:
                    handle.superseded = True
            elif isinstance(decision, Launch):
                await self._record_launch(lease, decision)
        for decision in decisions:
            DECISIONS.labels(type(decision).__name__.lower(), kind_of(decision).value).inc()
            self._log(decision)

    async def _record_launch(self, lease: Lease, decision: Launch) -> None:
        snap, spec = lease.snapshot, decision.spec
        claiming = self._io(self.store.claim_run, spec, self.worker_id, snap.epoch, now_ms())
        if self.promotions is not None:  # the champion this run is compared with, read while the id is claimed
            champion, claim = await asyncio.gather(self.promotions.champion(spec.model_id), claiming)
            spec = dataclasses.replace(spec, lineage={**spec.lineage, **champion})
            snap.state.in_flight[spec.run_id] = spec
        else:
            claim = await claiming
        if claim.get("trigger_event_id") != spec.trigger_event_id:
            raise RunNameTaken(spec)
        causation = decision.trigger.causation if decision.trigger else {}
        record = events.fixed_id(events.run_started(spec, causation, self.launcher.name,
                                                    self.run_hyperparameters(spec),
                                                    self.job(spec)), spec.run_id, "started")
        snap.started[spec.run_id] = record["envelope"]
        snap.outbox.append({"kind": "event", "topic": "training.run-started", "record": record})

    async def _save(self, lease: Lease, force: bool = False) -> None:
        """Write the model's document if it changed (or `force`), conditional on the ETag last read or written."""
        snap = lease.snapshot
        body = snap.to_dict(now_ms())
        if not force and (same_content(body, lease.written) or (not lease.taken and same_content(
                {**body, "epoch": 0, "owner": ""}, {**lease.written, "epoch": 0, "owner": ""}))):
            return
        etag = await self._io(self.store.save, snap.model_id, body, lease.etag)
        STATE_WRITES.labels(("written" if lease.taken else "took") if etag else "fenced").inc()
        if etag is None:
            raise Fenced(f"{snap.model_id}: epoch {snap.epoch} was replaced by another worker")
        if not lease.taken:
            log.info("took model %s at epoch %d", snap.model_id, snap.epoch, extra={
                "model_id": snap.model_id, "epoch": snap.epoch, "previous_owner": lease.written.get("owner", ""),
                "previous_epoch": lease.written.get("epoch", 0), "in_flight": sorted(snap.state.in_flight),
                "outbox": len(snap.outbox)})
        lease.etag, lease.written, lease.taken = etag, body, True

    async def _flush(self, lease: Lease) -> None:
        """Carry out the outbox in order, removing each entry once done; then start workflows of started runs."""
        snap = lease.snapshot
        if not lease.taken and (snap.outbox or any(r not in self.handles for r in snap.state.in_flight)):
            await self._save(lease, force=True)  # effects and workflows only under a written epoch
        while snap.outbox:
            await self._effect(snap.outbox[0])
            snap.outbox.pop(0)
            await self._save(lease)
        for run_id, spec in list(snap.state.in_flight.items()):
            if run_id not in self.handles and not self.stopping:
                started = snap.started.get(run_id) or {
                    "event_id": events.fixed_id({"envelope": {}}, run_id, "started")["envelope"]["event_id"],
                    "correlation_id": spec.correlation_id, "occurred_at": now_ms()}
                log.info("resuming run %s", run_id, extra={"run_id": run_id, "model_id": spec.model_id,
                                                           "epoch": snap.epoch})
                self.resume(spec, started)

    async def _effect(self, entry: dict[str, Any]) -> None:
        kind = entry["kind"]
        if kind == "event":
            await self.send(entry["topic"], entry["record"], acked=True)
        elif kind == "stop":  # best effort: a stale job that still finishes is reported by nobody
            try:
                await self._io(self.launcher.stop, entry["job_name"])
            except Exception:
                log.exception("could not stop job %s", entry["job_name"], extra={"run_id": entry.get("run_id")})
            abort = getattr(self.executor, "abort", None)  # the run's workflow execution (Flyte remote)
            if callable(abort) and entry.get("run_id"):
                try:
                    await self._io(abort, entry["run_id"], entry.get("cause") or "superseded")
                except Exception:
                    log.exception("could not abort the workflow of run %s", entry["run_id"],
                                  extra={"run_id": entry["run_id"]})
        elif kind == "promote" and self.promotions is not None:  # logs its own failures, never raises
            await self.promotions.registered(spec_from_dict(entry["spec"]), entry["registration"],
                                             entry["causation"], entry["cause"])
        elif kind == "catch_up" and self.promotions is not None:
            spec = spec_from_dict(entry["spec"])
            await self.promotions.catch_up({spec.model_id: (spec, entry["succeeded"])})

    # --- workflows ----------------------------------------------------------------------------------------
    def job(self, spec: RunSpec, job: dict[str, str] | None = None) -> dict[str, str]:
        """What the run events link to: the launcher's job (SageMaker ARN, logs) and the workflow's execution."""
        links = getattr(self.executor, "links", None)
        return {**job_links(self.launcher, spec.job_name), **(job or {}), **(links(spec) if callable(links) else {})}

    def run_hyperparameters(self, spec: RunSpec) -> dict[str, str]:
        """The configured hyperparameters plus a seed derived from the run id (unless one is configured)."""
        return {"seed": str(ids.seed(spec.run_id)), **self.hyperparameters}

    def resume(self, spec: RunSpec, started: dict[str, Any]) -> None:
        """Run (or, after a restart or a takeover, re-attach to) the workflow of a started run."""
        handle = self.handles[spec.run_id] = Handle(spec, started)
        self._spawn(self._run(handle))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, handle: Handle) -> None:
        spec, loop = handle.spec, asyncio.get_running_loop()
        self.context.log_lines[spec.run_id] = lambda line: log.info(line, extra={
            "run_id": spec.run_id, "model_id": spec.model_id, "source": "training"})
        outcome: tuple[str, Any] | None = None
        try:
            result = await loop.run_in_executor(self.pool, self.executor.execute, spec,
                                                self.run_hyperparameters(spec))
            outcome = ("succeeded", as_dict(result))
        except Exception as exc:  # the workflow's failure is the run's failure; the service goes on
            if find(exc, Interrupted) is not None or handle.released or self.stopping:
                log.info("left run %s running (%s)", spec.run_id, "shutdown" if self.stopping else "let go",
                         extra={"run_id": spec.run_id, "model_id": spec.model_id})
            else:
                outcome = ("failed", failure_reason(exc))
        finally:
            self.context.log_lines.pop(spec.run_id, None)
        try:
            # No end is reported (and no queued trigger launched) by a worker that stops or let the model go.
            if outcome is not None and not (handle.released or handle.superseded or self.stopping):
                async def step(lease: Lease) -> None:
                    await self._ended(lease, handle, *outcome)
                # A workflow end never takes the model back: fenced out, this worker's run belongs to the other.
                # A failed step leaves the model dirty: the next tick reloads it and re-attaches to the run.
                await self.guarded(spec.model_id, step, retake=False)
        finally:
            if self.handles.get(spec.run_id) is handle:
                del self.handles[spec.run_id]
            self.context.forget(spec.run_id)
            if handle.released and not self.stopping and self.ownership.owns(spec.model_id):
                self.dirty.add(spec.model_id)  # let go, then owned again: the next tick re-attaches

    async def _ended(self, lease: Lease, handle: Handle, how: str, payload: Any) -> None:
        spec, snap = handle.spec, lease.snapshot
        if spec.run_id not in snap.state.in_flight:
            return  # superseded, or ended by another era: nothing to report
        started = snap.started.get(spec.run_id) or handle.started
        duration = max(0.0, (now_ms() - to_millis(started["occurred_at"])) / 1000)
        if how == "succeeded":
            registration = payload
            succeeded = events.fixed_id(events.run_succeeded(spec, started, registration["artifact_uri"],
                                                             registration["metrics"], duration,
                                                             self.job(spec, registration.get("job"))),
                                        spec.run_id, "succeeded")
            record_run_cost(succeeded)
            registered = events.fixed_id(events.version_registered(spec, started, registration),
                                         spec.run_id, "registered")
            outbox = [{"kind": "event", "topic": "training.run-succeeded", "record": succeeded},
                      {"kind": "event", "topic": "model.version-registered", "record": registered},
                      {"kind": "promote", "spec": spec_to_dict(spec), "registration": registration,
                       "causation": registered["envelope"], "cause": succeeded["envelope"]["event_id"]}]
            log.info("run %s succeeded", spec.run_id, extra={"run_id": spec.run_id, "model_id": spec.model_id,
                     "metrics": registration["metrics"], "baseline_metrics": registration.get("baseline_metrics"),
                     "duration_s": round(duration, 1), "artifact_uri": registration["artifact_uri"]})
        else:
            record = events.fixed_id(events.run_failed(spec, started, payload, duration, self.job(spec)),
                                     spec.run_id, "failed")
            outbox = [{"kind": "event", "topic": "training.run-failed", "record": record}]
            log.warning("run %s failed: %s", spec.run_id, payload, extra={"run_id": spec.run_id,
                        "model_id": spec.model_id, "reason": payload})
        RUN_ENDS.labels(how).inc()
        await self._decide(lease, lambda: self.orchestration.on_run_ended(spec.model_id, spec.run_id, now_ms()),
                           outbox)

    def shutdown(self) -> None:
        """SIGTERM: decide nothing more, stop waiting for jobs (they go on; the next owner re-attaches)."""
        self.stopping = True
        self.context.stop_all()

    def _log(self, decision: Decision) -> None:
        if isinstance(decision, Launch):
            spec = decision.spec
            log.info("launch %s", spec.run_id, extra={"decision": "launch", "run_id": spec.run_id,
                     "model_id": spec.model_id, "dataset_version_id": spec.dataset_version_id,
                     "training_dataset_version_ids": spec.training_version_ids,
                     "trigger": spec.kind.value, "trigger_event_id": spec.trigger_event_id,
                     "correlation_id": spec.correlation_id,
                     "policy": self.orchestration.policy(spec.model_id).model_dump_json()})
        elif isinstance(decision, Supersede):
            stale = decision.stale
            log.info("supersede %s by %s", stale.run_id, decision.by.run_id, extra={
                "decision": "supersede", "run_id": stale.run_id, "model_id": stale.model_id,
                "superseded_by_run_id": decision.by.run_id, "dataset_version_id": stale.dataset_version_id,
                "superseded_by_dataset_version_id": decision.by.dataset_version_id})
        elif isinstance(decision, Skip):
            log.info("skip: %s", decision.reason, extra={"decision": "skip", "model_id": decision.model_id,
                     "trigger": decision.kind.value, "trigger_event_id": decision.trigger_event_id,
                     "reason": decision.reason, **{f"input_{k}": v for k, v in decision.inputs.items()}})
        elif isinstance(decision, Defer):
            log.info("defer: %s", decision.reason, extra={"decision": "defer", "model_id": decision.model_id,
                     "trigger": decision.kind.value, "trigger_event_id": decision.trigger_event_id,
                     "reason": decision.reason, "until_ms": decision.until_ms})


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
