import math
import tracemalloc

import pytest

from flywheel.bootstrap import build_codec
from flywheel.errors import InvalidEvent
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import histogram_summary, metric_event, registration
from flywheel_monitor.core import RETIRED_KEPT, UNWATCHED, MonitorCore
from flywheel_monitor.events import breach_id, retrain_requested
from flywheel_monitor.rules import DEFAULT_RULES, RuleSet
from flywheel_monitor.validation import TimeBounds, UnknownModel
from flywheel_monitor.windows import DictWindowStore

T0 = 1_700_000_000_000
RULES = RuleSet.model_validate(DEFAULT_RULES)


def core(rules: RuleSet = RULES) -> MonitorCore:
    eng = MonitorCore(rules, DictWindowStore())
    eng.register(registration("support-intent", "v1", at_ms=T0 - 60_000,
                              reference={"len": [0.25, 0.25, 0.25, 0.25]}))
    return eng


def stream(values, start=T0, step_ms=250, samples=200, version="v1"):
    return [metric_event("support-intent", v, samples, at_ms=start + i * step_ms, model_version=version)
            for i, v in enumerate(values)]


def triggers_of(eng, events):
    return [(e, t) for e in events for t in eng.observe(e).triggers]


def test_a_degrading_stream_triggers_once_with_the_event_that_tipped_it():
    eng = core()
    events = stream([0.93] * 20 + [0.62] * 60)
    fired = triggers_of(eng, events)
    assert len(fired) == 1
    cause, trigger = fired[0]
    assert trigger.kind == "METRIC_BREACH" and trigger.rule.name == "accuracy-low"
    assert trigger.observed_value < 0.8 and trigger.sample_size >= 500
    assert trigger.window_start_ms <= cause["window_end"] < trigger.window_end_ms


def test_a_healthy_or_recovering_stream_does_not_trigger():
    eng = core()
    assert triggers_of(eng, stream([0.93] * 40 + [0.85] * 20 + [0.91] * 40)) == []


def test_a_new_version_rearms_the_rule_but_keeps_its_cooldown():
    eng = core()
    first = stream([0.6] * 20)
    assert len(triggers_of(eng, first)) == 1
    assert eng.register(registration("support-intent", "v2", at_ms=T0 + 10_000))
    assert not eng.register(registration("support-intent", "v2", at_ms=T0 + 11_000))  # a duplicate
    # v2 starts over (no hysteresis carried from v1) but the rule asked 20 s ago: cooldown_s is 300
    assert triggers_of(eng, stream([0.6] * 20, start=T0 + 20_000, version="v2")) == []
    assert len(triggers_of(eng, stream([0.6] * 20, start=T0 + 310_000, version="v2"))) == 1


def test_a_stale_registration_does_not_wipe_the_current_versions_state():
    """A redelivered registration of a replaced version, or one older than the current one, changes nothing:
    it must neither make the old version current again nor re-arm a rule that is still breaching."""
    eng = core()
    assert eng.register(registration("support-intent", "v2", at_ms=T0 - 30_000))
    assert len(triggers_of(eng, stream([0.6] * 20, version="v2"))) == 1
    assert not eng.register(registration("support-intent", "v1", at_ms=T0 - 60_000))  # v1 again (redelivery)
    assert not eng.register(registration("support-intent", "v0", at_ms=T0 - 90_000))  # older than v2, late
    assert eng.models["support-intent"].version == "v2"
    assert eng.states[("support-intent", "accuracy-low")].breaching
    late = [eng.observe(e) for e in stream([0.6] * 4, version="v0")]
    assert {o.ignored for o in late} == {"replaced_version"}
    # still the same breach: the request was sent, nothing more until it recovers and the cooldown ends
    assert triggers_of(eng, stream([0.6] * 40, start=T0 + 6_000, version="v2")) == []


