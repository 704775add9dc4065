"""The training-data policy (docs/decisions/0012): which dataset versions a run trains on. Pure."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import DatasetRef, Launch, RunSpec, Trigger
from flywheel_orchestrator.policy import Kind, TriggerPolicy, resolve_policies
from flywheel_orchestrator.settings import OrchestratorSettings
from flywheel_orchestrator.statestore import Snapshot, state_from_dict, state_to_dict
from flywheel_orchestrator.trainingdata import (
    FEEDBACK_VERSION_PREFIX,
    MAX_FEEDBACK_KEPT,
    TrainingDataPolicy,
    choose,
    is_feedback,
    remember,
)
from flywheel_orchestrator.trainingset import compose

M = "support-intent"
NOW = 1_700_000_000_000


def ds(name: str, rows: int = 100, landed: int = NOW) -> DatasetRef:
    return DatasetRef(
        M,
        f"id-{name}",
        f"s3://flywheel-data/manifests/{M}/id-{name}.json",
        rows,
        ((f"datasets/{M}/{name}/part-0000.jsonl", f"etag-{name}", rows),),
        landed,
        prefix=f"datasets/{M}/{name}/",
    )


def ids(chosen) -> list[str]:
    return [d.dataset_version_id.removeprefix("id-") for d in chosen]


def test_a_version_is_feedback_by_its_layout_name_as_the_harvest_writes_it():
    assert is_feedback(ds("feedback-20261128T050000-local"))
    assert not is_feedback(ds("v1")) and not is_feedback(ds("my-feedback-v2"))
    assert not is_feedback(DatasetRef(M, "x", "s3://b/m.json", 1))  # no prefix known (old state): base


def test_default_is_the_newest_base_plus_the_feedback_after_it():
    base, state = None, []
    for name in ("v1", "feedback-a", "v2", "feedback-b", "feedback-c"):
        base, state = remember(base, state, ds(name))
    assert base.dataset_version_id == "id-v2" and ids(state) == ["feedback-b", "feedback-c"]
    assert ids(choose(TrainingDataPolicy(), ds("feedback-c"), base, state, NOW)) == [
        "v2",
        "feedback-b",
        "feedback-c",
    ]


def test_a_base_version_trains_alone_and_latest_keeps_the_old_behaviour():
    base, fb = ds("v1"), [ds("feedback-a")]
    assert ids(choose(TrainingDataPolicy(), ds("v2"), base, fb, NOW)) == ["v2"]
    latest = TrainingDataPolicy(base="latest")
    assert ids(choose(latest, ds("feedback-a"), base, fb, NOW)) == ["feedback-a"]


def test_window_in_versions_keeps_the_newest_and_always_the_run_s_own_version():
    base, fb = ds("v1"), [ds(f"feedback-{i}") for i in range(5)]
    chosen = choose(TrainingDataPolicy(feedback_window_versions=2), fb[-1], base, fb, NOW)
    assert ids(chosen) == ["v1", "feedback-3", "feedback-4"]
    only_own = choose(TrainingDataPolicy(feedback_window_versions=1), fb[2], base, fb, NOW)
    assert ids(only_own) == ["v1", "feedback-0", "feedback-1", "feedback-2"][:1] + ["feedback-2"]


def test_window_in_time_leaves_out_feedback_that_landed_too_long_ago():
    base = ds("v1", landed=NOW - 10 * 86_400_000)  # the base is never aged out
    fb = [ds("feedback-old", landed=NOW - 7200_000), ds("feedback-new", landed=NOW - 60_000)]
    chosen = choose(TrainingDataPolicy(feedback_window_s=3600), ds("feedback-now"), base, fb, NOW)
    assert ids(chosen) == ["v1", "feedback-new", "feedback-now"]


def test_max_rows_drops_the_oldest_feedback_first_and_never_the_base_or_the_newest():
    base, fb = ds("v1", rows=400), [ds(f"feedback-{i}", rows=100) for i in range(4)]
    chosen = choose(TrainingDataPolicy(max_rows=650), fb[-1], base, fb, NOW)
    assert ids(chosen) == ["v1", "feedback-2", "feedback-3"]
    tight = choose(TrainingDataPolicy(max_rows=10), fb[-1], base, fb, NOW)
    assert ids(tight) == ["v1", "feedback-3"]  # the cap cannot cut further without cutting the run's own data


def test_only_feedback_known_trains_on_the_feedback_window():
    base, fb = remember(None, [], ds("feedback-a"))
    base, fb = remember(base, fb, ds("feedback-b"))
    assert base is None and ids(choose(TrainingDataPolicy(), ds("feedback-b"), base, fb, NOW)) == [
        "feedback-a",
        "feedback-b",
    ]


def test_feedback_kept_is_bounded_and_a_repeated_version_is_kept_once():
    base, fb = ds("v1"), []
    for i in range(MAX_FEEDBACK_KEPT + 5):
        base, fb = remember(base, fb, ds(f"feedback-{i}"))
    base, fb = remember(base, fb, ds(f"feedback-{MAX_FEEDBACK_KEPT + 4}"))
    assert len(fb) == MAX_FEEDBACK_KEPT and ids(fb)[-1] == f"feedback-{MAX_FEEDBACK_KEPT + 4}"


def test_policy_is_validated_and_overridable_per_model_field_by_field():
    with pytest.raises(ValidationError):
        TrainingDataPolicy(feedback_window_versions=0)
    with pytest.raises(ValidationError):
        TrainingDataPolicy(base="oldest")
    default = TriggerPolicy(training_data=TrainingDataPolicy(max_rows=2000))
    per_model = resolve_policies(default, {M: {"training_data": {"feedback_window_versions": 3}}})
    assert per_model[M].training_data == TrainingDataPolicy(max_rows=2000, feedback_window_versions=3)
    settings = OrchestratorSettings(model_policies={M: {"training_data": {"base": "latest"}}})
    assert settings.policies()[M].training_data.base == "latest"
    with pytest.raises(ValidationError, match="max_rows"):
        OrchestratorSettings(model_policies={M: {"training_data": {"max_rows": -1}}})


# --- the decision carries the set; the state keeps what the next decision needs ---------------------------


def trigger(dataset: DatasetRef | None, kind: Kind = Kind.NEW_DATA, event: str = "") -> Trigger:
    event = event or f"e-{dataset.dataset_version_id if dataset else kind}"
    return Trigger(kind, M, event, {"event_id": event, "correlation_id": event}, NOW, dataset)


def launched(decisions: list) -> RunSpec:
    return next(d for d in decisions if isinstance(d, Launch)).spec


def test_a_feedback_version_launches_a_run_on_base_plus_feedback_and_a_breach_retrains_on_the_same_set():
    o = Orchestration(TriggerPolicy(debounce_s=0, supersede=False, max_concurrent_runs=4))
    first = launched(o.on_trigger(trigger(ds("v1")), NOW))
    assert first.training_version_ids == ["id-v1"]
    o.on_run_ended(M, first.run_id, NOW)
    run = launched(o.on_trigger(trigger(ds("feedback-a")), NOW))
    assert run.dataset_version_id == "id-feedback-a"
    assert run.training_data == (
        ("id-v1", ds("v1").manifest_uri),
        ("id-feedback-a", ds("feedback-a").manifest_uri),
    )
    o.on_run_ended(M, run.run_id, NOW)
    breach = launched(o.on_trigger(trigger(None, Kind.METRIC_BREACH, "breach-1"), NOW))
    o.on_run_ended(M, breach.run_id, NOW)
    again = launched(o.on_trigger(trigger(None, Kind.MANUAL, "manual-1"), NOW))
    assert breach.training_version_ids == again.training_version_ids == ["id-v1", "id-feedback-a"]
    assert len({run.run_id, breach.run_id, again.run_id}) == 3  # distinct run ids, so distinct seeds


def test_feedback_queues_instead_of_superseding():
    """Default policy (supersede on, one run at a time): a feedback version waits for the running run and the
    next run takes every feedback version in the window; a base version still supersedes."""
    from flywheel_orchestrator.domain import Defer, Supersede

    o = Orchestration(TriggerPolicy(debounce_s=0))
    base = launched(o.on_trigger(trigger(ds("v1")), NOW))
    o.on_run_ended(M, base.run_id, NOW)
    running = launched(o.on_trigger(trigger(ds("feedback-a")), NOW))
    for name in ("feedback-b", "feedback-c"):
        decisions = o.on_trigger(trigger(ds(name)), NOW)
        assert not [d for d in decisions if isinstance(d, (Supersede, Launch))], decisions
        assert [d for d in decisions if isinstance(d, Defer)]
    after = launched(o.on_run_ended(M, running.run_id, NOW))
    assert after.training_version_ids == ["id-v1", "id-feedback-a", "id-feedback-b", "id-feedback-c"]
    superseding = o.on_trigger(trigger(ds("v2")), NOW)
    assert [d.stale.run_id for d in superseding if isinstance(d, Supersede)] == [after.run_id]
    assert launched(superseding).training_version_ids == ["id-v2"]


def test_the_state_document_keeps_the_base_and_feedback_across_a_reload():
    o = Orchestration(TriggerPolicy(debounce_s=0, max_concurrent_runs=4, supersede=False))
    for name in ("v1", "feedback-a", "feedback-b"):
        o.on_trigger(trigger(ds(name)), NOW)
    doc = Snapshot(M, o.state(M)).to_dict(NOW)
    st = Snapshot.from_dict(doc).state
    assert st.base.dataset_version_id == "id-v1" and ids(st.feedback) == ["feedback-a", "feedback-b"]
    assert {k for k, _ in st.trained_objects} >= {f"datasets/{M}/v1/part-0000.jsonl"}
    spec = next(iter(st.in_flight.values()))
    assert spec.training_versions  # specs keep their set through the document


def test_a_state_document_from_before_the_policy_takes_its_latest_base_version_as_the_base():
    o = Orchestration(TriggerPolicy(debounce_s=0))
    o.on_trigger(trigger(ds("v1")), NOW)
    old = state_to_dict(o.state(M))
    old.pop("base"), old.pop("feedback")
    assert state_from_dict(old).base.dataset_version_id == "id-v1"
    o.on_trigger(trigger(ds("feedback-a")), NOW)
    old = state_to_dict(o.state(M))
    old.pop("base"), old.pop("feedback")
    assert state_from_dict(old).base is None  # unknown: the next base version sets it


def manifest(
    name: str, rows: int, reader: dict | None = None, bucket: str = "flywheel-data"
) -> tuple[str, dict]:
    d = ds(name, rows)
    return d.manifest_uri, {
        "dataset_version_id": d.dataset_version_id,
        "bucket": bucket,
        "prefix": d.prefix,
        "objects": [
            {"key": d.objects[0][0], "etag": d.objects[0][1], "rows": rows},
            {"key": d.prefix + "_SUCCESS", "etag": "e", "rows": 0},
        ],
        "row_count": rows,
        "reader": reader,
    }


def test_compose_lists_every_version_s_objects_with_their_pins_and_the_total_rows():
    composed = compose("fw-run", M, [manifest("v1", 400), manifest("feedback-a", 480)])
    assert [o["key"] for o in composed["objects"]] == [
        f"datasets/{M}/v1/part-0000.jsonl",
        f"datasets/{M}/feedback-a/part-0000.jsonl",
    ]
    assert composed["row_count"] == 880 and composed["bucket"] == "flywheel-data"
    assert [(v["dataset_version_id"], v["feedback"], v["row_count"]) for v in composed["versions"]] == [
        ("id-v1", False, 400),
        ("id-feedback-a", True, 480),
    ]
    assert composed["objects"][1]["etag"] == "etag-feedback-a"


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ({"reader": {"label_column": "intent"}}, "different reader rules"),
        ({"bucket": "elsewhere"}, "different buckets"),
    ],
)
def test_compose_refuses_versions_that_cannot_be_read_as_one_set(other, why):
    uri, second = manifest("feedback-a", 10)
    with pytest.raises(Exception, match=why):
        compose("fw-run", M, [manifest("v1", 10), (uri, {**second, **other})])


def test_the_feedback_name_is_the_one_serving_s_harvest_writes():
    from flywheel_serving.harvest import VERSION_PREFIX, version_name

    assert FEEDBACK_VERSION_PREFIX == VERSION_PREFIX
    assert is_feedback(ds(version_name(NOW, "serving-0")))
