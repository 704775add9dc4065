"""Rule configuration: validated at start-up, so a bad rule stops the service naming the field. Pure."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Aggregation = Literal["mean", "min", "max", "p95", "sum", "count", "rate"]
Comparator = Literal["lt", "le", "gt", "ge"]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}
FEATURE_PREFIX = "feature:"  # ModelMetricsObserved.metric for an input feature's histogram (drift)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rule(_Strict):
    """A threshold on one windowed aggregate of one metric, for every known model."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    metric: str = Field(min_length=1)
    aggregation: Aggregation = "mean"
    comparator: Comparator
    threshold: float
    window_s: float = Field(gt=0, le=86_400)
    min_samples: int = Field(ge=1)
    consecutive_windows: int = Field(default=1, ge=1, le=100)
    # Once breached, the metric must come back past threshold +/- hysteresis before another trigger.
    hysteresis: float = Field(default=0.0, ge=0)
    cooldown_s: float = Field(default=600.0, ge=0)

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def breached(self, value: float) -> bool:
        return COMPARE[self.comparator](value, self.threshold)

    def recovered(self, value: float) -> bool:
        """Back on the healthy side by at least the hysteresis margin."""
        if self.comparator in ("lt", "le"):
            return value >= self.threshold + self.hysteresis
        return value <= self.threshold - self.hysteresis


class DriftRule(_Strict):
    """PSI (effect size) and binned two-sample KS (significance) per feature against the registered reference."""

    name: str = Field(default="input-drift", min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    window_s: float = Field(default=60.0, gt=0, le=86_400)
    min_samples: int = Field(default=1000, ge=1)
    psi_threshold: float = Field(default=0.2, gt=0)
    ks_alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["holm", "bonferroni"] = "holm"
    # The size assumed for a reference of bucket fractions (older registrations); a reference of counts
    # (what training registers now) carries its true size, its sum.
    reference_sample_size: int = Field(default=10_000, ge=1)
    cooldown_s: float = Field(default=600.0, ge=0)

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)


class RuleSet(_Strict):
    rules: tuple[Rule, ...] = ()
    drift: DriftRule | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        names = [r.name for r in self.rules] + ([self.drift.name] if self.drift else [])
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self

    def for_metric(self, metric: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.metric == metric)


# Shipped defaults, sized for the demo's serving simulator (50..500 samples per event, several per second).
DEFAULT_RULES: dict[str, Any] = {
    "rules": [
        {"name": "accuracy-low", "metric": "accuracy", "aggregation": "mean", "comparator": "lt",
         "threshold": 0.8, "window_s": 5, "min_samples": 500, "consecutive_windows": 1,
         "hysteresis": 0.05, "cooldown_s": 300},
        {"name": "latency-p95-high", "metric": "latency_seconds", "aggregation": "p95", "comparator": "gt",
         "threshold": 0.5, "window_s": 60, "min_samples": 200, "consecutive_windows": 3,
         "hysteresis": 0.05, "cooldown_s": 900},
    ],
    "drift": {"name": "input-drift", "window_s": 60, "min_samples": 1000, "psi_threshold": 0.2,
              "ks_alpha": 0.01, "correction": "holm", "cooldown_s": 900},
}


def load_rules(path: Path | None) -> dict[str, Any]:
    """The raw rule set from a YAML/JSON file (validated by RuleSet), or the shipped defaults."""
    if path is None:
        return DEFAULT_RULES
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"rules file {path}: expected a mapping with 'rules' and optional 'drift'")
    return data
