"""The scale-out benchmark's pure parts: the partition override, balanced models, the section it writes."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import scale
from flywheel.catalogue import DEFAULT_MODEL_PARTITIONS, model_partitions
from flywheel_orchestrator.ownership import partition_of

pytestmark = pytest.mark.unit


def test_the_model_partition_count_is_4_unless_the_deployment_says_otherwise():
    assert model_partitions({}) == DEFAULT_MODEL_PARTITIONS == 4
    assert model_partitions({"FLYWHEEL_MODEL_PARTITIONS": " 8 "}) == 8
    for bad in ("0", "-1", "eight", "1.5", "1000"):
        with pytest.raises(ValueError, match="FLYWHEEL_MODEL_PARTITIONS"):
            model_partitions({"FLYWHEEL_MODEL_PARTITIONS": bad})


def test_models_are_spread_evenly_over_the_partitions_and_interleaved():
    models = scale.balanced_models("m", 64, partitions=8)
    assert len(set(models)) == 64
    assert Counter(partition_of(m, 8) for m in models) == {p: 8 for p in range(8)}
    assert [partition_of(m, 8) for m in models[:8]] == list(range(8))  # every partition from the start


def _run(workers: int, rate: float) -> dict:
    return {"workers": workers, "events": 100, "rate": rate, "span_s": 100 / rate, "cpu_s": [1.0] * workers, "idle_pct": [5.0] * workers,
            "stack_cpu_s": 2.0, "counts": [100 // workers] * workers, "produce_s": 0.5}


def test_the_section_gives_ratios_against_one_worker_and_a_verdict_per_goal():
    measured = {"cpus": 2, "load": [1.5, 2.5],
                "monitor": [_run(1, 100.0), _run(2, 190.0), _run(4, 300.0)],
                "orchestrator": [_run(1, 10.0), _run(2, 12.0), _run(4, 12.0)]}
    monitor, orchestrator = scale.results(measured)
    assert [round(r["ratio"], 2) for r in monitor.rows] == [1.0, 1.9, 3.0]
    assert monitor.verdict == "met at 2: 1.90x; not met at 4: 3.00x"
    assert orchestrator.verdict.startswith("not met at 2: 1.20x")
    assert monitor.rows[2]["CPU s per worker"] == "1.0 / 1.0 / 1.0 / 1.0"
    assert monitor.rows[2]["idle CPU % per worker"] == "5 / 5 / 5 / 5"
    assert monitor.rows[2]["CPU ms per event: workers"] == 40.0 and monitor.rows[2]["broker + moto"] == 20.0
    notes = " ".join(monitor.notes)
    assert "2 CPUs" in notes and "cannot be met" in notes and "load average 1.50 before" in notes
