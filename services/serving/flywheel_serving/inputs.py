"""The predictor serving runs, with the live features of every text computed in the same batched forward.

Beside the label and its probability, each answer carries what the live windows (live.py) count: the label
index, words per text, the out-of-vocabulary rate against the training vocabulary, and the cosine distance
of the mean-pooled last hidden state to the training centroid — the hidden state comes from the same forward
(`output_hidden_states`), so the embedding costs a masked mean and one dot product per text. The vocabulary,
centroid and bucket bounds come from the version's reference.json (flywheel.features; written by training's
reference.py, whose `mean_pool` is the same); a version without one still reports predictions, confidence
and text length.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel import features as fx
from flywheel_serving.core import Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Profile:
    """One version's live-feature setup: its labels, the reference (if any) and the bounds of each feature."""

    labels: tuple[str, ...]
    reference: fx.Reference | None = None
    bounds: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, labels: list[str], reference: fx.Reference | None) -> Profile:
        # Inputs first: the monitor judges drift as each event arrives, so its evidence starts with them.
        names = [fx.TEXT_LENGTH]
        if reference is not None:
            names += [fx.OOV_RATE] + ([fx.CENTROID_DISTANCE] if reference.centroid else [])
        names += [fx.PREDICTION, fx.CONFIDENCE]
        bounds = {n: reference.bounds(n) if reference else fx.bounds_for(n, len(labels)) for n in names}
        return cls(tuple(labels), reference, bounds)


@dataclass(frozen=True)
class FeaturedPrediction(Prediction):
    """A Prediction plus the live features of its text (NaN: not measured for this version)."""

    index: int = -1
    length: int = 0
    oov: float = math.nan
    distance: float = math.nan
    profile: Profile | None = None


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the last hidden state over real tokens (padding masked out); as training's reference.py."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def load_reference(directory: Path) -> fx.Reference | None:
    """The artifact's reference.json; one that cannot be read disables the reference features, not the model."""
    try:
        return fx.read_reference(directory)
    except Exception as exc:
        log.warning("reference.json of %s unreadable (%s: %s): serving without input-feature references",
                    directory, type(exc).__name__, exc)
        return None


class FeaturePredictor:
    def __init__(self, version: str, tokenizer: Any, model: Any, labels: list[str], max_length: int,
                 reference: fx.Reference | None = None) -> None:
        import torch

        self.version, self.tokenizer, self.model = version, tokenizer, model
        self.labels, self.max_length = labels, max_length
        self.profile = Profile.of(labels, reference)
        self.vocabulary = reference.vocabulary if reference is not None else frozenset()
        self.centroid = (torch.nn.functional.normalize(torch.tensor(reference.centroid), dim=0)
                         if reference is not None and reference.centroid else None)

    def predict(self, texts: list[str]) -> list[FeaturedPrediction]:
        import torch

        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**encoded, output_hidden_states=self.centroid is not None)
            best, index = torch.softmax(out.logits, dim=-1).max(dim=-1)
            distances = self._distances(out, encoded["attention_mask"])
        text = [fx.text_features(t, self.vocabulary) for t in texts]
        measured_oov = self.profile.reference is not None
        return [FeaturedPrediction(self.labels[i], p, i, n, r if measured_oov else math.nan, d, self.profile)
                for i, p, (n, r), d in zip(index.tolist(), best.tolist(), text, distances, strict=True)]

    def _distances(self, out: Any, attention_mask: Any) -> list[float]:
        import torch

        if self.centroid is None:
            return [math.nan] * out.logits.shape[0]
        pooled = torch.nn.functional.normalize(mean_pool(out.hidden_states[-1], attention_mask), dim=-1)
        return (1.0 - pooled @ self.centroid).tolist()
