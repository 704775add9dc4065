"""The promotion gate, probation rollback and lifecycle events: pure decisions, checked against the schemas."""

from __future__ import annotations

import pytest

from flywheel import lifecycle as lc
from flywheel.bootstrap import build_codec
from flywheel.events import envelope
from flywheel.settings import FlywheelSettings
from flywheel_orchestrator import events
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.promotion import GatePolicy, judge, probation

POLICY = GatePolicy(margin=0.01, alpha=0.05, probation_s=1800)
MINUTE = 60_000


def with_champion() -> lc.ModelStages:
    stages = lc.register(lc.empty("m"), "v1", "s3://a/v1/model.tar.gz", at=0)
    stages = lc.promote(stages, "v1", at=1000, reason="first")
    return lc.nominate(lc.register(stages, "v2", "s3://a/v2/model.tar.gz", at=2000), "v2")


def registration(delta: float, b: int, c: int, p_value: float, n: int = 200) -> dict:
    return {"metrics": {"accuracy": 0.80 + delta}, "baseline_metrics": {"accuracy": 0.25},
            "champion_metrics": {"accuracy": 0.80},
            "comparison": {"n": n, "b": b, "c": c, "p_value": p_value, "delta": delta}}


def test_the_first_version_is_promoted_with_its_numbers() -> None:
    stages = lc.nominate(lc.register(lc.empty("m"), "v1", "s3://a", at=0), "v1")
    verdict = judge(stages, "v1", {"metrics": {"accuracy": 0.9}, "baseline_metrics": {"accuracy": 0.25}}, None, POLICY)
    assert verdict.promote and verdict.reason == "first" and verdict.champion is None
    assert verdict.evidence == {"challenger_accuracy": 0.9, "baseline_accuracy": 0.25, "margin": 0.01, "alpha": 0.05}


@pytest.mark.parametrize(("delta", "b", "c", "p_value", "promote", "words"), [
    (0.05, 2, 12, 0.0065, True, ""),
    (0.01, 1, 3, 0.0001, True, ""),  # exactly the margin is enough
    (0.005, 1, 2, 0.01, False, "accuracy delta +0.0050 is below the margin 0.0100"),
    (0.05, 10, 20, 0.0494, True, ""),
    (0.05, 12, 22, 0.0607, False, "McNemar p-value 0.0607 is not below alpha 0.05 (b=12, c=22)"),
    (-0.02, 8, 4, 0.93, False, "below the margin"),
])
def test_the_gate_needs_both_the_margin_and_significance(delta, b, c, p_value, promote, words) -> None:
    verdict = judge(with_champion(), "v2", registration(delta, b, c, p_value), "v1", POLICY)
    assert verdict.promote is promote and verdict.champion == "v1"
    assert verdict.reason == "gate" if promote else words in verdict.reason
    assert verdict.evidence["delta"] == delta and verdict.evidence["p_value"] == p_value
    assert verdict.evidence["b"] == b and verdict.evidence["champion_accuracy"] == 0.80


def test_a_run_compared_with_another_champion_or_with_none_is_rejected() -> None:
    stale = judge(with_champion(), "v2", registration(0.1, 0, 20, 1e-6), "v0", POLICY)
    assert not stale.promote and "compared with v0, but production is now v1" in stale.reason
    missing = judge(with_champion(), "v2", {"metrics": {"accuracy": 0.99}, "champion_error": "OSError: bad"}, "v1",
                    POLICY)
    assert not missing.promote and missing.reason == "no evidence against champion v1: OSError: bad"


def promoted_twice(at_ms: int) -> lc.ModelStages:
    stages = lc.promote(with_champion(), "v2", at=at_ms, reason="gate")
    return stages


@pytest.mark.parametrize(("kind", "evidence", "age_ms", "rollback", "words"), [
    (Kind.METRIC_BREACH, {"model_version": "v2", "observed_value": "0.61", "threshold": "0.8"}, MINUTE, True,
     "METRIC_BREACH within 1800s"),
    (Kind.DRIFT, {"model_version": "v2"}, MINUTE, True, "DRIFT within"),
    (Kind.METRIC_BREACH, {"model_version": "v2"}, 31 * MINUTE, False, "left probation"),
    (Kind.METRIC_BREACH, {"model_version": "v1"}, MINUTE, False, "concerns v1, not production v2"),
    (Kind.MANUAL, {"model_version": "v2"}, MINUTE, False, "not a breach"),
])
def test_probation(kind, evidence, age_ms, rollback, words) -> None:
    check = probation(promoted_twice(10 * MINUTE), kind, evidence, 10 * MINUTE + age_ms, POLICY)
    assert check.rollback is rollback and words in check.reason
    if rollback:
        assert check.from_version == "v2" and check.evidence["seconds_since_promotion"] == 60.0
    if "observed_value" in evidence:
        assert check.evidence["observed_value"] == 0.61 and check.evidence["threshold"] == 0.8


def test_no_rollback_without_a_previous_version_or_a_production_version() -> None:
    first = lc.promote(lc.register(lc.empty("m"), "v1", "s3://a", at=0), "v1", at=0, reason="first")
    assert "no previous version" in probation(first, Kind.DRIFT, {"model_version": "v1"}, 1, POLICY).reason
    assert probation(None, Kind.DRIFT, {"model_version": "v1"}, 1, POLICY).reason == "no production version"


def test_lifecycle_events_match_their_schemas() -> None:
    codec = build_codec(FlywheelSettings())
    cause = envelope("orchestrator")
    stages = lc.reject(with_champion(), "v2", at=3, reason="not better", evidence={"delta": 0.0, "n": 10})
    stages = lc.promote(lc.register(stages, "v3", "s3://a/v3/model.tar.gz", at=4), "v3", at=5, reason="gate",
                        evidence={"delta": 0.05})
    stages = lc.rollback(stages, at=6, reason="probation", evidence={"observed_value": 0.5})
    expected = {"promote": "ModelVersionPromoted", "reject": "ModelVersionRejected",
                "rollback": "ModelVersionRolledBack"}
    for entry in stages.history[1:]:
        if entry["action"] not in expected:
            continue
        topic, record = events.stage_event(stages, entry, cause)
        decoded = codec.decode(codec.encode(expected[entry["action"]], record, check=True)).record
        assert topic.startswith("model.version-") and decoded["envelope"]["causation_id"] == cause["event_id"]
    _, rolled = events.stage_event(stages, stages.history[-1], cause)
    assert (rolled["from_version"], rolled["to_version"], rolled["artifact_uri"]) == ("v3", "v1", "s3://a/v1/model.tar.gz")
    _, rejected = events.stage_event(stages, stages.history[3], cause)
    assert rejected["champion_version"] == "v1" and rejected["evidence"] == {"delta": 0.0, "n": 10.0}
