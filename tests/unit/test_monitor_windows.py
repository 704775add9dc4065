import math

import pytest

from flywheel_dev.harness.monitor import histogram_summary, metric_event
from flywheel_monitor.windows import Aggregate, DictWindowStore, window_index


def test_plain_observations_weigh_by_sample_count():
    agg = Aggregate().add(metric_event("m", 0.9, 300)).add(metric_event("m", 0.6, 100))
    assert agg.count == 400
    assert agg.mean == pytest.approx((0.9 * 300 + 0.6 * 100) / 400)
    assert (agg.low, agg.high) == (0.6, 0.9)


def test_summaries_merge_histograms_with_the_same_bounds():
    one = histogram_summary([10, 20, 70], [0.1, 0.5], 0.0, 1.0)
    agg = Aggregate().add(metric_event("m", 0.5, summary=one)).add(metric_event("m", 0.5, summary=one))
    assert agg.count == 200
    assert agg.buckets == [20, 40, 140]
    assert agg.value("count", 5) == 200.0
    assert agg.value("rate", 5) == 40.0


def test_histograms_over_different_bounds_are_dropped_not_guessed():
    agg = Aggregate().add(metric_event("m", 0.5, summary=histogram_summary([1, 1], [0.5], 0, 1)))
    agg.add(metric_event("m", 0.5, summary=histogram_summary([1, 1], [0.4], 0, 1)))
    agg.add(metric_event("m", 0.5, summary=histogram_summary([1, 1], [0.5], 0, 1)))
    assert agg.buckets is None and agg.mixed_bounds


def test_p95_interpolates_inside_the_bucket_holding_it():
    # 100 observations: 90 in [0, 0.1], 10 in (0.1, 1.0]; the 95th is half way through the second bucket.
    agg = Aggregate().add(metric_event("m", 0.1, summary=histogram_summary([90, 10], [0.1], 0.0, 1.0)))
    assert agg.value("p95", 1) == pytest.approx(0.1 + 0.9 * 0.5)


def test_p95_without_histogram_is_a_normal_approximation_within_min_max():
    agg = Aggregate().add(metric_event("m", 0.2, 50)).add(metric_event("m", 0.4, 50))
    assert agg.low <= agg.value("p95", 1) <= agg.high
    assert agg.value("p95", 1) > agg.mean


def test_empty_aggregate_has_no_value():
    assert math.isnan(Aggregate().value("mean", 1))
    with pytest.raises(ValueError, match="unknown aggregation"):
        Aggregate().value("median", 1)


def test_dict_store_keeps_windows_apart_and_forgets_old_ones():
    store = DictWindowStore(keep=2)
    for i in range(3):
        store.put("m|accuracy", 1000, i * 1000 + 5, Aggregate(count=i + 1))
    assert store.get("m|accuracy", 1000, 2999).count == 3
    assert store.get("m|accuracy", 1000, 1000).count == 2
    assert store.get("m|accuracy", 1000, 0) is None
    assert store.get("m|accuracy", 5000, 2999) is None
    assert window_index(2999, 1000) == 2
