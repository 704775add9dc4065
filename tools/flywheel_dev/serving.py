"""A serving stand-in: sends windowed ModelMetricsObserved summaries, as a model server's sidecar would."""

from __future__ import annotations

import random
from typing import Any

from flywheel.catalogue import Service
from flywheel.codec import AvroCodec
from flywheel.events import envelope, now_ms
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings

TOPIC = "model.metrics-observed"


def accuracy_event(model_id: str, model_version: str, accuracy: float, samples: int,
                   window_ms: int = 1000) -> dict[str, Any]:
    """One window of `samples` predictions of which a fraction `accuracy` were right."""
    end = now_ms()
    correct = round(accuracy * samples)
    return {
        "envelope": envelope(Service.SERVING),
        "model_id": model_id,
        "model_version": model_version,
        "metric": "accuracy",
        "value": correct / samples,
        "sample_count": samples,
        "window_start": end - window_ms,
        "window_end": end,
        "summary": {"count": samples, "sum": float(correct), "sum_squares": float(correct), "min": 0.0,
                    "max": 1.0 if correct else 0.0, "bucket_bounds": [0.5], "bucket_counts": [samples - correct, correct]},
    }


class ServingSimulator:
    """Sends accuracy windows for one model version; `send(level)` sends one window around `level`."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec, model_id: str, model_version: str,
                 seed: int = 7) -> None:
        self._publisher = KafkaPublisher(settings, codec, timeout_s=10)
        self._rng = random.Random(seed)
        self.model_id, self.model_version = model_id, model_version

    def send(self, level: float, samples: int = 200) -> None:
        accuracy = min(1.0, max(0.0, self._rng.gauss(level, 0.01)))
        record = accuracy_event(self.model_id, self.model_version, accuracy, samples)
        self._publisher.publish(TOPIC, record, wait=False)

    def flush(self) -> None:
        self._publisher.flush()
