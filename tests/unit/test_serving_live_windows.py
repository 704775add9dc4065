"""Live metrics: the shared feature functions and bounds, the F1 math, serving's windows (feedback and served
traffic -> model.metrics-observed records), the emitter keeping what it could not send, and the monitor
reading those records (measured accuracy, drift on references with true sizes)."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import f1_score

from flywheel import features as fx
from flywheel.bootstrap import build_codec
from flywheel.events import now_ms
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import registration
from flywheel_monitor.core import MonitorCore
from flywheel_monitor.rules import RuleSet
from flywheel_monitor.validation import check_observation
from flywheel_monitor.windows import DictWindowStore
from flywheel_serving.core import Joined
from flywheel_serving.inputs import FeaturedPrediction, Profile
from flywheel_serving.live import MAX_CARRY_MS, LiveCounters, LiveEmitter, LiveWindows

T0 = 1_700_000_000_000
LABELS = ("billing", "shipping", "returns")
CODEC = build_codec(FlywheelSettings())


# -- shared features --------------------------------------------------------------------------------------
def test_text_features_count_words_and_unknown_words():
    vocabulary = frozenset({"where", "is", "my", "parcel"})
    assert fx.words("Where's my PARCEL, dude?") == ["where's", "my", "parcel", "dude"]
    assert fx.text_features("where is my parcel", vocabulary) == (4, 0.0)
    assert fx.text_features("where is my quantum blender", vocabulary) == (5, pytest.approx(0.4))
    assert fx.text_features("  ?! ", vocabulary) == (0, 0.0)


def test_buckets_take_a_value_equal_to_a_bound_and_one_more_bucket_is_open():
    h = fx.Histogram((0.0, 0.5, 1.0)).extend([0.0, 0.2, 0.5, 0.7, 1.0, 3.0])
    assert h.counts == [1, 2, 2, 1] and h.count == 6
    s = h.summary()
    assert (s["min"], s["max"], s["sum"]) == (0.0, 3.0, pytest.approx(5.4))
    assert s["bucket_bounds"] == [0.0, 0.5, 1.0] and sum(s["bucket_counts"]) == s["count"]


def test_vocabulary_keeps_the_most_frequent_words_ties_alphabetical():
    assert fx.vocabulary(["b a a", "c b a", "d"], size=3) == ["a", "b", "c"]


def test_cosine_distance():
    assert fx.cosine_distance([1, 0], [1, 0]) == pytest.approx(0.0)
    assert fx.cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert fx.cosine_distance([1, 0], [-1, 0]) == pytest.approx(2.0)


def test_prediction_bounds_give_one_bucket_per_label():
    assert fx.prediction_bounds(3) == (0.5, 1.5)
    assert fx.Histogram(fx.bounds_for(fx.PREDICTION, 3)).extend([0, 1, 1, 2]).counts == [1, 2, 1]


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_and_accuracy_agree_with_scikit_learn(seed):
    rng = random.Random(seed)
    pairs = [(rng.choice("abc"), rng.choice("abcd")) for _ in range(rng.randint(1, 60))]
    predicted, true = zip(*pairs, strict=True)
    present = sorted(set(predicted) | set(true))
    assert fx.macro_f1(pairs) == pytest.approx(f1_score(true, predicted, average="macro", labels=present))
    assert fx.accuracy(pairs) == pytest.approx(sum(p == t for p, t in pairs) / len(pairs))
    assert fx.macro_f1([]) == 0.0 and fx.macro_f1([("a", "a")]) == 1.0


def test_serving_and_training_share_bounds_and_pooling():
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "training"))
    import reference  # a script folder, not a package

    from flywheel_serving.inputs import mean_pool

    hidden, mask = torch.randn(3, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.allclose(reference.mean_pool(hidden, mask), mean_pool(hidden, mask))
    assert torch.allclose(mean_pool(hidden, mask)[2], hidden[2, 0])
    profile = Profile.of(list(LABELS), reference_of())
    assert profile.bounds[fx.TEXT_LENGTH] == fx.BOUNDS[fx.TEXT_LENGTH]
    assert profile.bounds[fx.PREDICTION] == fx.prediction_bounds(3)
    assert set(profile.bounds) == set(fx.INPUT_FEATURES) | set(fx.OUTPUT_FEATURES)


# -- serving's windows ------------------------------------------------------------------------------------
def reference_of(shift: float = 0.0, n: int = 400) -> fx.Reference:
    """A reference as training saves it (counts over the shared bounds), from synthetic traffic."""
    values = traffic(n, seed=1, shift=shift)
    histograms = {name: fx.histogram_entry(fx.Histogram(fx.bounds_for(name, 3)).extend(v))
                  for name, v in values.items()}
    return fx.Reference(LABELS, frozenset({"where", "is", "my", "parcel"}), (1.0, 0.0), histograms,
                        {"reference": n})


def traffic(n: int, seed: int, shift: float = 0.0) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {fx.TEXT_LENGTH: [float(max(1, round(rng.gauss(8 + 20 * shift, 2)))) for _ in range(n)],
            fx.OOV_RATE: [min(1.0, max(0.0, rng.gauss(0.05 + 0.5 * shift, 0.03))) for _ in range(n)],
            fx.CENTROID_DISTANCE: [max(0.0, rng.gauss(0.2 + 0.4 * shift, 0.05)) for _ in range(n)],
            fx.PREDICTION: [float(rng.choice((0, 0, 1, 2))) for _ in range(n)],
            fx.CONFIDENCE: [min(1.0, rng.uniform(0.4, 1.0)) for _ in range(n)]}


def answers(n: int, seed: int, profile: Profile, shift: float = 0.0) -> list[FeaturedPrediction]:
    v = traffic(n, seed, shift)
    return [FeaturedPrediction(LABELS[int(v[fx.PREDICTION][i])], v[fx.CONFIDENCE][i], int(v[fx.PREDICTION][i]),
                               int(v[fx.TEXT_LENGTH][i]), v[fx.OOV_RATE][i], v[fx.CENTROID_DISTANCE][i], profile)
            for i in range(n)]


def test_feedback_becomes_measured_accuracy_and_macro_f1_at_the_window_end():
    windows = LiveWindows(window_s=10, min_samples=4)
    pairs = (("billing", "billing"), ("shipping", "billing"), ("returns", "returns"), ("billing", "billing"))
    windows.joined(Joined("m", "v1", pairs[:2]), T0 + 1_000)
    windows.joined(Joined("m", "v1", pairs[2:]), T0 + 2_000)
    boundary = windows.next_boundary(T0 + 2_000)
    assert boundary % 10_000 == 0 and boundary > T0 + 2_000
    [closed] = windows.close(boundary)
    accuracy, f1 = closed.records
    assert accuracy["metric"] == "accuracy" and accuracy["value"] == 0.75 and accuracy["sample_count"] == 4
    assert accuracy["summary"]["bucket_counts"] == [1, 3] and accuracy["summary"]["sum"] == 3.0
    assert f1["metric"] == "macro_f1" and f1["value"] == pytest.approx(fx.macro_f1(pairs))
    assert accuracy["window_start"] == T0 + 1_000 and accuracy["window_end"] == boundary
    assert closed.first_seen is not None and windows.close(boundary + 10_000) == []


def test_versions_are_kept_apart_and_a_small_window_carries_over():
    windows = LiveWindows(window_s=10, min_samples=3)
    windows.joined(Joined("m", "v1", (("a", "a"),)), T0)
    windows.joined(Joined("m", "v2", (("a", "b"),) * 3), T0)
    boundary = windows.next_boundary(T0)
    [closed] = windows.close(boundary)
    assert {r["model_version"] for r in closed.records} == {"v2"}
    windows.joined(Joined("m", "v1", (("a", "a"), ("b", "a"))), boundary + 1)
    [carried] = windows.close(boundary + 10_000)
    assert carried.records[0]["window_start"] == T0 and carried.records[0]["sample_count"] == 3


def test_a_quiet_part_is_sent_after_max_carry_and_all_at_shutdown():
    windows = LiveWindows(window_s=10, min_samples=1000)
    windows.joined(Joined("m", "v1", (("a", "a"),)), T0)
    assert windows.close(T0 + 10_000) == []
    assert len(windows.close(T0 + MAX_CARRY_MS)) == 1
    windows.joined(Joined("m", "v1", (("a", "a"),)), T0 + MAX_CARRY_MS + 5)
    assert windows.close(T0 + MAX_CARRY_MS + 5) == []  # opened at the boundary: the next window's
    assert len(windows.close(T0 + MAX_CARRY_MS + 6, everything=True)) == 1


def test_served_traffic_becomes_feature_histograms_the_monitor_accepts():
    profile = Profile.of(list(LABELS), reference_of())
    windows = LiveWindows(window_s=10, min_samples=50)
    windows.served("m", "v1", answers(60, seed=2, profile=profile), T0)
    windows.served("m", "v1", [FeaturedPrediction("billing", 0.9)], T0)  # no features: the plain predictor
    [closed] = windows.close(windows.next_boundary(T0))
    by_metric = {r["metric"]: r for r in closed.records}
    assert set(by_metric) == {fx.FEATURE_PREFIX + n for n in (*fx.INPUT_FEATURES, *fx.OUTPUT_FEATURES)}
    for record in closed.records:
        summary = record["summary"]
        assert summary["count"] == record["sample_count"] >= 60
        assert summary["bucket_bounds"] == list(profile.bounds[record["metric"][len(fx.FEATURE_PREFIX):]])
        check_observation(record, T0 + 20_000)  # the monitor's validation
        assert CODEC.decode(CODEC.encode("ModelMetricsObserved", record)).record["metric"] == record["metric"]
    assert by_metric["feature:text_length"]["value"] == pytest.approx(sum(traffic(60, 2)[fx.TEXT_LENGTH]) / 60,
                                                                      rel=0.05)


def test_a_version_without_reference_reports_outputs_and_text_length_only():
    profile = Profile.of(list(LABELS), None)
    windows = LiveWindows(window_s=1, min_samples=1)
    windows.served("m", "v1", [FeaturedPrediction("billing", 0.9, 0, 3, math.nan, math.nan, profile)], T0)
    [closed] = windows.close(windows.next_boundary(T0))
    assert {r["metric"] for r in closed.records} == {"feature:prediction", "feature:confidence",
                                                     "feature:text_length"}


# -- the emitter ------------------------------------------------------------------------------------------
class FlakyPublisher:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.down = True

    def publish(self, topic: str, record: dict) -> None:
        if self.down:
            raise TimeoutError("broker down")
        self.sent.append(record)


def test_the_emitter_keeps_what_the_broker_refused_and_sends_it_in_order_later():
    windows = LiveWindows(window_s=1, min_samples=1)
    publisher, counters = FlakyPublisher(), LiveCounters(CollectorRegistry())
    emitter = LiveEmitter(windows, publisher, counters, clock=lambda: T0)
    windows.joined(Joined("m", "v1", (("a", "a"),)), T0 - 500)
    for closed in windows.close(T0):
        emitter._keep(closed)
    emitter.publish_pending()
    assert publisher.sent == [] and counters.events.labels("failed")._value.get() == 1
    publisher.down = False
    emitter.publish_pending()
    assert [r["metric"] for r in publisher.sent] == ["accuracy", "macro_f1"]
    assert counters.latency._sum.get() >= 0 and counters.events.labels("published")._value.get() == 2


# -- the monitor on serving's records ---------------------------------------------------------------------
RULES = RuleSet.model_validate({
    "rules": [{"name": "accuracy-low", "metric": "accuracy", "comparator": "lt", "threshold": 0.8,
               "window_s": 10, "min_samples": 20}],
    "drift": {"window_s": 10, "min_samples": 100, "reference_sample_size": 10_000}})


def monitor(reference: fx.Reference) -> MonitorCore:
    core = MonitorCore(RULES, DictWindowStore())
    core.register(registration("m", "v1", reference=reference.distribution(), at_ms=T0 - 60_000))
    return core


def feed(core: MonitorCore, records: list[dict]) -> list:
    return [t for r in records for t in core.observe(r).triggers]


def test_the_monitor_fires_on_measured_accuracy():
    windows = LiveWindows(window_s=10, min_samples=20)
    windows.joined(Joined("m", "v1", (("a", "a"),) * 14 + (("a", "b"),) * 10), T0)
    [closed] = windows.close(windows.next_boundary(T0))
    [trigger] = feed(monitor(reference_of()), closed.records)
    assert trigger.kind == "METRIC_BREACH" and trigger.observed_value == pytest.approx(14 / 24)


def test_drifted_inputs_fire_the_drift_rule_and_in_distribution_traffic_does_not():
    reference = reference_of()
    profile = Profile.of(list(LABELS), reference)
    calm, drifted = LiveWindows(10, 100), LiveWindows(10, 100)
    calm.served("m", "v1", answers(600, seed=3, profile=profile), T0)
    drifted.served("m", "v1", answers(600, seed=4, profile=profile, shift=1.0), T0)
    assert feed(monitor(reference), [r for c in calm.close(calm.next_boundary(T0)) for r in c.records]) == []
    triggers = feed(monitor(reference), [r for c in drifted.close(drifted.next_boundary(T0)) for r in c.records])
    [trigger] = triggers
    assert trigger.kind == "DRIFT" and trigger.metric.startswith(fx.FEATURE_PREFIX)
    assert trigger.statistics[f"reference_samples:{fx.TEXT_LENGTH}"] == 400  # the true size, not 10,000


def test_the_emitter_sends_at_each_boundary_and_flushes_what_is_left_at_stop():
    import asyncio

    async def scenario() -> list[dict]:
        windows = LiveWindows(window_s=0.05, min_samples=2)
        publisher = FlakyPublisher()
        publisher.down = False
        emitter = LiveEmitter(windows, publisher, LiveCounters(CollectorRegistry()))
        emitter.start()
        windows.joined(Joined("m", "v1", (("a", "a"), ("a", "b"))), now_ms())
        await asyncio.sleep(0.2)
        sent_at_boundary = len(publisher.sent)
        windows.joined(Joined("m", "v1", (("b", "b"),)), now_ms())  # below min_samples: only stop sends it
        await emitter.stop()
        assert sent_at_boundary == 2
        return publisher.sent

    sent = asyncio.run(scenario())
    assert [(r["metric"], r["sample_count"]) for r in sent] == [("accuracy", 2), ("macro_f1", 2),
                                                                  ("accuracy", 1), ("macro_f1", 1)]
