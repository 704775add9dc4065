"""The trigger policy and run state machine as pure functions: examples, then properties over orderings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_orchestrator.core import Orchestration
from flywheel_orchestrator.domain import DatasetRef, Defer, Launch, Skip, Supersede, Trigger
from flywheel_orchestrator.policy import Kind, TriggerPolicy

M = "support-intent"
NOW = 1_700_000_000_000


def dataset(n: int, rows: int = 100, model: str = M) -> DatasetRef:
    return DatasetRef(model, f"ds{n}", f"s3://flywheel-data/manifests/{model}/ds{n}.json", rows,
                      ((f"datasets/{model}/v{n}/part-0.jsonl", f"etag{n}", rows),), NOW)


def new_data(n: int, event: str | None = None, rows: int = 100, model: str = M) -> Trigger:
    event = event or f"e-data-{n}"
    return Trigger(Kind.NEW_DATA, model, event, {"event_id": event, "correlation_id": f"c{n}"}, NOW,
                   dataset(n, rows, model))


def retrain(kind: Kind, event: str, model: str = M) -> Trigger:
    return Trigger(kind, model, event, {"event_id": event, "correlation_id": event}, NOW, evidence={"rule": "r"})


def orch(**policy: object) -> Orchestration:
    return Orchestration(TriggerPolicy(**{"debounce_s": 0, **policy}))


def kinds(decisions: list) -> list[str]:
    return [type(d).__name__ for d in decisions]


def test_new_data_launches_with_lineage_to_the_trigger():
    launch, = orch().on_trigger(new_data(1), NOW)
    assert isinstance(launch, Launch)
    assert launch.spec.dataset_version_id == "ds1" and launch.spec.kind is Kind.NEW_DATA
    assert launch.spec.trigger_event_id == "e-data-1" and launch.spec.correlation_id == "c1"


def test_same_event_twice_is_a_no_op():
    o = orch()
    o.on_trigger(new_data(1), NOW)
    skip, = o.on_trigger(new_data(1), NOW)
    assert isinstance(skip, Skip) and "duplicate" in skip.reason


def test_same_dataset_version_from_another_event_does_not_launch_again():
    o = orch()
    launch, = o.on_trigger(new_data(1), NOW)
    o.on_run_ended(M, launch.spec.run_id, NOW)
    skip, = o.on_trigger(new_data(1, event="replayed-by-reconciliation"), NOW)
    assert isinstance(skip, Skip) and "already trained" in skip.reason


def test_debounce_collapses_a_burst_into_one_run_on_the_newest():
    o = Orchestration(TriggerPolicy(debounce_s=2))
    decisions = [d for n in (1, 2, 3) for d in o.on_trigger(new_data(n), NOW + n)]
    assert kinds(decisions) == ["Defer", "Skip", "Defer", "Skip", "Defer"]
    assert o.on_tick(NOW + 1000) == []
    launch, = o.on_tick(NOW + 2003)
    assert launch.spec.dataset_version_id == "ds3"


def test_newer_version_supersedes_the_in_flight_run_then_launches():
    o = orch()
    first, = o.on_trigger(new_data(1), NOW)
    supersede, launch = o.on_trigger(new_data(2), NOW)
    assert isinstance(supersede, Supersede) and supersede.stale == first.spec and supersede.by == launch.spec
    assert list(o.state(M).in_flight) == [launch.spec.run_id]


def test_without_supersede_a_newer_version_waits_for_the_slot():
    o = orch(supersede=False)
    first, = o.on_trigger(new_data(1), NOW)
    defer, = o.on_trigger(new_data(2), NOW)
    assert isinstance(defer, Defer) and "max_concurrent_runs=1" in defer.reason
    launch, = o.on_run_ended(M, first.spec.run_id, NOW)
    assert launch.spec.dataset_version_id == "ds2"


def test_min_new_rows_counts_rows_the_last_run_did_not_see():
    o = orch(min_new_rows=50)
    first, = o.on_trigger(new_data(1, rows=100), NOW)
    o.on_run_ended(M, first.spec.run_id, NOW)
    skip, = o.on_trigger(new_data(2, rows=10), NOW)
    assert isinstance(skip, Skip) and skip.inputs == {"new_rows": 10, "min_new_rows": 50}


def test_metric_breach_right_after_registration_retrains_on_the_latest_version():
    o = orch()
    first, = o.on_trigger(new_data(1), NOW)
    o.on_run_ended(M, first.spec.run_id, NOW + 10)
    launch, = o.on_trigger(retrain(Kind.METRIC_BREACH, "breach-1"), NOW + 20)
    assert launch.spec.dataset_version_id == "ds1" and launch.spec.kind is Kind.METRIC_BREACH
    assert launch.spec.lineage == {"rule": "r"} and launch.spec.run_id != first.spec.run_id


def test_cooldown_skips_a_second_breach_and_says_until_when():
    o = orch(cooldown_s=600)
    o.on_trigger(new_data(1), NOW)
    run, = o.on_trigger(retrain(Kind.METRIC_BREACH, "b1"), NOW)  # covered: the NEW_DATA run is in flight
    assert isinstance(run, Skip) and "covered by in-flight run" in run.reason
    o.on_run_ended(M, next(iter(o.state(M).in_flight)), NOW)
    o.on_trigger(retrain(Kind.METRIC_BREACH, "b2"), NOW)
    o.on_run_ended(M, next(iter(o.state(M).in_flight)), NOW + 1000)
    skip, = o.on_trigger(retrain(Kind.METRIC_BREACH, "b3"), NOW + 60_000)
    assert isinstance(skip, Skip) and skip.reason.startswith("cooldown until 2023-11-14T22:23:20")
    assert skip.inputs["cooldown_s"] == 600


def test_manual_is_never_in_cooldown_and_disabled_kinds_are_skipped():
    o = orch(enabled_triggers=["NEW_DATA", "MANUAL"])
    o.on_trigger(new_data(1), NOW)
    o.on_run_ended(M, next(iter(o.state(M).in_flight)), NOW)
    skip, = o.on_trigger(retrain(Kind.DRIFT, "d1"), NOW)
    assert "disabled" in skip.reason
    first, = o.on_trigger(retrain(Kind.MANUAL, "m1"), NOW)
    o.on_run_ended(M, first.spec.run_id, NOW)
    second, = o.on_trigger(retrain(Kind.MANUAL, "m2"), NOW + 1)
    assert isinstance(second, Launch) and second.spec.run_id != first.spec.run_id  # attempt 2


def test_retrain_without_any_dataset_is_skipped_with_the_reason():
    skip, = orch().on_trigger(retrain(Kind.METRIC_BREACH, "b"), NOW)
    assert skip.reason == "no dataset version is known for this model"


# --- properties over event orderings -------------------------------------------------------------------
EVENTS = st.lists(st.one_of(
    st.tuples(st.just("data"), st.integers(1, 6), st.sampled_from([M, "other"])),
    st.tuples(st.sampled_from(["METRIC_BREACH", "DRIFT", "MANUAL"]), st.integers(1, 6), st.sampled_from([M, "other"])),
    st.tuples(st.just("end"), st.integers(0, 3), st.sampled_from([M, "other"])),
    st.tuples(st.just("tick"), st.integers(0, 3000), st.just(M)),
), max_size=40)
POLICIES = st.builds(TriggerPolicy, debounce_s=st.sampled_from([0, 1, 2]), min_new_rows=st.sampled_from([0, 1, 500]),
                     cooldown_s=st.sampled_from([0, 60]), max_concurrent_runs=st.integers(1, 3),
                     supersede=st.booleans())


def play(o: Orchestration, events: list, check) -> tuple[int, dict]:
    now, handled = NOW, {}
    for i, (what, n, model) in enumerate(events):
        now += 100
        if what == "data":
            trigger = new_data(n, event=f"d{i}", model=model)
        elif what == "end":
            running = sorted(o.state(model).in_flight)
            decisions = o.on_run_ended(model, running[n % len(running)], now) if running else []
            trigger = None
        elif what == "tick":
            now += n
            decisions, trigger = o.on_tick(now), None
        else:
            trigger = retrain(Kind(what), f"r{i}", model)
        if trigger is not None:
            decisions = o.on_trigger(trigger, now)
            handled[trigger.event_id] = decisions
        check(o)
    return now, handled


@settings(max_examples=300, deadline=None)
@given(EVENTS, POLICIES)
def test_never_more_concurrent_runs_than_the_policy_allows(events, policy):
    def within_limit(o: Orchestration) -> None:
        for model, state in o.models.items():
            assert len(state.in_flight) <= policy.max_concurrent_runs, (model, sorted(state.in_flight))

    play(Orchestration(policy), events, within_limit)


@settings(max_examples=300, deadline=None)
@given(EVENTS, POLICIES)
def test_never_a_lost_trigger(events, policy):
    """Every trigger gets a decision now; held ones launch once the window passes and the runs end."""
    o = Orchestration(policy)
    now, handled = play(o, events, lambda o: None)
    assert all(handled.values()), "a trigger got no decision"
    for _ in range(20):  # drain: end every run, let every debounce window pass
        now += 10_000
        for model, s in o.models.items():
            for run in sorted(s.in_flight):
                o.on_run_ended(model, run, now)
        o.on_tick(now)
    for model, s in o.models.items():
        assert s.pending is None and s.queued is None and not s.in_flight, model
        latest = s.latest
        if latest is not None and policy.min_new_rows <= latest.row_count:
            assert latest.dataset_version_id in s.trained_versions, "the newest data never got a run"


def test_the_demo_scenario_runs_with_the_default_policy():
    """v1 -> run -> registered; breach -> retrain; v2 while it runs -> supersede -> run on v2."""
    o, now = Orchestration(TriggerPolicy()), NOW
    assert kinds(o.on_trigger(new_data(1), now)) == ["Defer"]
    first, = o.on_tick(now + 2000)
    o.on_run_ended(M, first.spec.run_id, now + 40_000)
    retrain_run, = o.on_trigger(retrain(Kind.METRIC_BREACH, "breach"), now + 50_000)
    assert isinstance(retrain_run, Launch) and retrain_run.spec.dataset_version_id == "ds1"
    assert kinds(o.on_trigger(new_data(2), now + 55_000)) == ["Defer"]
    supersede, launch = o.on_tick(now + 57_000)
    assert supersede.stale == retrain_run.spec and launch.spec.dataset_version_id == "ds2"
