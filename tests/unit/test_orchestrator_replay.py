"""Rebuilding run state from the event log after a restart."""

from __future__ import annotations

from flywheel_orchestrator import events
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import RunSpec
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.replay import fold


def ready(version: str, event: str, model: str = "m") -> tuple[str, str, dict]:
    return ("dataset.version-ready", "flywheel.DatasetVersionReady", {
        "envelope": {"event_id": event, "correlation_id": event, "occurred_at": 1000},
        "model_id": model, "dataset_version_id": version, "manifest_uri": f"s3://d/{version}.json",
        "row_count": 10, "objects": [{"key": f"{version}/a.jsonl", "etag": version, "rows": 10}],
        "first_object_at": 900})


def started(run: str, version: str, trigger_event: str, model: str = "m") -> tuple[str, str, dict]:
    spec = RunSpec(run, model, version, Kind.NEW_DATA, f"s3://d/{version}.json", trigger_event, trigger_event)
    record = events.run_started(spec, {"event_id": trigger_event, "correlation_id": trigger_event}, "local", {})
    return "training.run-started", "flywheel.TrainingRunStarted", record


def ended(run: str, name: str = "TrainingRunSucceeded", model: str = "m") -> tuple[str, str, dict]:
    return "training.run-succeeded", f"flywheel.{name}", {"model_id": model, "run_id": run,
                                                         "envelope": {"event_id": f"end-{run}", "correlation_id": run}}


def test_a_started_run_without_an_end_is_resumed_and_its_trigger_is_not_relaunched():
    orch = Orchestration(TriggerPolicy(debounce_s=0))
    recovered = fold(orch, [ready("v1", "e1"), started("r1", "v1", "e1")])
    assert list(recovered.in_flight) == ["r1"] and recovered.untrained == []
    assert recovered.in_flight["r1"][0].manifest_uri == "s3://d/v1.json"
    topic, name, record = ready("v1", "e1")  # Faust redelivers it: its offset was not committed
    skip, = orch.on_trigger(events.trigger_of(name, topic, record, 0), 0)
    assert "duplicate" in skip.reason


def test_ended_and_superseded_runs_are_not_resumed():
    orch = Orchestration(TriggerPolicy())
    recovered = fold(orch, [ready("v1", "e1"), started("r1", "v1", "e1"), ended("r1"),
                            ready("v2", "e2"), started("r2", "v2", "e2"), ended("r2", "TrainingRunSuperseded")])
    assert recovered.in_flight == {} and orch.state("m").in_flight == {}


def test_a_dataset_that_never_got_a_run_is_decided_again():
    orch = Orchestration(TriggerPolicy())
    recovered = fold(orch, [ready("v1", "e1"), started("r1", "v1", "e1"), ended("r1"), ready("v2", "e2")])
    trigger, = recovered.untrained
    assert trigger.dataset.dataset_version_id == "v2" and trigger.event_id == "e2"


def test_models_of_other_workers_are_left_alone():
    orch = Orchestration(TriggerPolicy())
    recovered = fold(orch, [ready("v1", "e1", model="theirs"), started("r1", "v1", "e1", model="theirs")],
                     manages=lambda model: model == "mine")
    assert recovered.in_flight == {} and recovered.untrained == [] and orch.models == {}


def test_each_models_newest_succeeded_run_is_kept_for_the_promotion_gate():
    orch = Orchestration(TriggerPolicy())
    log = [ready("v1", "e1"), started("r1", "v1", "e1"), ended("r1"), ready("v2", "e2"), started("r2", "v2", "e2"),
           ended("r2"), started("r3", "v2", "e3"), ended("r3", "TrainingRunFailed")]
    found = fold(orch, log)
    spec, succeeded = found.last_succeeded["m"]
    assert spec.run_id == "r2" and spec.dataset_version_id == "v2" and succeeded["event_id"] == "end-r2"


def test_a_succeeded_run_whose_end_precedes_its_start_in_the_merged_log_is_still_kept():
    found = fold(Orchestration(TriggerPolicy()), [ended("r1"), started("r1", "v1", "e1")])
    assert found.last_succeeded["m"][0].run_id == "r1" and not found.in_flight
