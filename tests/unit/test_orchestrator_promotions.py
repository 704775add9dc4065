"""Lifecycle effects: idempotent under redelivery, bad requests ignored with a reason, store failures logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flywheel import lifecycle as lc
from flywheel_orchestrator.domain import RunSpec, Trigger
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.promotion import GatePolicy
from flywheel_orchestrator.promotions import Promotions
from flywheel_orchestrator.settings import OrchestratorSettings


class MemoryStore:
    """StageStore's interface over a dict (the S3 behaviour is tested in tests/integration/test_lifecycle_store.py)."""

    def __init__(self) -> None:
        self.docs: dict[str, lc.ModelStages] = {}
        self.fail = False

    def read(self, model_id: str) -> lc.ModelStages | None:
        return self.docs.get(model_id)

    def update(self, model_id, fn):
        if self.fail:
            raise RuntimeError("S3 is down")
        base = self.docs.get(model_id) or lc.empty(model_id)
        changed = fn(base)
        if changed.to_dict() != base.to_dict():
            self.docs[model_id] = lc.ModelStages(**{**changed.__dict__, "generation": base.generation + 1})
        return self.docs.get(model_id, base)


class Sent(list):
    async def __call__(self, topic, record):
        self.append((topic, record))


def setup() -> tuple[Promotions, MemoryStore, Sent]:
    store, sent = MemoryStore(), Sent()
    return Promotions(store, sent, GatePolicy()), store, sent


def spec(run: str, lineage: dict | None = None) -> RunSpec:
    return RunSpec(run, "m", "ds", Kind.NEW_DATA, "s3://d/m.json", "e", "c", lineage=lineage or {})


def register(promotions: Promotions, run: str, registration: dict, lineage: dict | None = None) -> None:
    cause = {"event_id": f"reg-{run}", "correlation_id": "c"}
    asyncio.run(promotions.registered(spec(run, lineage), registration, cause, cause=f"succ-{run}"))


BETTER = {"artifact_uri": "s3://a/v2.tar.gz", "metrics": {"accuracy": 0.9}, "champion_metrics": {"accuracy": 0.8},
          "comparison": {"n": 100, "b": 1, "c": 11, "p_value": 0.003, "delta": 0.1}}


def request(action: str, version: str | None = None, event_id: str = "op-1") -> dict:
    return {"envelope": {"event_id": event_id, "correlation_id": event_id}, "model_id": "m", "action": action,
            "model_version": version, "reason": "words"}


def test_first_then_better_then_a_redelivered_registration_changes_nothing():
    promotions, store, sent = setup()
    register(promotions, "v1", {"artifact_uri": "s3://a/v1.tar.gz", "metrics": {"accuracy": 0.8}})
    register(promotions, "v2", BETTER, {"champion_version": "v1"})
    register(promotions, "v2", BETTER, {"champion_version": "v1"})  # redelivered: re-announced, not re-applied
    assert [(t, r["model_version"], r["reason"]) for t, r in sent] == [
        ("model.version-promoted", "v1", "first"), ("model.version-promoted", "v2", "gate"),
        ("model.version-promoted", "v2", "gate")]
    assert [h["action"] for h in store.docs["m"].history] == ["register", "promote", "register", "promote"]


def test_an_operator_rollback_delivered_twice_rolls_back_once():
    promotions, store, sent = setup()
    register(promotions, "v1", {"artifact_uri": "s3://a/v1.tar.gz", "metrics": {"accuracy": 0.8}})
    register(promotions, "v2", BETTER, {"champion_version": "v1"})
    asyncio.run(promotions.stage_change(request("rollback")))
    asyncio.run(promotions.stage_change(request("rollback")))
    assert store.docs["m"].production == "v1"
    assert [h["action"] for h in store.docs["m"].history].count("rollback") == 1
    rolled = [r for t, r in sent if t == "model.version-rolled-back"]
    assert len(rolled) == 2 and rolled[0]["evidence"] == rolled[1]["evidence"] and rolled[0]["reason"] == "operator"
    assert store.docs["m"].history[-1]["detail"] == "words"


@pytest.mark.parametrize(("record", "words"), [
    (request("promote", "nope"), "no version 'nope'"),
    (request("promote"), "without a version"),
    (request("demote", "v1"), "got 'demote'"),
    (request("rollback"), "no previous production version"),
])
def test_bad_requests_are_ignored_with_a_reason(record, words, caplog):
    promotions, store, sent = setup()
    register(promotions, "v1", {"artifact_uri": "s3://a/v1.tar.gz", "metrics": {"accuracy": 0.8}})
    sent.clear()
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        asyncio.run(promotions.stage_change(record))
    assert sent == [] and store.docs["m"].production == "v1"
    assert any(words in r.getMessage() and r.outcome == "ignored" for r in caplog.records)


def test_a_breach_rolls_back_only_the_production_version_in_probation():
    promotions, store, sent = setup()
    register(promotions, "v1", {"artifact_uri": "s3://a/v1.tar.gz", "metrics": {"accuracy": 0.8}})
    register(promotions, "v2", BETTER, {"champion_version": "v1"})
    sent.clear()

    def breach(version: str, event_id: str) -> Trigger:
        return Trigger(Kind.METRIC_BREACH, "m", event_id, {"event_id": event_id, "correlation_id": event_id}, 0,
                       evidence={"model_version": version, "observed_value": "0.5", "threshold": "0.8"})

    asyncio.run(promotions.breach(breach("v1", "b1")))
    assert sent == []
    asyncio.run(promotions.breach(breach("v2", "b2")))
    asyncio.run(promotions.breach(breach("v2", "b3")))  # v2 is no longer production: nothing more
    (topic, record), = sent
    assert (topic, record["from_version"], record["to_version"], record["reason"]) == (
        "model.version-rolled-back", "v2", "v1", "probation")


def test_a_store_failure_is_logged_and_nothing_is_announced(caplog):
    promotions, store, sent = setup()
    store.fail = True
    with caplog.at_level(logging.ERROR, logger="orchestrator"):
        register(promotions, "v1", {"artifact_uri": "s3://a/v1.tar.gz", "metrics": {"accuracy": 0.8}})
    assert sent == [] and "stage store update failed" in caplog.text


def test_gate_settings_are_validated():
    assert OrchestratorSettings().gate() == GatePolicy(0.01, 0.05, 1800.0)
    with pytest.raises(ValueError, match="promotion_alpha"):
        OrchestratorSettings(promotion_alpha=0)