def test_snapshot_and_install_carry_hysteresis_and_cooldown_to_another_worker():
    first = core()
    assert len(triggers_of(first, stream([0.6] * 20))) == 1
    doc = first.snapshot("support-intent")
    assert doc["rules"]["accuracy-low"]["breaching"] and doc["version"] == "v1"
    second = MonitorCore(RULES, DictWindowStore())  # another worker: knows nothing of the model
    second.install(doc)
    assert second.models["support-intent"].version == "v1"
    # the same breach goes on with this worker: no second request
    assert triggers_of(second, stream([0.6] * 40, start=T0 + 6_000)) == []
    # recovered, then breached again inside the cooldown (set by the first worker): still nothing
    assert triggers_of(second, stream([0.93] * 20, start=T0 + 20_000)) == []
    assert not second.snapshot("support-intent")["rules"]["accuracy-low"]["breaching"]
    assert triggers_of(second, stream([0.6] * 20, start=T0 + 30_000)) == []
    assert len(triggers_of(second, stream([0.6] * 20, start=T0 + 310_000))) == 1


def test_observations_of_a_replaced_version_do_not_feed_the_new_one():
    """During a rollout, servers still on v1 say nothing about v2: their windows must not trip v2's rules."""
    eng = core()
    assert eng.register(registration("support-intent", "v2", at_ms=T0 - 1_000))
    stale = [eng.observe(e) for e in stream([0.6] * 40, version="v1")]
    assert {o.ignored for o in stale} == {"replaced_version"} and not any(o.triggers for o in stale)
    assert len(triggers_of(eng, stream([0.6] * 20, start=T0 + 20_000, version="v2"))) == 1


def test_restored_retrain_request_blocks_a_duplicate_after_restart():
    before = core()
    cause, trigger = triggers_of(before, stream([0.6] * 20))[0]
    record = retrain_requested(trigger, cause["envelope"], RULES, "monitor")
    after = core()
    after.restore_trigger(record)
    assert triggers_of(after, stream([0.6] * 20, start=T0 + 5_000)) == []


@pytest.mark.parametrize(("change", "reason"), [
    ({"value": math.nan}, "finite"), ({"value": math.inf}, "finite"), ({"sample_count": -3}, "negative"),
    ({"summary": histogram_summary([5, -1], [0.5], 0, 1)}, "negative"),
    ({"summary": {**histogram_summary([5, 5], [0.5], 0, 1), "count": 11}}, "add up"),
    ({"summary": {**histogram_summary([5, 5], [0.5], 0, 1), "bucket_counts": [10]}}, "one more"),
    ({"window_start": T0 + 1}, "before window_start"),
])
def test_bad_observations_are_refused_with_the_reason(change, reason):
    with pytest.raises(InvalidEvent, match=reason):
        core().observe({**metric_event("support-intent", 0.9, at_ms=T0), **change})


def test_metrics_of_an_unknown_model_are_refused():
    with pytest.raises(UnknownModel, match="no-such-model"):
        core().observe(metric_event("no-such-model", 0.9))


def test_drift_triggers_with_its_statistics():
    eng = core()
    shifted = histogram_summary([400, 50, 30, 20], [1, 2, 3], 0, 4)
    events = [metric_event("support-intent", 1.0, at_ms=T0 + i * 100, metric="feature:len", summary=shifted)
              for i in range(5)]
    fired = triggers_of(eng, events)
    assert len(fired) == 1
    trigger = fired[0][1]
    assert trigger.kind == "DRIFT" and trigger.metric == "feature:len"
    assert trigger.statistics["psi:len"] > 0.2 and trigger.statistics["ks_p_adjusted:len"] < 0.01


def test_retrain_request_carries_the_evidence_and_encodes():
    eng = core()
    cause, trigger = triggers_of(eng, stream([0.6] * 20))[0]
    record = retrain_requested(trigger, cause["envelope"], RULES, "monitor")
    assert record["envelope"]["causation_id"] == cause["envelope"]["event_id"]
    assert record["envelope"]["correlation_id"] == breach_id(trigger) != cause["envelope"]["correlation_id"]
    assert (record["metric"], record["aggregation"], record["comparator"], record["threshold"]) == \
        ("accuracy", "mean", "lt", 0.8)
    assert record["observed_value"] < 0.8 and record["sample_size"] >= 500
    assert "accuracy-low" in record["detail"]
    codec = build_codec(FlywheelSettings())
    decoded = codec.decode(codec.encode("RetrainRequested", record, check=True))
    assert decoded.record["trigger"] == "METRIC_BREACH"


