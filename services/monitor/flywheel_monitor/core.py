"""The monitor's decision core: known models, windowed aggregates, rule and drift verdicts. Pure.

The handlers feed decoded records in; the core says what to emit. Windows live in a WindowStore
(ports.py), rule state in plain dicts, saved and adopted per model through `snapshot`/`install`
(statestore.py, fenced in S3) and rebuilt from the topics for models without a saved state (recovery.py). The clock that bounds event time is passed in, so tests decide what "now" is.

Nothing here grows with what producers make up: windows and rule plans exist only for metrics some rule
watches (the rest are ignored as "unwatched_metric"), rule state only for registered models and configured
rules, and the replaced versions of a model are remembered up to RETIRED_KEPT.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel.events import now_ms, to_millis
from flywheel_monitor import drift
from flywheel_monitor.ports import WindowStore
from flywheel_monitor.rules import FEATURE_PREFIX, Rule, RuleSet
from flywheel_monitor.triggers import RuleState, adopt, durable, evaluate, reset_for_new_version, restore
from flywheel_monitor.validation import DEFAULT_BOUNDS, TimeBounds, UnknownModel, check_observation
from flywheel_monitor.windows import Aggregate, observed_at_ms, window_index

RETIRED_KEPT = 32  # replaced versions remembered per model; older ones are folded like unseen versions
UNWATCHED = "unwatched_metric"  # Assessment.ignored: no rule and no drift reference uses this metric


@dataclass(frozen=True, slots=True)
class ModelInfo:
    version: str
    registered_at_ms: int
    reference: dict[str, list[float]]


@dataclass(frozen=True, slots=True)
class RetrainDecision:
    """A rule fired: everything a RetrainRequested needs as evidence (events.retrain_requested)."""

    kind: str  # TriggerKind symbol
    rule: Rule
    model_id: str
    model_version: str
    metric: str
    observed_value: float
    sample_size: int
    window_start_ms: int
    window_end_ms: int
    statistics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evaluation:
    rule: Rule
    value: float
    samples: int
    breached: bool


@dataclass(slots=True)
class Assessment:
    """What one observation changed: every rule evaluated, the retrains it asks for, or why it was ignored."""

    evaluations: list[Evaluation] = field(default_factory=list)
    triggers: list[RetrainDecision] = field(default_factory=list)
    ignored: str | None = None  # why the observation was not folded (e.g. it is about a replaced version)
    changed: bool = False  # a rule entered or left the breaching state: its durable state moved


class MonitorCore:
    def __init__(self, rules: RuleSet, store: WindowStore, *, clock: Callable[[], int] = now_ms,
                 bounds: TimeBounds = DEFAULT_BOUNDS) -> None:
        self.rules = rules
        self.store = store
        self.clock = clock  # epoch ms; bounds event time (window_end) against it
        self.bounds = bounds
        self.models: dict[str, ModelInfo] = {}
        # Versions a newer registration replaced (oldest first, at most RETIRED_KEPT): servers still on them
        # during a rollout say nothing about the new model, so their observations must not feed its windows.
        self.retired: dict[str, dict[str, None]] = defaultdict(dict)
        self.states: dict[tuple[str, str], RuleState] = defaultdict(RuleState)
        self.drift_rule = _drift_as_rule(rules.drift) if rules.drift else None
        self._rule_names = {r.name for r in rules.rules} | ({rules.drift.name} if rules.drift else set())
        # Rules by metric and window size, built once for the metrics the rule set names: a metric name no
        # rule uses never gets an entry (producers choose metric names; this map must not grow with them).
        self._plans = {metric: _plan(rules, metric) for metric in {r.metric for r in rules.rules}}

    def register(self, record: dict[str, Any]) -> bool:
        """Learn a model version; a newer version starts its rules over (streak, hysteresis) but keeps each
        rule's cooldown. True when it was new. A registration of a version already replaced, or one older
        than the current version's (a redelivery, a late copy), changes nothing: it must not wipe the state
        of the version that replaced it (docs/decisions/0015-monitor-scale-out.md)."""
        model, version = record["model_id"], record["model_version"]
        known = self.models.get(model)
        if known is not None and known.version == version:
            return False
        retired = self.retired[model]
        at = to_millis(record["envelope"]["occurred_at"])
        if known is not None and (version in retired or at < known.registered_at_ms):
            if version not in retired:
                retired[version] = None
                while len(retired) > RETIRED_KEPT:
                    del retired[next(iter(retired))]
            return False
        if known is not None:
            retired.pop(known.version, None)
            retired[known.version] = None
            while len(retired) > RETIRED_KEPT:
                del retired[next(iter(retired))]
        retired.pop(version, None)
        self.models[model] = ModelInfo(version, at, dict(record.get("reference_distribution") or {}))
        for key in [k for k in self.states if k[0] == model]:
            self.states[key] = reset_for_new_version(at, self.states[key])
        return True

    def snapshot(self, model: str) -> dict[str, Any] | None:
        """The model's durable state (statestore.py): its version, the versions it replaced and each rule's
        hysteresis and cooldown. None for a model with no registered version."""
        info = self.models.get(model)
        if info is None:
            return None
        return {"model_id": model, "version": info.version, "registered_at_ms": info.registered_at_ms,
                "reference": info.reference, "retired": list(self.retired.get(model, ())),
                "rules": {rule: durable(self.states[(model, rule)]) for rule in sorted(self._rule_names)
                          if (model, rule) in self.states}}

    def install(self, doc: dict[str, Any]) -> None:
        """Adopt a snapshot written by the worker that decided for the model last (after a restart or a
        takeover). A version registered later than the snapshot's, known here from the event log, stays."""
        model = doc["model_id"]
        known = self.models.get(model)
        retired = self.retired[model]
        for version in doc.get("retired") or ():
            retired.setdefault(version, None)
        if known is None or doc["registered_at_ms"] >= known.registered_at_ms:
            if known is not None and known.version != doc["version"]:
                retired.setdefault(known.version, None)
            retired.pop(doc["version"], None)
            self.models[model] = ModelInfo(doc["version"], int(doc["registered_at_ms"]), dict(doc.get("reference") or {}))
            for rule, saved in (doc.get("rules") or {}).items():
                if rule in self._rule_names:
                    adopt(self.states[(model, rule)], saved)
        while len(retired) > RETIRED_KEPT:
            del retired[next(iter(retired))]

    def restore_trigger(self, record: dict[str, Any]) -> None:
        """Rebuild cooldown from a RetrainRequested this service emitted before a restart."""
        known = self.models.get(record["model_id"])
        if known is None or record["rule"] not in self._rule_names:  # a rule since removed has no state
            return
        at = to_millis(record["window_end"] or record["envelope"]["occurred_at"])
        state = self.states[(record["model_id"], record["rule"])]
        if at > known.registered_at_ms:
            restore(state, at)
        elif state.last_trigger_ms is None or at > state.last_trigger_ms:  # an older version's: cooldown only
            state.last_trigger_ms = at

    def observe(self, record: dict[str, Any]) -> Assessment:
        """Fold one observation into its windows and evaluate the rules watching it."""
        check_observation(record, self.clock(), self.bounds)
        info = self.models.get(record["model_id"])
        if info is None:
            raise UnknownModel(f"model {record['model_id']!r} has no registered version")
        if record["model_version"] in self.retired[record["model_id"]]:
            return Assessment(ignored="replaced_version")
        metric = record["metric"]
        plan = self._plans.get(metric)
        drifting = (self.drift_rule is not None and metric.startswith(FEATURE_PREFIX)
                    and metric[len(FEATURE_PREFIX):] in info.reference)
        if plan is None and not drifting:
            return Assessment(ignored=UNWATCHED)
        assessment = Assessment()
        at = observed_at_ms(record)
        if plan is not None:
            key = f"{record['model_id']}|{metric}"
            for window_ms, rules in plan.items():
                aggregate = self._fold(key, window_ms, at, record)
                for rule in rules:
                    self._evaluate(rule, record, info, aggregate, at, assessment)
        if drifting:
            self._check_drift(record, info, at, assessment)
        return assessment

    def _fold(self, key: str, window_ms: int, at: int, record: dict[str, Any]) -> Aggregate:
        aggregate = self.store.get(key, window_ms, at) or Aggregate()
        aggregate.add(record)
        self.store.put(key, window_ms, at, aggregate)
        return aggregate

    def _evaluate(self, rule: Rule, record: dict[str, Any], info: ModelInfo, aggregate: Aggregate,
                  at: int, assessment: Assessment) -> None:
        value = aggregate.value(rule.aggregation, rule.window_s)
        window = window_index(at, rule.window_ms)
        state = self.states[(record["model_id"], rule.name)]
        breaching = state.breaching
        verdict = evaluate(state, rule, window, value, aggregate.count, at)
        if state.breaching is not breaching:
            assessment.changed = True
        assessment.evaluations.append(Evaluation(rule, value, aggregate.count, verdict.breached))
        if verdict.fire:
            assessment.triggers.append(RetrainDecision(
                "METRIC_BREACH", rule, record["model_id"], info.version, rule.metric, value, aggregate.count,
                window * rule.window_ms, (window + 1) * rule.window_ms,
                {"mean": aggregate.mean, "min": aggregate.low, "max": aggregate.high,
                 "stddev": aggregate.stddev, "count": float(aggregate.count)}))

    def _check_drift(self, record: dict[str, Any], info: ModelInfo, at: int, assessment: Assessment) -> None:
        rule, feature = self.drift_rule, record["metric"][len(FEATURE_PREFIX):]
        if feature not in info.reference:
            return
        self._fold(f"{record['model_id']}|{record['metric']}", rule.window_ms, at, record)
        live = {}
        for name in info.reference:
            aggregate = self.store.get(f"{record['model_id']}|{FEATURE_PREFIX}{name}", rule.window_ms, at)
            if aggregate is not None and aggregate.buckets is not None:
                live[name] = aggregate.buckets
        report = drift.assess(info.reference, live, self.rules.drift)
        if not report.features:
            return
        samples = sum(s.samples for s in report.features.values())
        worst = report.worst or max(report.features, key=lambda f: report.features[f].psi)
        value = 1.0 if report.drifted else 0.0
        window = window_index(at, rule.window_ms)
        state = self.states[(record["model_id"], rule.name)]
        breaching = state.breaching
        verdict = evaluate(state, rule, window, value, samples, at)
        if state.breaching is not breaching:
            assessment.changed = True
        assessment.evaluations.append(Evaluation(rule, report.features[worst].psi, samples, verdict.breached))
        if verdict.fire:
            assessment.triggers.append(RetrainDecision(
                "DRIFT", rule, record["model_id"], info.version, FEATURE_PREFIX + worst,
                report.features[worst].psi, samples, window * rule.window_ms, (window + 1) * rule.window_ms,
                _drift_statistics(report)))


def _plan(rules: RuleSet, metric: str) -> dict[int, tuple[Rule, ...]]:
    """Rules for `metric` grouped by window size, so each window is folded once."""
    grouped: dict[int, list[Rule]] = defaultdict(list)
    for rule in rules.for_metric(metric):
        grouped[rule.window_ms].append(rule)
    return {w: tuple(group) for w, group in grouped.items()}


def _drift_as_rule(config: Any) -> Rule:
    """Drift verdicts (1 = drifted) run through the same consecutive/hysteresis/cooldown machine."""
    return Rule(name=config.name, metric="drift", aggregation="max", comparator="ge", threshold=1.0,
                window_s=config.window_s, min_samples=1, hysteresis=0.5, cooldown_s=config.cooldown_s)


def _drift_statistics(report: drift.DriftReport) -> dict[str, float]:
    stats: dict[str, float] = {}
    for name, s in report.features.items():
        stats.update({f"psi:{name}": s.psi, f"ks_d:{name}": s.ks_d, f"ks_p:{name}": s.p_value,
                      f"ks_p_adjusted:{name}": s.p_adjusted, f"samples:{name}": float(s.samples),
                      f"reference_samples:{name}": float(s.reference_samples)})
    return stats
