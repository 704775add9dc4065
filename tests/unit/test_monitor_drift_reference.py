"""Drift on references with their true sample sizes: a reference of counts (what training registers) carries
its size; one of fractions (older registrations) falls back to the rule's reference_sample_size."""

import pytest

from flywheel_monitor.drift import assess, ks_binned, reference_size
from flywheel_monitor.rules import DriftRule


def test_the_reference_size_is_the_sum_of_its_counts_or_the_fallback_for_fractions():
    assert reference_size([30.0, 50.0, 20.0], 10_000) == 100
    assert reference_size([0.3, 0.5, 0.2], 10_000) == 10_000
    assert reference_size([0.1] * 10, 777) == 777  # 0.1 * 10 is not exactly 1.0


def test_a_small_reference_is_not_taken_for_ten_thousand_samples():
    live = [300, 500, 200]
    rule = DriftRule(min_samples=100, psi_threshold=0.05)
    counts, fractions = [20.0, 20.0, 10.0], [0.4, 0.4, 0.2]  # the same shares; 50 reference rows
    small, assumed = assess({"f": counts}, {"f": live}, rule), assess({"f": fractions}, {"f": live}, rule)
    assert small.features["f"].reference_samples == 50 and assumed.features["f"].reference_samples == 10_000
    assert small.features["f"].psi == pytest.approx(assumed.features["f"].psi)
    # With 50 reference rows the shift is within sampling noise; assuming 10,000 made it look significant.
    assert small.features["f"].p_value > 0.05 > assumed.features["f"].p_value
    assert small.drifted == () and assumed.drifted == ("f",)
    assert small.features["f"].p_value == pytest.approx(ks_binned(counts, live, 50, 1000)[1])