def clocked(now_ms: int) -> MonitorCore:
    """A core whose clock reads `now_ms`, with the default bounds (5 min of skew, one-day windows)."""
    eng = MonitorCore(RULES, DictWindowStore(), clock=lambda: now_ms)
    eng.register(registration("support-intent", "v1", at_ms=T0 - 60_000))
    return eng


def test_a_window_end_far_ahead_of_the_clock_is_refused_and_changes_nothing():
    """One event from an hour in the future used to move every rule's current window there, so the honest
    stream after it was all 'late' and a real breach never triggered."""
    eng = clocked(T0 + 60_000)
    with pytest.raises(InvalidEvent, match=r"window_end is 3\d\d\d s ahead of the monitor's clock"):
        eng.observe(metric_event("support-intent", 0.1, 200, at_ms=T0 + 3_600_000))
    assert len(triggers_of(eng, stream([0.6] * 20))) == 1


def test_a_window_end_within_the_allowed_skew_is_accepted():
    eng = MonitorCore(RULES, DictWindowStore(), clock=lambda: T0, bounds=TimeBounds(max_skew_ms=10_000))
    eng.register(registration("support-intent", "v1", at_ms=T0 - 60_000))
    assert eng.observe(metric_event("support-intent", 0.9, at_ms=T0 + 10_000)).ignored is None
    with pytest.raises(InvalidEvent, match="ahead of the monitor's clock"):
        eng.observe(metric_event("support-intent", 0.9, at_ms=T0 + 10_001))


def test_an_absurdly_long_window_is_refused():
    eng = clocked(T0)
    with pytest.raises(InvalidEvent, match=r"the window is 172800 s long \(at most 86400 s"):
        eng.observe(metric_event("support-intent", 0.9, at_ms=T0, window_ms=2 * 86_400_000))


def test_metric_names_no_rule_watches_are_ignored_without_growing_memory():
    """Producers choose metric names: 20,000 made-up ones must not leave 20,000 entries behind."""
    eng = clocked(T0)

    def made_up(n: int) -> None:
        for i in range(n):
            assessment = eng.observe(metric_event("support-intent", 0.9, at_ms=T0, metric=f"made-up-{i}"))
            assert assessment.ignored == UNWATCHED and not assessment.evaluations

    made_up(1_000)  # warm-up: interned strings, caches of the interpreter
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made_up(20_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 20,000 unwatched metric names"
    assert eng.observe(metric_event("support-intent", 0.9, at_ms=T0)).evaluations  # watched ones still fold


def test_features_without_a_reference_are_unwatched():
    eng = core()  # its reference has the feature "len" only
    summary = histogram_summary([5, 5], [0.5], 0, 1)
    unknown = eng.observe(metric_event("support-intent", 1.0, at_ms=T0, metric="feature:other", summary=summary))
    assert unknown.ignored == UNWATCHED
    known = eng.observe(metric_event("support-intent", 1.0, at_ms=T0, metric="feature:len",
                                     summary=histogram_summary([5, 5, 5, 5], [1, 2, 3], 0, 4)))
    assert known.ignored is None  # folded into the drift window (too few samples for a verdict yet)


def test_replaced_versions_are_remembered_up_to_a_bound():
    eng = core()
    for n in range(2, 200):
        eng.register(registration("support-intent", f"v{n}", at_ms=T0 + n))
    assert len(eng.retired["support-intent"]) == RETIRED_KEPT
    assert eng.observe(metric_event("support-intent", 0.9, at_ms=T0 + 1_000, model_version="v198")).ignored == \
        "replaced_version"


def test_restoring_a_trigger_of_a_rule_no_longer_configured_keeps_no_state():
    eng = core()
    record = {"model_id": "support-intent", "rule": "a-rule-since-removed", "window_end": T0,
              "envelope": {"occurred_at": T0}}
    eng.restore_trigger(record)
    assert ("support-intent", "a-rule-since-removed") not in eng.states
