"""The platform benchmark's bookkeeping: per-sample hops from arrival and envelope times, and the wait that
keeps samples one at a time (a sample's run must end before the next upload)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.platform import HOPS, RUN_ENDED, sample_hops, wait_run_ended
from flywheel_dev.timeline import Seen


def test_hops_from_arrivals_and_envelopes_add_up() -> None:
    # Upload returned at monotonic 100.000 s = wall 5000.000 s; ready produced at wall 5000.040, arrived at
    # monotonic 100.048; started produced at wall 5000.050, arrived at monotonic 100.060.
    hops = sample_hops(landed=100.0, landed_wall=5000.0, at_ready=100.048, at_started=100.060,
                       ready_produced=5000.040, started_produced=5000.050)
    assert set(hops) == set(HOPS)
    assert hops["landed_to_started"] == pytest.approx(60.0)
    assert hops["landed_to_dataset_ready"] == pytest.approx(48.0)
    assert hops["ready_to_started"] == pytest.approx(12.0)
    assert hops["landed_to_ready_produced"] == pytest.approx(40.0)
    assert hops["ready_produced_to_started_produced"] == pytest.approx(10.0)
    assert hops["started_produced_to_consumer"] == pytest.approx(10.0)
    produced_path = (hops["landed_to_ready_produced"] + hops["ready_produced_to_started_produced"]
                     + hops["started_produced_to_consumer"])
    assert produced_path == pytest.approx(hops["landed_to_started"])


class FakeTimeline:
    """The edge: a timeline that has already seen `events`."""

    def __init__(self, events: list[Seen]) -> None:
        self.events = events

    def matching(self, name: str, where: Any = lambda s: True) -> list[Seen]:
        return [s for s in self.events if s.name == name and where(s)]


def seen(name: str, model_id: str) -> Seen:
    return Seen(0.0, "training.run-x", name, {"model_id": model_id})


@pytest.mark.parametrize("name", RUN_ENDED)
def test_any_run_end_of_the_sample_releases_the_next_sample(name: str) -> None:
    timeline = FakeTimeline([seen("TrainingRunStarted", "m1"), seen(name, "m1")])
    ended = wait_run_ended(timeline, lambda s: s.get("model_id") == "m1", 1)  # type: ignore[arg-type]
    assert ended.name == name


def test_another_models_run_end_does_not_release_the_sample() -> None:
    timeline = FakeTimeline([seen("TrainingRunStarted", "m1"), seen("TrainingRunFailed", "m2")])
    with pytest.raises(TimeoutError, match="TrainingRunFailed"):
        wait_run_ended(timeline, lambda s: s.get("model_id") == "m1", 0)  # type: ignore[arg-type]
