"""Builders of the records the monitor publishes: RetrainRequested from the core's retrain decisions.

Each carries the rule, the observed value, the threshold, the sample size and the window, with deterministic
ids so a redelivered breach is recognisably the same request. Pure."""

from __future__ import annotations

import uuid
from typing import Any

from flywheel.events import now_ms
from flywheel_monitor.core import RetrainDecision
from flywheel_monitor.rules import DriftRule, RuleSet

BREACH_NAMESPACE = uuid.UUID("6f1e0c1a-4b1d-4c55-9a53-2d1f3c0b7e21")


def breach_id(decision: RetrainDecision) -> str:
    """Same model, version, rule and window -> same id (a replay after a restart is a duplicate, not news)."""
    key = f"{decision.model_id}/{decision.model_version}/{decision.rule.name}/{decision.window_start_ms}"
    return str(uuid.uuid5(BREACH_NAMESPACE, key))


def retrain_requested(decision: RetrainDecision, cause: dict[str, Any], rules: RuleSet,
                      producer: str) -> dict[str, Any]:
    """The event; `cause` is the envelope of the metric event that tipped the window."""
    event_id = breach_id(decision)
    aggregation, comparator, threshold = _criterion(decision, rules.drift)
    return {
        "envelope": {"event_id": event_id, "occurred_at": now_ms(), "correlation_id": event_id,
                     "causation_id": cause["event_id"], "producer": producer},
        "model_id": decision.model_id,
        "model_version": decision.model_version,
        "trigger": decision.kind,
        "rule": decision.rule.name,
        "metric": decision.metric,
        "aggregation": aggregation,
        "comparator": comparator,
        "observed_value": decision.observed_value,
        "threshold": threshold,
        "sample_size": decision.sample_size,
        "window_start": decision.window_start_ms,
        "window_end": decision.window_end_ms,
        "statistics": decision.statistics,
        "detail": _detail(decision, aggregation, comparator, threshold),
    }


def _criterion(decision: RetrainDecision, drift: DriftRule | None) -> tuple[str, str, float]:
    if decision.kind == "DRIFT" and drift is not None:
        return "psi", "ge", drift.psi_threshold
    rule = decision.rule
    return rule.aggregation, rule.comparator, rule.threshold


def _detail(decision: RetrainDecision, aggregation: str, comparator: str, threshold: float) -> str:
    return (f"{decision.model_id} {decision.model_version}: {aggregation}({decision.metric}) = "
            f"{decision.observed_value:.4g} {comparator} {threshold:g} over {decision.sample_size} samples "
            f"(rule {decision.rule.name})")
