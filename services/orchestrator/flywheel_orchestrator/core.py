"""The run state machine per model: triggers in, decisions out. Pure: time is passed in, nothing is sent.

Each model's state is kept in S3 and written, fenced by an owner epoch, before any effect of a decision
(statestore.py, runs.py; docs/decisions/0009-orchestrator-scale-out.md). The same fold (`record_*`) rebuilt
it from the event log before that, and still does once, to migrate (replay.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flywheel_orchestrator import ids
from flywheel_orchestrator.domain import (
    DatasetRef,
    Decision,
    Defer,
    Launch,
    RunSpec,
    Skip,
    Supersede,
    Trigger,
)
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.trainingdata import choose, is_feedback, remember


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class OrderedIds(dict):
    """A set of ids that remembers the order they were added in, oldest first (a dict of id -> None), so the
    state document can drop the oldest beyond a bound (statestore.prune)."""

    def add(self, item: str) -> None:
        self.pop(item, None)
        self[item] = None


@dataclass
class ModelState:
    latest: DatasetRef | None = None
    datasets: dict[str, DatasetRef] = field(default_factory=dict)
    base: DatasetRef | None = None  # the newest non-feedback version (trainingdata.py)
    feedback: list[DatasetRef] = field(default_factory=list)  # feedback versions that arrived after it
    trained_objects: frozenset[tuple[str, str]] = frozenset()
    trained_versions: OrderedIds = field(default_factory=OrderedIds)
    in_flight: dict[str, RunSpec] = field(default_factory=dict)
    ended: OrderedIds = field(default_factory=OrderedIds)
    pending: Trigger | None = None  # debouncing NEW_DATA
    pending_due_ms: int = 0
    queued: Trigger | None = None  # waiting for a run slot
    last_launch_ms: dict[Kind, int] = field(default_factory=dict)
    attempts: Counter = field(default_factory=Counter)
    seen_triggers: OrderedIds = field(default_factory=OrderedIds)


class Orchestration:
    """All models' states; every public method returns the decisions the caller must carry out."""

    def __init__(self, default: TriggerPolicy, per_model: dict[str, TriggerPolicy] | None = None) -> None:
        self.default = default
        self.per_model = per_model or {}
        self.models: dict[str, ModelState] = {}

    def policy(self, model_id: str) -> TriggerPolicy:
        return self.per_model.get(model_id, self.default)

    def state(self, model_id: str) -> ModelState:
        return self.models.setdefault(model_id, ModelState())

    # --- triggers -------------------------------------------------------------------------------------
    def on_trigger(self, trigger: Trigger, now_ms: int) -> list[Decision]:
        st, policy = self.state(trigger.model_id), self.policy(trigger.model_id)
        if trigger.event_id in st.seen_triggers:
            return [self._skip(trigger, "duplicate: this trigger event already launched a run")]
        if trigger.dataset is not None:
            self.record_dataset(trigger.dataset)
        if trigger.kind not in policy.enabled_triggers:
            return [self._skip(trigger, f"trigger {trigger.kind} is disabled for this model",
                               enabled=sorted(policy.enabled_triggers))]
        if trigger.kind is Kind.NEW_DATA:
            return self._new_data(trigger, policy, now_ms)
        return self._retrain(trigger, policy, now_ms)

    def on_tick(self, now_ms: int, model_id: str | None = None) -> list[Decision]:
        """Launch debounced versions whose window has passed (of one model, or of all)."""
        out: list[Decision] = []
        states = [self.state(model_id)] if model_id is not None else list(self.models.values())
        for st in states:
            if st.pending is not None and st.pending_due_ms <= now_ms:
                trigger, st.pending = st.pending, None
                out += self._admit_new_data(trigger, self.policy(trigger.model_id), now_ms)
        return out

    def on_run_ended(self, model_id: str, run_id: str, now_ms: int) -> list[Decision]:
        """A run succeeded, failed or was stopped: free its slot and launch what waited for it."""
        st = self.state(model_id)
        self.record_ended(model_id, run_id)
        if st.queued is None or len(st.in_flight) >= self.policy(model_id).max_concurrent_runs:
            return []
        trigger, st.queued = st.queued, None
        return self.on_trigger(trigger, now_ms)

    def _new_data(self, trigger: Trigger, policy: TriggerPolicy, now_ms: int) -> list[Decision]:
        if policy.debounce_s <= 0:
            return self._admit_new_data(trigger, policy, now_ms)
        st, out = self.state(trigger.model_id), []
        if st.pending is not None and st.pending.event_id != trigger.event_id:
            out.append(self._skip(st.pending, f"debounced: replaced by newer version {trigger.dataset.dataset_version_id}"))
        st.pending, st.pending_due_ms = trigger, now_ms + int(policy.debounce_s * 1000)
        return out + [Defer(trigger.model_id, trigger.kind, trigger.event_id,
                            f"debounce {policy.debounce_s}s for a newer version", st.pending_due_ms)]

    def _admit_new_data(self, trigger: Trigger, policy: TriggerPolicy, now_ms: int) -> list[Decision]:
        st, dataset = self.state(trigger.model_id), trigger.dataset
        if dataset.dataset_version_id in st.trained_versions:
            return [self._skip(trigger, f"dataset version {dataset.dataset_version_id} was already trained")]
        new_rows = sum(rows for key, etag, rows in dataset.objects if (key, etag) not in st.trained_objects)
        if new_rows < policy.min_new_rows:
            return [self._skip(trigger, f"{new_rows} new rows since the last run, below min_new_rows",
                               new_rows=new_rows, min_new_rows=policy.min_new_rows)]
        # Attempt 1 unless an earlier era burnt that run id (statestore claims: a job name is never reused).
        attempt = st.attempts[(dataset.dataset_version_id, trigger.kind)] + 1
        return self._admit(trigger, dataset, attempt, policy, now_ms)

    def _retrain(self, trigger: Trigger, policy: TriggerPolicy, now_ms: int) -> list[Decision]:
        st = self.state(trigger.model_id)
        if st.latest is None:
            return [self._skip(trigger, "no dataset version is known for this model")]
        last = st.last_launch_ms.get(trigger.kind)
        if trigger.kind in policy.cooldown_triggers and last is not None and now_ms < last + policy.cooldown_s * 1000:
            until = last + int(policy.cooldown_s * 1000)
            return [self._skip(trigger, f"cooldown until {iso(until)}", last_launch=iso(last),
                               cooldown_s=policy.cooldown_s)]
        covering = [r.run_id for r in st.in_flight.values() if r.dataset_version_id == st.latest.dataset_version_id]
        if covering:
            return [self._skip(trigger, f"covered by in-flight run {covering[0]} on the latest dataset version")]
        attempt = st.attempts[(st.latest.dataset_version_id, trigger.kind)] + 1
        return self._admit(trigger, st.latest, attempt, policy, now_ms)

    def _admit(self, trigger: Trigger, dataset: DatasetRef, attempt: int, policy: TriggerPolicy,
               now_ms: int) -> list[Decision]:
        st = self.state(trigger.model_id)
        chosen = choose(policy.training_data, dataset, st.base, st.feedback, now_ms)
        spec = make_spec(trigger, dataset, attempt, chosen)
        # A feedback version never supersedes: the next run trains on it together with everything the running
        # one has (the window), so it queues instead; stopping runs for it would starve a model whose feedback
        # arrives faster than it trains (docs/decisions/0012-retrain-data-policy.md).
        stale = [r for r in st.in_flight.values() if r.dataset_version_id != dataset.dataset_version_id] \
            if policy.supersede and trigger.kind is Kind.NEW_DATA and not is_feedback(dataset) else []
        if len(st.in_flight) - len(stale) >= policy.max_concurrent_runs:
            return self._queue(trigger, st, policy)
        out: list[Decision] = []
        for run in stale:
            self.record_ended(run.model_id, run.run_id)
            out.append(Supersede(run, spec))
        self.record_started(spec, now_ms)
        return out + [Launch(spec, trigger)]

    def _queue(self, trigger: Trigger, st: ModelState, policy: TriggerPolicy) -> list[Decision]:
        out: list[Decision] = []
        if st.queued is not None and st.queued.event_id != trigger.event_id:
            out.append(self._skip(st.queued, f"coalesced into newer trigger {trigger.event_id}"))
        st.queued = trigger
        return out + [Defer(trigger.model_id, trigger.kind, trigger.event_id,
                            f"queued: {len(st.in_flight)} run(s) in flight, max_concurrent_runs="
                            f"{policy.max_concurrent_runs}")]

    @staticmethod
    def _skip(trigger: Trigger, reason: str, **inputs: object) -> Skip:
        return Skip(trigger.model_id, trigger.kind, trigger.event_id, reason, inputs)

    # --- the fold shared by decisions and event-log replay ----------------------------------------------
    def record_dataset(self, dataset: DatasetRef) -> None:
        st = self.state(dataset.model_id)
        st.datasets[dataset.dataset_version_id] = dataset
        st.latest = dataset
        st.base, st.feedback = remember(st.base, st.feedback, dataset)

    def record_started(self, spec: RunSpec, now_ms: int) -> None:
        st = self.state(spec.model_id)
        if spec.run_id in st.ended:
            return  # replay: the end came first in the merged log
        st.in_flight[spec.run_id] = spec
        st.seen_triggers.add(spec.trigger_event_id)
        st.attempts[(spec.dataset_version_id, spec.kind)] += 1
        st.last_launch_ms[spec.kind] = max(now_ms, st.last_launch_ms.get(spec.kind, 0))
        st.trained_versions.add(spec.dataset_version_id)
        chosen = [st.datasets[v] for v in spec.training_version_ids if v in st.datasets]
        if chosen:
            st.trained_objects = frozenset((key, etag) for d in chosen for key, etag, _ in d.objects)

    def burn_attempt(self, model_id: str, dataset_version_id: str, kind: Kind) -> None:
        """The next run id for (dataset version, kind) is taken (claimed in another era): skip it."""
        self.state(model_id).attempts[(dataset_version_id, kind)] += 1

    def record_ended(self, model_id: str, run_id: str) -> None:
        st = self.state(model_id)
        st.in_flight.pop(run_id, None)
        st.ended.add(run_id)


def make_spec(trigger: Trigger, dataset: DatasetRef, attempt: int,
              chosen: tuple[DatasetRef, ...] = ()) -> RunSpec:
    """The run on `dataset` (its id names the run), training on `chosen` (default: `dataset` alone)."""
    return RunSpec(
        run_id=ids.run_id(trigger.model_id, dataset.dataset_version_id, trigger.kind.value, attempt),
        model_id=trigger.model_id, dataset_version_id=dataset.dataset_version_id, kind=trigger.kind,
        manifest_uri=dataset.manifest_uri, trigger_event_id=trigger.event_id,
        correlation_id=trigger.causation.get("correlation_id") or trigger.event_id,
        data_landed_at_ms=dataset.landed_at_ms, lineage=dict(trigger.evidence),
        training_data=tuple((d.dataset_version_id, d.manifest_uri) for d in chosen or (dataset,)))
