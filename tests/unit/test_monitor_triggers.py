from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_monitor.rules import Rule
from flywheel_monitor.triggers import RuleState, evaluate, reset_for_new_version, restore


def rule(**overrides) -> Rule:
    base = {"name": "acc", "metric": "accuracy", "comparator": "lt", "threshold": 0.8, "window_s": 1,
            "min_samples": 100, "consecutive_windows": 1, "hysteresis": 0.05, "cooldown_s": 0}
    return Rule.model_validate({**base, **overrides})


def run(r: Rule, steps, state=None) -> list[int]:
    """Feed (window, value, samples) steps; return the indexes of the steps that fired."""
    state = state or RuleState()
    fired = []
    for i, (window, value, samples) in enumerate(steps):
        at = window * r.window_ms + 500
        if evaluate(state, r, window, value, samples, at).fire:
            fired.append(i)
    return fired


def test_one_breach_fires_once_then_stays_quiet_while_breached():
    assert run(rule(), [(0, 0.9, 200), (1, 0.7, 50), (1, 0.7, 150), (1, 0.6, 300), (2, 0.6, 500)]) == [2]


def test_needs_the_minimum_samples_in_the_window():
    assert run(rule(), [(0, 0.1, 99), (1, 0.1, 99), (2, 0.1, 99)]) == []


def test_consecutive_windows_must_all_breach():
    r = rule(consecutive_windows=3)
    assert run(r, [(0, 0.7, 200), (1, 0.7, 200), (2, 0.9, 200), (3, 0.7, 200), (4, 0.7, 200)]) == []
    assert run(r, [(0, 0.7, 200), (1, 0.7, 200), (2, 0.7, 200)]) == [2]
    # a gap (a window with no events) breaks the streak
    assert run(r, [(0, 0.7, 200), (1, 0.7, 200), (3, 0.7, 200)]) == []


def test_recovery_past_the_hysteresis_band_rearms():
    steps = [(0, 0.7, 200), (1, 0.83, 200), (2, 0.7, 200), (3, 0.9, 200), (4, 0.7, 200)]
    assert run(rule(), steps) == [0, 4]


def test_cooldown_delays_the_next_trigger_even_after_recovery():
    r = rule(cooldown_s=10)
    steps = [(0, 0.7, 200), (1, 0.9, 200), (2, 0.7, 200), (12, 0.7, 200)]
    assert run(r, steps) == [0, 3]


def test_late_windows_are_ignored():
    state = RuleState()
    run(rule(), [(5, 0.9, 200)], state)
    assert run(rule(), [(4, 0.1, 1000)], state) == []


def test_restored_cooldown_blocks_a_duplicate_after_restart():
    r = rule(cooldown_s=60)
    state = RuleState()
    restore(state, triggered_at_ms=500)
    assert run(r, [(1, 0.7, 200), (2, 0.95, 200), (3, 0.7, 200)], state) == []


def test_a_new_version_starts_clean_but_ignores_older_observations():
    state = reset_for_new_version(registered_at_ms=2_000)
    assert run(rule(), [(1, 0.1, 500), (2, 0.7, 500)], state) == [1]


samples = st.integers(min_value=0, max_value=10_000)
values = st.floats(min_value=0, max_value=1, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), values, samples), max_size=60), st.integers(1, 10_000))
def test_never_fires_below_the_minimum_sample_size(steps, minimum):
    steps = sorted((w, v, min(n, minimum - 1)) for w, v, n in steps)
    assert run(rule(min_samples=minimum), steps) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.5, max_value=0.8 + 0.05 - 1e-6), min_size=1, max_size=100),
       st.integers(1, 3))
def test_flapping_inside_the_hysteresis_band_fires_at_most_once(flaps, per_window):
    # cooldown 0: only hysteresis stands between a flapping metric and a storm
    steps = [(i // per_window, v, 1000) for i, v in enumerate(flaps)]
    assert len(run(rule(), steps)) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values, samples), max_size=80))
def test_triggers_never_outnumber_recoveries_plus_one(steps):
    r = rule()
    seq = [(i, v, n) for i, (v, n) in enumerate(steps)]
    recoveries = sum(1 for _, v, n in seq if n >= r.min_samples and r.recovered(v))
    assert len(run(r, seq)) <= recoveries + 1
