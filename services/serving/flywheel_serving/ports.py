"""What the model manager and handlers depend on, as Protocols; adapters.py implements them.

- `StageReader`: `adapters.LifecycleStages` (flywheel.lifecycle.StageStore on S3); a dict in unit tests.
- `ArtifactStore`: `adapters.S3Artifacts` (download + safe extract into the cache directory).
- `ModelLoader` / `Predictor`: `adapters.TransformersLoader` (AutoModelForSequenceClassification).
- `Publisher`: `adapters.ServingPublisher` (confluent-kafka; refuses topics serving does not own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from flywheel_serving.core import Prediction, Target


class StageReader(Protocol):
    def models(self) -> list[str]: ...

    def production(self, model_id: str) -> Target | None:
        """The production version and its artifact; None when the model has none."""

    # Optional (ModelManager checks for it): the candidate in shadow, None when there is none.
    # def shadow(self, model_id: str) -> Target | None: ...


class ArtifactStore(Protocol):
    def fetch(self, target: Target) -> Path:
        """A local directory holding the extracted artifact of `target` (cached by model and version)."""


class Predictor(Protocol):
    version: str
    labels: Sequence[str]

    def predict(self, texts: list[str]) -> list[Prediction]: ...


class ModelLoader(Protocol):
    def load(self, directory: Path, version: str) -> Predictor:
        """A ready predictor (warmed up by one forward); raises when the artifact is unusable."""


class Publisher(Protocol):
    def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        """Blocking, acknowledged; schema, key and framing from the catalogue."""
