"""Fold the event log into run state after a restart (pure: records in, state and work list out)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flywheel.events import to_millis
from flywheel_orchestrator import events
from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import RunSpec, Trigger

ENDINGS = ("TrainingRunSucceeded", "TrainingRunFailed", "TrainingRunSuperseded")


@dataclass
class Recovered:
    """Runs started but never ended (to resume), and datasets that arrived but never launched."""

    in_flight: dict[str, tuple[RunSpec, dict[str, Any]]] = field(default_factory=dict)
    untrained: list[Trigger] = field(default_factory=list)


def fold(orch: Orchestration, items: Iterable[tuple[str, str, dict[str, Any]]],
         manages: Callable[[str], bool] = lambda _: True) -> Recovered:
    """`items` are (topic, schema name, record), oldest first."""
    out, latest_event = Recovered(), {}
    for topic_name, name, record in items:
        model_id = record.get("model_id", "")
        if not manages(model_id):
            continue
        short = name.rsplit(".", 1)[-1]
        if short == "DatasetVersionReady":
            orch.record_dataset(events.dataset_ref(record))
            latest_event[model_id] = (topic_name, name, record)
        elif short == "TrainingRunStarted":
            spec = events.spec_of_started(record)
            orch.record_started(spec, to_millis(record["envelope"]["occurred_at"]))
            if spec.run_id in orch.state(model_id).in_flight:
                out.in_flight[spec.run_id] = (spec, record["envelope"])
        elif short in ENDINGS:
            orch.record_ended(model_id, record["run_id"])
            out.in_flight.pop(record["run_id"], None)
    for model_id, (topic_name, name, record) in latest_event.items():
        if record["dataset_version_id"] not in orch.state(model_id).trained_versions:
            out.untrained.append(events.trigger_of(name, topic_name, record, to_millis(
                record["envelope"]["occurred_at"])))
    return out

