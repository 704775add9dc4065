"""Consumed events become triggers; a retrain request naming no retrain kind is invalid (dead-lettered)."""

from __future__ import annotations

import pytest

from flywheel.errors import InvalidEvent
from flywheel_orchestrator.events import trigger_of
from flywheel_orchestrator.policy import Kind

ENVELOPE = {"event_id": "e1", "correlation_id": "breach-1", "occurred_at": 1, "producer": "monitor"}


def request(trigger: str, **fields: object) -> dict:
    return {"envelope": ENVELOPE, "model_id": "m", "trigger": trigger, "rule": "accuracy-floor", **fields}


def test_a_breach_carries_its_evidence_as_strings():
    trigger = trigger_of("flywheel.RetrainRequested", "retrain.requested",
                         request("METRIC_BREACH", metric="accuracy", observed_value=0.61, threshold=0.8,
                                 comparator="lt", window_start=None), 7)
    assert trigger.kind is Kind.METRIC_BREACH and trigger.causation is ENVELOPE and trigger.received_at_ms == 7
    assert trigger.evidence == {"rule": "accuracy-floor", "metric": "accuracy", "observed_value": "0.61",
                                "threshold": "0.8", "comparator": "lt"}


def test_the_manual_topic_is_always_manual():
    assert trigger_of("flywheel.RetrainRequested", "retrain.manual-requested", request("UNKNOWN"), 0).kind is Kind.MANUAL


@pytest.mark.parametrize("kind", ["NEW_DATA", "UNKNOWN"])
def test_a_retrain_request_without_a_retrain_kind_is_invalid(kind):
    with pytest.raises(InvalidEvent, match="METRIC_BREACH, DRIFT or MANUAL"):
        trigger_of("flywheel.RetrainRequested", "retrain.requested", request(kind), 0)
