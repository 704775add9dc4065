"""Shadow evaluation on the orchestrator's side (docs/decisions/0013-shadow-evaluation.md): the lifecycle's shadow
transitions, the pure live verdict, and Promotions carrying it out on an in-memory stage store."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from flywheel import lifecycle as lc
from flywheel.bootstrap import build_codec
from flywheel.events import envelope
from flywheel.mcnemar import mcnemar_exact_p
from flywheel.settings import FlywheelSettings
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.policy import Kind
from flywheel_orchestrator.promotion import GatePolicy, shadow_verdict
from flywheel_orchestrator.promotions import CHAMPION_VERSION, Promotions

pytestmark = pytest.mark.unit
POLICY = GatePolicy(margin=0.01, alpha=0.05, probation_s=1800, shadow_min_pairs=100, shadow_max_s=600)
OFF = GatePolicy(margin=0.01, alpha=0.05, probation_s=1800)


def shadowing(at: int = 10_000) -> lc.ModelStages:
    stages = lc.register(lc.empty("m"), "v1", "s3://a/v1/model.tar.gz", at=0)
    stages = lc.promote(stages, "v1", at=1000, reason="first")
    stages = lc.nominate(lc.register(stages, "v2", "s3://a/v2/model.tar.gz", at=2000), "v2")
    return lc.start_shadow(stages, "v2", at=at, reason="gate", evidence={"delta": 0.04}, extra={"cause": "s1"})


def counts(n: int, prod: int, cand: int, b: int, c: int) -> dict[str, int]:
    return {"n": n, "production_correct": prod, "shadow_correct": cand, "b": b, "c": c}


# -- McNemar: one function, equal to training's copy and to scipy ------------------------------------------
def test_the_shared_mcnemar_matches_trainings_copy_and_scipy() -> None:
    path = Path(__file__).resolve().parents[2] / "services" / "training" / "compare.py"
    spec = importlib.util.spec_from_file_location("training_compare", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    for b, c in itertools.product(range(0, 25, 3), range(0, 25, 4)):
        assert mcnemar_exact_p(b, c) == compare.mcnemar_exact_p(b, c)
        if b + c:
            assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(c, b + c, 0.5, alternative="greater").pvalue)
    assert mcnemar_exact_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


# -- lifecycle --------------------------------------------------------------------------------------------
def test_a_shadow_is_a_candidate_with_totals_that_survive_the_store_format() -> None:
    stages = shadowing()
    record = stages.shadow_record()
    assert record is not None and record.version == "v2" and record.stage == "candidate"
    assert record.shadow["against"] == "v1" and record.shadow["n"] == 0 and stages.production == "v1"
    assert stages.history[-1]["action"] == "shadow" and stages.history[-1]["cause"] == "s1"
    once = lc.add_shadow_window(stages, "v2", "w1", counts(10, 7, 9, 1, 3))
    twice = lc.add_shadow_window(once, "v2", "w1", counts(10, 7, 9, 1, 3))
    assert twice is once and once.versions["v2"].shadow_counts() == {
        "n": 10.0, "b": 1.0, "c": 3.0, "production_correct": 7.0, "shadow_correct": 9.0}
    assert lc.ModelStages.from_dict(once.to_dict()) == once
    assert "shadow" not in lc.ModelStages.from_dict(once.to_dict()).versions["v1"].to_dict()  # old docs unchanged


def test_a_new_shadow_supersedes_the_old_one_and_only_candidates_are_shadowed() -> None:
    stages = lc.nominate(lc.register(shadowing(), "v3", "s3://a/v3", at=20_000), "v3")
    stages = lc.start_shadow(stages, "v3", at=21_000, reason="gate", extra={"cause": "s2"})
    assert stages.shadow_record().version == "v3" and stages.versions["v2"].stage == "rejected"
    superseded = lc.entry_caused_by(stages, "s2/superseded")
    assert superseded["action"] == "reject" and "superseded in shadow by v3" in superseded["reason"]
    with pytest.raises(lc.IllegalTransition, match="not a candidate in shadow"):
        lc.add_shadow_window(stages, "v2", "w", counts(1, 1, 1, 0, 0))
    with pytest.raises(lc.IllegalTransition, match="no production version"):
        lc.start_shadow(lc.register(lc.empty("x"), "v1", "s3://a", at=0), "v1", at=1, reason="gate")


# -- the pure verdict -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "age_s", "decision", "words"), [
    (counts(50, 40, 45, 1, 6), 10, None, ""),  # too few pairs yet: keep collecting
    (counts(120, 90, 102, 2, 14), 10, True, "shadow"),  # +0.10, p = 0.002
    (counts(120, 100, 95, 8, 3), 10, False, "live accuracy delta -0.0417 is below the margin"),
    (counts(120, 100, 104, 8, 12), 10, False, "live McNemar p-value 0.2517 is not below alpha 0.05"),
    (counts(50, 40, 45, 1, 6), 700, False, "only 50 live pairs of the 100 needed within 600s"),
])
def test_the_live_verdict(window, age_s, decision, words) -> None:
    stages = lc.add_shadow_window(shadowing(at=0), "v2", "w1", window)
    verdict = shadow_verdict(stages, "v2", age_s * 1000, POLICY)
    if decision is None:
        assert verdict is None
        return
    assert verdict.promote is decision and words in verdict.reason and verdict.champion == "v1"
    assert verdict.evidence["live_n"] == window["n"] and verdict.evidence["live_b"] == window["b"]
    assert verdict.evidence["live_candidate_accuracy"] == window["shadow_correct"] / window["n"]


def test_a_shadow_whose_production_changed_is_rejected() -> None:
    stages = lc.register(shadowing(at=0), "v0", "s3://a/v0", at=1)
    stages = lc.promote(stages, "v0", at=2, reason="operator")
    verdict = shadow_verdict(stages, "v2", 1000, POLICY)
    assert verdict is not None and not verdict.promote and "production is now v0" in verdict.reason


# -- Promotions on an in-memory store ---------------------------------------------------------------------
class MemoryStages:
    """StageStore's interface on a dict (the S3 one is tested in tests/integration/test_lifecycle_store.py)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def read(self, model_id: str) -> lc.ModelStages | None:
        doc = self.docs.get(model_id)
        return lc.ModelStages.from_dict(doc) if doc else None

    def update(self, model_id: str, fn) -> lc.ModelStages:
        current = self.read(model_id)
        changed = fn(current or lc.empty(model_id))
        self.docs[model_id] = changed.to_dict()
        return changed

    def models(self) -> list[str]:
        return sorted(self.docs)


