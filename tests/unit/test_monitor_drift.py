import math

import numpy as np
import pytest
from scipy import stats

from flywheel_monitor.drift import adjust, assess, ks_binned, psi
from flywheel_monitor.rules import DriftRule


def test_psi_of_identical_histograms_is_zero_and_grows_with_the_shift():
    ref = [0.25, 0.25, 0.25, 0.25]
    assert psi(ref, [250, 250, 250, 250]) == pytest.approx(0.0)
    small, large = psi(ref, [0.3, 0.25, 0.25, 0.2]), psi(ref, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1 < 0.2 < large


def test_psi_matches_the_textbook_formula():
    ref, cur = [0.5, 0.5], [0.8, 0.2]
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected)


def test_binned_ks_agrees_with_scipy_on_data_that_lives_on_the_bucket_edges():
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 5, 4000), rng.integers(0, 5, 3000) + (rng.random(3000) < 0.1)
    ref, live = np.bincount(a, minlength=6), np.bincount(b, minlength=6)
    d, p = ks_binned(ref / ref.sum(), live, len(a), len(b))
    exact = stats.ks_2samp(a, b)
    assert d == pytest.approx(exact.statistic)
    assert p == pytest.approx(exact.pvalue, rel=0.5, abs=1e-6)


def test_large_samples_make_tiny_shifts_significant_but_psi_keeps_them_quiet():
    ref = [0.25, 0.25, 0.25, 0.25]
    live = [27_000, 25_000, 25_000, 23_000]
    rule = DriftRule(min_samples=100, reference_sample_size=1_000_000)
    d, p = ks_binned(ref, live, rule.reference_sample_size, sum(live))
    assert p < 0.01
    assert assess({"x": ref}, {"x": live}, rule).drifted == ()


def test_holm_is_never_stricter_than_bonferroni_and_counts_untested_features():
    ps = {"a": 0.001, "b": 0.004, "c": 0.03}
    holm, bonf = adjust(ps, 3, "holm"), adjust(ps, 3, "bonferroni")
    assert holm == pytest.approx({"a": 0.003, "b": 0.008, "c": 0.03})
    assert all(holm[k] <= bonf[k] for k in ps)
    assert adjust({"a": 0.001}, 10, "holm")["a"] == pytest.approx(0.01)


def test_assess_flags_a_shifted_feature_and_skips_small_or_misaligned_ones():
    rule = DriftRule(min_samples=500)
    ref = {"len": [0.25] * 4, "lang": [0.5, 0.5], "tiny": [0.5, 0.5]}
    live = {"len": [700, 100, 100, 100], "lang": [500, 500, 1], "tiny": [10, 300]}
    report = assess(ref, live, rule)
    assert report.drifted == ("len",) and report.worst == "len"
    assert set(report.features) == {"len"}
    assert report.features["len"].p_adjusted <= 1 and report.features["len"].psi > rule.psi_threshold
