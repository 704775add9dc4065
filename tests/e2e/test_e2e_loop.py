"""The README's scenario, smaller: new data -> fine-tune -> registered -> degrade -> retrain -> supersede -> registered."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.bootstrap import build_codec
from flywheel_dev.demo import Scenario, settings_for
from flywheel_dev.localstack import LocalStack
from flywheel_dev.platform import Platform
from flywheel_dev.timeline import Seen, Timeline
from flywheel_dev.timeline_view import Printer

# Fewer examples and a shorter fine-tune than `make run`: the same code path, CI-sized.
E2E_EXAMPLES = 160


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Timeline, Platform, dict[str, Seen]]]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    with LocalStack(log_dir=workdir) as stack, Platform(stack, workdir) as platform:
        timeline = Timeline(settings_for(stack), build_codec(settings_for(stack)))
        scenario = Scenario(stack, timeline, Printer(io.StringIO()), E2E_EXAMPLES, train_timeout=300)
        seen: dict[str, Seen] = {}
        seen["v1"] = scenario.land_data("v1", seed=1)
        seen["first"] = scenario.registered(seen["v1"])
        seen["retrain"] = scenario.degrade_until_retrain(seen["first"])
        seen["v2"], seen["superseded"] = scenario.supersede(seen["retrain"])
        seen["final"] = scenario.registered(seen["v2"])
        yield timeline, platform, seen
        timeline.close()


def test_first_model_beats_the_untrained_baseline(loop) -> None:
    _, _, seen = loop
    first = seen["first"]
    assert first.get("metrics")["accuracy"] > first.get("baseline_metrics")["accuracy"] + 0.2


def test_degradation_requests_one_retrain_with_evidence(loop) -> None:
    timeline, _, seen = loop
    retrain = seen["retrain"]
    assert retrain.get("trigger") == "METRIC_BREACH"
    assert retrain.get("observed_value") < retrain.get("threshold")
    assert retrain.get("sample_size") > 0
    assert len(timeline.matching("RetrainRequested")) == 1


def test_newer_data_supersedes_the_retrain_and_wins(loop) -> None:
    _, _, seen = loop
    assert seen["superseded"].get("superseded_by_dataset_version_id") == seen["v2"].get("dataset_version_id")
    assert seen["final"].get("dataset_version_id") == seen["v2"].get("dataset_version_id")


def test_no_run_started_twice_and_nothing_dead_lettered(loop) -> None:
    timeline, _, _ = loop
    starts = Counter(s.get("run_id") for s in timeline.matching("TrainingRunStarted"))
    assert starts and max(starts.values()) == 1
    assert timeline.matching("DeadLetter") == []


def test_final_model_walks_back_to_its_dataset(loop) -> None:
    timeline, _, seen = loop
    by_id = {s.record["envelope"]["event_id"]: s for s in timeline.events}
    chain, current = [], seen["final"]
    while current is not None:
        chain.append(current.name)
        current = by_id.get(current.record["envelope"]["causation_id"])
    assert chain[-1] == "DatasetVersionReady"
    assert seen["final"].record["envelope"]["correlation_id"] == seen["v2"].record["envelope"]["correlation_id"]


def test_every_service_alive_at_the_end(loop) -> None:
    _, platform, _ = loop
    assert all(proc.alive() and proc.healthy() for proc in platform.procs.values())
