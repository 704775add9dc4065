"""Pure stage transitions of flywheel.lifecycle, and the document round trip."""

from __future__ import annotations

import pytest

from flywheel import lifecycle as lc


def registered(*versions: str) -> lc.ModelStages:
    stages = lc.empty("m")
    for i, version in enumerate(versions):
        stages = lc.register(stages, version, f"s3://a/models/m/{version}/model.tar.gz", at=i, metrics={"accuracy": 0.5})
    return stages


def test_register_records_a_registered_version_once() -> None:
    stages = registered("v1")
    assert stages.versions["v1"].stage == "registered"
    assert stages.production is None and stages.production_record() is None
    assert lc.register(stages, "v1", "s3://other", at=9) is stages
    assert [h["action"] for h in stages.history] == ["register"]


def test_promote_archives_the_old_champion_and_keeps_evidence() -> None:
    stages = lc.promote(registered("v1", "v2"), "v1", at=10, reason="first")
    stages = lc.promote(lc.nominate(stages, "v2"), "v2", at=20, reason="gate", evidence={"delta": 0.05})
    assert stages.production == "v2" and stages.versions["v2"].promoted_at == 20
    assert stages.versions["v1"].stage == "archived"
    last = stages.history[-1]
    assert last["action"] == "promote" and last["from_version"] == "v1" and last["evidence"] == {"delta": 0.05}


def test_reject_only_judges_registered_or_candidate() -> None:
    stages = lc.reject(lc.nominate(registered("v1"), "v1"), "v1", at=5, reason="no better", evidence={"p_value": 0.4})
    assert stages.versions["v1"].stage == "rejected" and stages.production is None
    with pytest.raises(lc.IllegalTransition, match="only a registered or candidate"):
        lc.reject(stages, "v1", at=6, reason="again")


def test_rollback_restores_the_previous_production_version_and_walks_further_back() -> None:
    stages = registered("v1", "v2", "v3")
    for at, version in enumerate(("v1", "v2", "v3"), start=10):
        stages = lc.promote(stages, version, at=at, reason="gate")
    stages = lc.rollback(stages, at=20, reason="probation")
    assert stages.production == "v2" and stages.versions["v3"].stage == "archived"
    assert stages.history[-1] | {"evidence": {}} == {"at": 20, "action": "rollback", "version": "v2",
                                                      "from_version": "v3", "reason": "probation", "evidence": {}}
    stages = lc.rollback(stages, at=21, reason="again")
    assert stages.production == "v1"
    with pytest.raises(lc.IllegalTransition, match="no previous production"):
        lc.rollback(stages, at=22, reason="nothing left")


@pytest.mark.parametrize(("build", "call", "match"), [
    (lambda: registered("v1"), lambda s: lc.promote(s, "v9", at=1, reason="x"), "no version 'v9'"),
    (lambda: lc.promote(registered("v1"), "v1", at=1, reason="x"),
     lambda s: lc.promote(s, "v1", at=2, reason="x"), "already production"),
    (lambda: registered("v1"), lambda s: lc.rollback(s, at=1, reason="x"), "no production version"),
    (lambda: lc.promote(registered("v1"), "v1", at=1, reason="x"),
     lambda s: lc.rollback(s, at=2, reason="x"), "no previous production"),
    (lambda: lc.promote(registered("v1"), "v1", at=1, reason="x"), lambda s: lc.nominate(s, "v1"), "only a registered"),
])
def test_illegal_transitions_raise_a_clear_error(build, call, match) -> None:
    with pytest.raises(lc.IllegalTransition, match=match):
        call(build())


def test_an_operator_may_promote_a_rejected_version() -> None:
    stages = lc.reject(registered("v1"), "v1", at=1, reason="gate")
    assert lc.promote(stages, "v1", at=2, reason="operator").production == "v1"


def test_document_round_trips() -> None:
    stages = lc.promote(registered("v1", "v2"), "v1", at=3, reason="first")
    doc = stages.to_dict()
    assert set(doc) == {"model_id", "generation", "production", "versions", "history"}
    assert set(doc["versions"]["v1"]) == {"stage", "artifact_uri", "metrics", "registered_at", "promoted_at",
                                          "dataset_version_id"}
    assert lc.ModelStages.from_dict(doc) == stages


def test_an_entry_remembers_its_cause_so_a_redelivered_request_is_found() -> None:
    stages = lc.promote(registered("v1"), "v1", at=1, reason="operator", extra={"cause": "e1", "detail": "why"})
    found = lc.entry_caused_by(stages, "e1")
    assert found["detail"] == "why" and found["action"] == "promote"
    assert lc.entry_caused_by(stages, "e2") is None and lc.entry_caused_by(stages, "") is None
