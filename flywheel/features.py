"""Live-metric features shared by training (the reference) and serving (the live windows). Standard library only.

Training saves `reference.json` beside the model with a histogram per feature over its held-out rows, the
training vocabulary and the embedding centroid; serving computes the same features of the texts it answers,
with the same bucket bounds, and sends them as `feature:<name>` summaries on `model.metrics-observed`, so the
monitor compares like with like. Both sides import the bounds and the text features from here: one
definition, no drift between them (the training image installs this package with --no-deps).

Buckets follow MetricSummary: `bounds` are ascending upper bounds (a value equal to a bound falls in that
bucket), and there is one more bucket than bounds (the last is open). Histograms carry counts, so their sum is
the reference's true sample size.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
FEATURE_PREFIX = "feature:"  # ModelMetricsObserved.metric of a histogram the monitor checks for drift
VOCABULARY_SIZE = 20_000  # most frequent training words kept (ties alphabetical); the rest count as unknown

TEXT_LENGTH = "text_length"  # words per text
OOV_RATE = "oov_rate"  # fraction of a text's words not in the training vocabulary
CENTROID_DISTANCE = "centroid_distance"  # cosine distance of the mean-pooled embedding to the training centroid
PREDICTION = "prediction"  # predicted label index (labels.json order)
CONFIDENCE = "confidence"  # probability of the predicted label
INPUT_FEATURES = (TEXT_LENGTH, OOV_RATE, CENTROID_DISTANCE)
OUTPUT_FEATURES = (PREDICTION, CONFIDENCE)

BOUNDS: dict[str, tuple[float, ...]] = {
    TEXT_LENGTH: (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50, 100),
    OOV_RATE: (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75),
    CENTROID_DISTANCE: (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    CONFIDENCE: (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
}
_WORD = re.compile(r"\w+(?:'\w+)?")


def bounds_for(feature: str, n_labels: int) -> tuple[float, ...]:
    """The bucket bounds of `feature`; predictions bucket by label index (one bucket per label)."""
    if feature == PREDICTION:
        return prediction_bounds(n_labels)
    return BOUNDS[feature]


def prediction_bounds(n_labels: int) -> tuple[float, ...]:
    return tuple(i + 0.5 for i in range(n_labels - 1))


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes)."""
    return _WORD.findall(text.lower())


def text_length(tokens: Sequence[str]) -> int:
    return len(tokens)


def oov_rate(tokens: Sequence[str], vocabulary: frozenset[str] | set[str]) -> float:
    """Fraction of `tokens` outside `vocabulary`; 0 for a text without words."""
    if not tokens:
        return 0.0
    return sum(1 for t in tokens if t not in vocabulary) / len(tokens)


def text_features(text: str, vocabulary: frozenset[str] | set[str]) -> tuple[int, float]:
    """(text_length, oov_rate) of one text."""
    tokens = words(text)
    return text_length(tokens), oov_rate(tokens, vocabulary)


def cosine_distance(vector: Sequence[float], centroid: Sequence[float]) -> float:
    """1 - cosine similarity (0..2); 1 when either vector is zero. (Serving and training use the torch form.)"""
    dot = sum(a * b for a, b in zip(vector, centroid, strict=True))
    norm = math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in centroid))
    return 1.0 - dot / norm if norm else 1.0


def vocabulary(texts: Iterable[str], size: int = VOCABULARY_SIZE) -> list[str]:
    """The `size` most frequent words of `texts`, most frequent first, ties in alphabetical order."""
    counts = Counter(w for text in texts for w in words(text))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def bucket(bounds: Sequence[float], value: float) -> int:
    return bisect_left(bounds, value)


@dataclass(slots=True)
class Histogram:
    """Counts over fixed bounds plus count, sum, sum of squares, min and max: a MetricSummary being built."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value
        self.squares += value * value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def extend(self, values: Iterable[float]) -> Histogram:
        for value in values:
            self.add(value)
        return self

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self) -> dict[str, Any]:
        """The MetricSummary record (flywheel.MetricSummary.avsc)."""
        return {"count": self.count, "sum": self.total, "sum_squares": self.squares,
                "min": self.low if self.count else 0.0, "max": self.high if self.count else 0.0,
                "bucket_bounds": list(self.bounds), "bucket_counts": list(self.counts)}


def accuracy(pairs: Sequence[tuple[str, str]]) -> float:
    """Share of (predicted, true) pairs that agree; 0 for none."""
    return sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0


def macro_f1(pairs: Sequence[tuple[str, str]]) -> float:
    """Unweighted mean of per-label F1 over every label that occurs as predicted or true (scikit-learn's
    `f1_score(average="macro")` on the labels present); 0 for no pairs."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for predicted, true in pairs:
        if predicted == true:
            tp[true] += 1
        else:
            fp[predicted] += 1
            fn[true] += 1
    labels = set(tp) | set(fp) | set(fn)
    if not labels:
        return 0.0
    return sum(2 * tp[x] / (2 * tp[x] + fp[x] + fn[x]) for x in labels) / len(labels)


@dataclass(frozen=True)
class Reference:
    """What training saved for the live checks: vocabulary, centroid and a histogram per feature with its size."""

    labels: tuple[str, ...]
    vocabulary: frozenset[str]
    centroid: tuple[float, ...]
    histograms: dict[str, dict[str, Any]]  # name -> {"bounds": [...], "counts": [...], "count": n}
    rows: dict[str, int]

    def bounds(self, feature: str) -> tuple[float, ...]:
        """The bounds the reference was counted with (so an older artifact keeps matching its own buckets)."""
        saved = self.histograms.get(feature)
        return tuple(saved["bounds"]) if saved else bounds_for(feature, len(self.labels))

    def distribution(self) -> dict[str, list[float]]:
        """Counts per feature, the form `reference_distribution` of ModelVersionRegistered carries."""
        return {name: [float(c) for c in h["counts"]] for name, h in self.histograms.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": REFERENCE_FORMAT, "labels": list(self.labels), "rows": dict(self.rows),
                "vocabulary": sorted(self.vocabulary), "centroid": list(self.centroid),
                "features": self.histograms}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Reference:
        if doc.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"reference format {doc.get('format')!r} is not {REFERENCE_FORMAT}")
        histograms = doc["features"]
        for name, h in histograms.items():
            if len(h["counts"]) != len(h["bounds"]) + 1 or sum(h["counts"]) != h["count"]:
                raise ValueError(f"reference histogram {name!r}: counts do not fit its bounds or count")
        return cls(tuple(doc["labels"]), frozenset(doc["vocabulary"]), tuple(float(x) for x in doc["centroid"]),
                   histograms, {k: int(v) for k, v in doc.get("rows", {}).items()})


def histogram_entry(histogram: Histogram) -> dict[str, Any]:
    return {"bounds": list(histogram.bounds), "counts": list(histogram.counts), "count": histogram.count}


def read_reference(model_dir: Path) -> Reference | None:
    """The model's reference.json, or None when the artifact has none (older versions)."""
    path = model_dir / REFERENCE_FILE
    return Reference.from_dict(json.loads(path.read_text())) if path.is_file() else None