def promotions(policy: GatePolicy) -> tuple[Promotions, MemoryStages, list[tuple[str, dict]]]:
    sent: list[tuple[str, dict]] = []

    async def send(topic: str, record: dict) -> None:
        sent.append((topic, record))

    store = MemoryStages()
    return Promotions(store, send, policy), store, sent


def spec(version: str, champion: str | None) -> RunSpec:
    return RunSpec(run_id=version, model_id="m", dataset_version_id="d", kind=Kind.NEW_DATA, manifest_uri="s3://d",
                   trigger_event_id="t", correlation_id="c", lineage={CHAMPION_VERSION: champion} if champion else {})


def registration(version: str, delta: float = 0.05) -> dict:
    return {"artifact_uri": f"s3://a/{version}/model.tar.gz", "metrics": {"accuracy": 0.85},
            "champion_metrics": {"accuracy": 0.80},
            "comparison": {"n": 200, "b": 2, "c": 12, "p_value": 0.0065, "delta": delta}}


def window(version: str, against: str, n: int, prod: int, cand: int, b: int, c: int) -> dict:
    return {"envelope": envelope("serving", correlation_id=f"shadow:m:{version}"), "model_id": "m",
            "production_version": against, "candidate_version": version, "window_start": 0, "window_end": 1,
            "pairs": n, "production_correct": prod, "candidate_correct": cand, "b": b, "c": c,
            "p_value": mcnemar_exact_p(b, c), "replica": "r"}


async def first_then_second(p: Promotions) -> None:
    await p.registered(spec("v1", None), registration("v1"), envelope("orchestrator"), "e1")
    await p.registered(spec("v2", "v1"), registration("v2"), envelope("orchestrator"), "e2")


