"""Prometheus metrics the monitor exports on the Faust web port (/metrics).

Labels are bounded: event and status come from fixed sets, rule from the validated rule set, and model from
registered models, capped by settings.metrics_max_models (the rest share model="_other").
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

OTHER = "_other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PIPELINE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

EVENTS = Counter("flywheel_monitor_events_total", "Events consumed by the monitor", ["event"])
OBSERVATIONS = Counter("flywheel_monitor_observations_total",
                       "Model observations folded into windows (sum of sample counts)", ["model"])
WINDOW_VALUE = Gauge("flywheel_monitor_window_value", "Latest windowed aggregate a rule evaluated",
                     ["model", "rule"])
WINDOW_SAMPLES = Gauge("flywheel_monitor_window_samples", "Samples behind the latest evaluated window",
                       ["model", "rule"])
THRESHOLD = Gauge("flywheel_monitor_rule_threshold", "Threshold of each rule", ["model", "rule"])
BREACHES = Counter("flywheel_monitor_breaches_total", "Rule evaluations that breached the threshold",
                   ["model", "rule"])
TRIGGERS = Counter("flywheel_monitor_retrain_triggers_total", "RetrainRequested events emitted",
                   ["model", "rule", "trigger"])
IGNORED = Counter("flywheel_monitor_observations_ignored_total",
                  "Metric events not folded into any window, by reason (replaced_version, unwatched_metric)",
                  ["reason"])
PUBLISH_RETRIES = Counter("flywheel_monitor_publish_retries_total",
                          "Failed publishes retried (the stream waits at the record meanwhile), by topic",
                          ["topic"])
FENCED = Counter("flywheel_monitor_state_fenced_total",
                 "Rule-state writes refused because another worker wrote the model's state first (its state adopted)")
STATE_RETRIES = Counter("flywheel_monitor_state_retries_total",
                        "Loads or saves of a model's rule state in S3 that failed and were retried")
KNOWN_MODELS = Gauge("flywheel_monitor_known_models", "Models with a registered version")
PROCESSING = Histogram("flywheel_monitor_processing_seconds", "Time to decode, window and evaluate one event",
                       ["event"], buckets=LATENCY_BUCKETS)
BREACH_TO_TRIGGER = Histogram(
    "flywheel_monitor_breach_to_trigger_seconds",
    "From the tipping metric event's occurred_at to its RetrainRequested being sent", buckets=LATENCY_BUCKETS)

RUNS = Counter("flywheel_training_runs_total", "Training run events seen, by status", ["status"])
RUN_DURATION = Histogram("flywheel_training_run_duration_seconds", "Training run durations, by outcome",
                         ["status"], buckets=PIPELINE_BUCKETS)
DATA_TO_TRAINING = Histogram("flywheel_training_data_to_start_seconds",
                             "From data landing in S3 to its training run starting", buckets=PIPELINE_BUCKETS)
REGISTRATIONS = Counter("flywheel_model_versions_registered_total", "Model versions registered")


class ModelLabels:
    """Caps the model label: the first `limit` models get their own series."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, model_id: str) -> str:
        if model_id in self._seen:
            return model_id
        if len(self._seen) < self.limit:
            self._seen.add(model_id)
            return model_id
        return OTHER


class Children:
    """Labelled children of one metric, resolved once per label values (`labels()` is a lock and a dict walk).

    Bounded like the labels themselves; a child stays valid for the life of its metric.
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


class RuleSeries:
    """The (model, rule) series one evaluation updates, resolved once; the threshold is set when created."""

    __slots__ = ("value", "samples", "_labels", "_breaches")

    def __init__(self, model: str, rule: str, threshold: float) -> None:
        self.value = WINDOW_VALUE.labels(model, rule)
        self.samples = WINDOW_SAMPLES.labels(model, rule)
        THRESHOLD.labels(model, rule).set(threshold)
        self._labels = (model, rule)
        self._breaches: Any = None  # created on the first breach, as before: no zero series until then

    def breached(self) -> None:
        if self._breaches is None:
            self._breaches = BREACHES.labels(*self._labels)
        self._breaches.inc()
