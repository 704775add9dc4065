"""RetrainRequested records from engine triggers: the rule, the observed value, the threshold, the sample
size and the window, with deterministic ids so a redelivered breach is recognisably the same request. Pure."""

from __future__ import annotations

import uuid
from typing import Any

from flywheel.events import now_ms
from flywheel_monitor.engine import Trigger
from flywheel_monitor.rules import DriftRule, RuleSet

BREACH_NAMESPACE = uuid.UUID("6f1e0c1a-4b1d-4c55-9a53-2d1f3c0b7e21")


def breach_id(trigger: Trigger) -> str:
    """Same model, version, rule and window -> same id (a replay after a restart is a duplicate, not news)."""
    key = f"{trigger.model_id}/{trigger.model_version}/{trigger.rule.name}/{trigger.window_start_ms}"
    return str(uuid.uuid5(BREACH_NAMESPACE, key))


def retrain_requested(trigger: Trigger, cause: dict[str, Any], rules: RuleSet, producer: str) -> dict[str, Any]:
    """The event; `cause` is the envelope of the metric event that tipped the window."""
    event_id = breach_id(trigger)
    aggregation, comparator, threshold = _criterion(trigger, rules.drift)
    return {
        "envelope": {"event_id": event_id, "occurred_at": now_ms(), "correlation_id": event_id,
                     "causation_id": cause["event_id"], "producer": producer},
        "model_id": trigger.model_id,
        "model_version": trigger.model_version,
        "trigger": trigger.kind,
        "rule": trigger.rule.name,
        "metric": trigger.metric,
        "aggregation": aggregation,
        "comparator": comparator,
        "observed_value": trigger.observed_value,
        "threshold": threshold,
        "sample_size": trigger.sample_size,
        "window_start": trigger.window_start_ms,
        "window_end": trigger.window_end_ms,
        "statistics": trigger.statistics,
        "detail": _detail(trigger, aggregation, comparator, threshold),
    }


def _criterion(trigger: Trigger, drift: DriftRule | None) -> tuple[str, str, float]:
    if trigger.kind == "DRIFT" and drift is not None:
        return "psi", "ge", drift.psi_threshold
    rule = trigger.rule
    return rule.aggregation, rule.comparator, rule.threshold


def _detail(trigger: Trigger, aggregation: str, comparator: str, threshold: float) -> str:
    return (f"{trigger.model_id} {trigger.model_version}: {aggregation}({trigger.metric}) = "
            f"{trigger.observed_value:.4g} {comparator} {threshold:g} over {trigger.sample_size} samples "
            f"(rule {trigger.rule.name})")