def test_off_by_default_a_passing_version_is_promoted_at_once() -> None:
    p, store, sent = promotions(OFF)
    asyncio.run(first_then_second(p))
    assert [t for t, _ in sent] == ["model.version-promoted", "model.version-promoted"]
    assert store.read("m").production == "v2"


def test_shadow_on_windows_add_up_once_and_promote_with_both_evidences() -> None:
    p, store, sent = promotions(POLICY)
    w1 = window("v2", "v1", 60, 45, 52, 1, 8)
    w2 = window("v2", "v1", 60, 46, 53, 1, 8)

    async def run() -> None:
        await first_then_second(p)
        await p.shadow_evaluated(w1)
        await p.shadow_evaluated(w1)  # redelivered: counted once
        await p.shadow_evaluated(window("v9", "v1", 60, 1, 60, 0, 59))  # not the shadow: ignored
        await p.shadow_evaluated(window("v2", "v0", 60, 1, 60, 0, 59))  # paired with another production
        await p.shadow_evaluated(w2)
        await p.shadow_evaluated(w2)  # after the decision: re-announced, not re-applied

    asyncio.run(run())
    topics = [t for t, _ in sent]
    assert topics == ["model.version-promoted", "model.version-shadowed", "model.version-promoted",
                      "model.version-promoted"]
    shadowed, promoted = sent[1][1], sent[2][1]
    assert shadowed["model_version"] == "v2" and shadowed["production_version"] == "v1"
    assert promoted["reason"] == "shadow" and promoted["previous_version"] == "v1"
    assert promoted["evidence"]["live_n"] == 120 and promoted["evidence"]["live_c"] == 16
    assert promoted["evidence"]["offline_delta"] == 0.05 and promoted["evidence"]["live_p_value"] < 0.05
    assert promoted["envelope"]["causation_id"] == w2["envelope"]["event_id"]
    assert store.read("m").production == "v2" and store.read("m").versions["v2"].shadow["n"] == 120
    codec = build_codec(FlywheelSettings())
    for name, record in (("ModelVersionShadowed", shadowed), ("ModelVersionPromoted", promoted),
                         ("ModelShadowEvaluated", w1)):
        codec.encode(name, record, check=True)


def test_a_losing_candidate_is_rejected_and_a_silent_one_times_out_once() -> None:
    p, store, sent = promotions(POLICY)

    async def run() -> None:
        await first_then_second(p)
        await p.shadow_evaluated(window("v2", "v1", 100, 90, 80, 15, 5))
        await p.registered(spec("v3", "v1"), registration("v3"), envelope("orchestrator"), "e3")
        await p.shadow_timeouts()  # not yet due
        doc = store.docs["m"]
        doc["versions"]["v3"]["shadow"]["started_at"] -= 601_000
        await p.shadow_timeouts()
        await p.shadow_timeouts()

    asyncio.run(run())
    topics = [t for t, _ in sent]
    assert topics == ["model.version-promoted", "model.version-shadowed", "model.version-rejected",
                      "model.version-shadowed", "model.version-rejected"]
    assert "not better than production v1 on 100 live pairs" in sent[2][1]["reason"]
    assert "only 0 live pairs" in sent[4][1]["reason"] and sent[4][1]["envelope"]["causation_id"] is None
    stages = store.read("m")
    assert stages.production == "v1" and stages.versions["v3"].stage == "rejected"
    assert [h["action"] for h in stages.history].count("reject") == 2  # the second check found nothing to do


def test_a_new_shadow_replaces_the_old_one_and_both_events_go_out() -> None:
    p, _, sent = promotions(POLICY)

    async def run() -> None:
        await first_then_second(p)
        await p.registered(spec("v3", "v1"), registration("v3"), envelope("orchestrator"), "e3")

    asyncio.run(run())
    assert [t for t, r in sent][-2:] == ["model.version-rejected", "model.version-shadowed"]
    assert sent[-2][1]["model_version"] == "v2" and "superseded" in sent[-2][1]["reason"]
