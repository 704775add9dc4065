"""Every Prometheus metric of serving, in a registry of its own (one per app), exported on `/metrics`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64, 128)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("flywheel_serving_requests_total", "Prediction requests by model, protocol and "
                                "HTTP status.", ["model", "protocol", "code"], registry=r)
        self.latency = Histogram("flywheel_serving_request_seconds", "Prediction request latency, parse to "
                                 "response.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("flywheel_serving_predictions_total", "Texts classified, by model and label.",
                                   ["model", "version", "label"], registry=r)
        self.batch_size = Histogram("flywheel_serving_batch_size", "Texts per forward (dynamic batching).",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.in_production = Gauge("flywheel_serving_model_version_info", "1 for the version each model serves.",
                                   ["model", "version"], registry=r)
        self.swaps = Counter("flywheel_serving_swaps_total", "Hot swaps to a newly loaded version.", ["model"],
                             registry=r)
        self.load_failures = Counter("flywheel_serving_load_failures_total", "Versions that failed to load "
                                     "(the previous one kept serving).", ["model"], registry=r)
        self.load_seconds = Histogram("flywheel_serving_load_seconds", "Download + extract + load + warm-up.",
                                      ["model"], buckets=(0.5, 1, 2, 5, 10, 30, 60, 120), registry=r)
        self.feedback = Counter("flywheel_serving_feedback_total", "Labelled texts joined to their prediction, "
                                "by outcome (correct / incorrect).", ["model", "version", "outcome"], registry=r)
        self.feedback_unknown = Counter("flywheel_serving_feedback_unknown_total", "Feedback for request ids "
                                        "never answered here or already forgotten: counted and dropped.",
                                        ["model"], registry=r)
        # feedback across replicas (serving.feedback-forwarded, docs/decisions/0007-serving.md): ids unknown
        # fleet-wide = sum(forwarded) - sum(forwarded_received{outcome="joined"}) over the replicas
        self.feedback_forwarded = Counter("flywheel_serving_feedback_forwarded_total", "Feedback for request ids "
                                          "not answered here, forwarded to the other replicas.", ["model"],
                                          registry=r)
        self.feedback_forwarded_received = Counter(
            "flywheel_serving_feedback_forwarded_received_total", "Forwarded feedback for request ids answered "
            "here, by outcome (joined; refused: labels that do not fit the prediction).", ["model", "outcome"],
            registry=r)
        # shadow evaluation (shadow.py, docs/decisions/0013-shadow-evaluation.md)
        self.shadow_version = Gauge("flywheel_serving_shadow_version_info", "1 for the candidate each model "
                                    "shadows.", ["model", "version"], registry=r)
        self.shadow_requests = Counter("flywheel_serving_shadow_requests_total", "Answered requests by what the "
                                       "shadow did: scored, unsampled, busy (too many texts waiting), failed.",
                                       ["model", "outcome"], registry=r)
        self.shadow_feedback = Counter("flywheel_serving_shadow_feedback_total", "Labelled texts scored by both "
                                       "production and the shadow, by role (production / shadow) and outcome.",
                                       ["model", "role", "outcome"], registry=r)
        self.shadow_events = Counter("flywheel_serving_shadow_events_total", "model.shadow-evaluated events by "
                                     "outcome (published, failed: kept and retried, dropped).", ["outcome"],
                                     registry=r)
        self.dead_letters = Counter("flywheel_serving_dead_letters_total", "Followed events that could not be "
                                    "decoded.", registry=r)

    def served(self, model: str, old: str | None, new: str) -> None:
        if old is not None:
            self.in_production.remove(model, old)
            self.swaps.labels(model).inc()
        self.in_production.labels(model, new).set(1)

    def shadowing(self, model: str, old: str | None, new: str | None) -> None:
        if old is not None:
            self.shadow_version.remove(model, old)
        if new is not None:
            self.shadow_version.labels(model, new).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
