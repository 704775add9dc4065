"""The README's scenario, the real loop: base data -> fine-tune -> promoted -> serving answers -> live accuracy
measured from feedback -> traffic drifts -> accuracy and drift rules fire -> feedback harvested as a dataset
version -> challenger fine-tuned on base + feedback -> beats the champion on the same rows -> promoted -> serving swaps ->
live accuracy recovers. Assertions are on the platform's events and the application's answers, not on timing.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.bootstrap import build_codec
from flywheel_dev.demo import (
    ACCURACY_RULE,
    DEMO_RULES,
    DRIFT_RULE,
    Loop,
    Scenario,
    demo_platform,
    settings_for,
)
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Timeline
from flywheel_dev.timeline_view import Printer

# The demo's own sizes: the loop only closes when the data is big enough for the gate to tell models apart.
E2E_EXAMPLES = 400


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Timeline, Platform, Loop, Scenario]]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    with LocalStack(log_dir=workdir) as stack, demo_platform(stack, workdir) as platform:
        timeline = Timeline(settings_for(stack), build_codec(settings_for(stack)))
        scenario = Scenario(stack, platform, timeline, Printer(io.StringIO()), E2E_EXAMPLES, train_timeout=300)
        try:
            played = scenario.play()
            yield timeline, platform, played, scenario
        finally:
            if scenario.traffic is not None:
                scenario.traffic.stop()
            timeline.close()


def test_first_model_is_good_but_not_perfect_and_promoted_first(loop) -> None:
    _, _, played, _ = loop
    first = played.seen["first"]
    assert first.get("metrics")["accuracy"] > first.get("baseline_metrics")["accuracy"] + 0.2
    assert first.get("metrics")["accuracy"] < 0.97  # the demo's data is hard: overlapping intents, noise
    promoted = played.seen["first_promoted"]
    assert promoted.get("reason") == "first" and promoted.get("previous_version") is None


def test_live_accuracy_is_measured_from_feedback_and_drops_on_drifted_traffic(loop) -> None:
    _, _, played, _ = loop
    before, drifted = played.live["before"], played.live["drifted"]
    assert before.samples >= 100 and drifted.samples >= 60
    assert before.accuracy > DEMO_RULES["rules"][0]["threshold"]
    assert drifted.accuracy < before.accuracy - 0.15


def test_accuracy_and_drift_rules_fire_with_real_numbers(loop) -> None:
    _, _, played, _ = loop
    first = played.seen["first"].get("model_version")
    breach, drift = played.seen["accuracy_breach"], played.seen["drift"]
    assert breach.get("trigger") == "METRIC_BREACH" and breach.get("rule") == ACCURACY_RULE
    assert breach.get("model_version") == first
    assert breach.get("observed_value") < breach.get("threshold")
    assert breach.get("sample_size") >= DEMO_RULES["rules"][0]["min_samples"]
    assert drift.get("trigger") == "DRIFT" and drift.get("rule") == DRIFT_RULE
    assert drift.get("metric").startswith("feature:")
    assert any(k.startswith("psi:") for k in drift.get("statistics"))


def test_retrain_learns_from_harvested_feedback_of_both_product_lines(loop) -> None:
    timeline, _, played, _ = loop
    feedback, challenger = played.seen["feedback"], played.seen["challenger"]
    assert "/feedback-" in feedback.get("prefix")
    assert played.feedback_lines.get("charger", 0) > 0 and played.feedback_lines.get("shop", 0) > 0
    assert sum(played.feedback_lines.values()) == feedback.get("row_count")
    assert challenger.get("dataset_version_id") == feedback.get("dataset_version_id")
    # It learnt from the base data + the feedback (docs/decisions/0012): v1 first, this feedback version last.
    base = played.seen["v1"]
    trained_on = challenger.get("training_dataset_version_ids")
    assert trained_on[0] == base.get("dataset_version_id") and trained_on[-1] == feedback.get("dataset_version_id")
    composed = played.training_set
    assert [v["dataset_version_id"] for v in composed["versions"]] == trained_on
    assert [v["feedback"] for v in composed["versions"]] == [False] + [True] * (len(trained_on) - 1)
    assert composed["versions"][0]["row_count"] == base.get("row_count")
    assert composed["row_count"] == sum(v["row_count"] for v in composed["versions"]) > base.get("row_count")
    # The breach asked for a retrain; the run that produced the challenger trained on the feedback version.
    retrains = timeline.matching("TrainingRunStarted", lambda s: s.get("trigger") in {"METRIC_BREACH", "DRIFT"})
    runs = timeline.matching("TrainingRunStarted", lambda s: s.get("dataset_version_id") == feedback.get("dataset_version_id"))
    assert len(runs) == 1
    assert retrains or runs[0].get("trigger") == "NEW_DATA"


def test_challenger_beats_the_champion_with_evidence_and_is_promoted(loop) -> None:
    _, _, played, _ = loop
    verdict = played.seen["verdict"]
    assert verdict.name == "ModelVersionPromoted"
    assert verdict.get("previous_version") == played.seen["first"].get("model_version")
    ev = verdict.get("evidence")
    assert ev["challenger_accuracy"] > ev["champion_accuracy"] + ev["margin"]
    assert ev["p_value"] < 0.05 and ev["c"] > ev["b"] and ev["n"] > 0


def test_serving_swaps_and_live_accuracy_recovers(loop) -> None:
    _, _, played, scenario = loop
    first, second = played.seen["first"].get("model_version"), played.seen["challenger"].get("model_version")
    assert [(a, b) for a, b, _ in played.swaps] == [(None, first), (first, second)]
    after, drifted = played.live["after"], played.live["drifted"]
    assert after.version == second and after.samples >= 120
    assert after.accuracy > drifted.accuracy + 0.15
    assert after.accuracy > DEMO_RULES["rules"][0]["threshold"]
    stats = scenario.traffic.stats
    assert stats.errors == {} and stats.feedback_refused == 0  # no failed or dropped request across the swap


def test_no_run_started_twice_nothing_dead_lettered_no_rollback(loop) -> None:
    timeline, _, _, _ = loop
    starts = Counter(s.get("run_id") for s in timeline.matching("TrainingRunStarted"))
    assert starts and max(starts.values()) == 1
    assert timeline.matching("DeadLetter") == []
    assert timeline.matching("ModelLoadFailed") == []
    assert timeline.matching("ModelVersionRolledBack") == []


def test_promoted_model_walks_back_to_its_dataset(loop) -> None:
    timeline, _, played, _ = loop
    by_id = {s.record["envelope"]["event_id"]: s for s in timeline.events}
    chain, current = [], played.seen["challenger"]
    while current is not None:
        chain.append(current)
        current = by_id.get(current.record["envelope"]["causation_id"])
    assert chain[0].get("dataset_version_id") == played.seen["feedback"].get("dataset_version_id")
    assert chain[-1].name in {"DatasetVersionReady", "ModelMetricsObserved"}


def test_every_service_alive_at_the_end(loop) -> None:
    _, platform, _, _ = loop
    assert set(platform.procs) == {"ingest", "orchestrator", "monitor", "serving"}
    assert all(proc.alive() and proc.healthy() for proc in platform.procs.values())
