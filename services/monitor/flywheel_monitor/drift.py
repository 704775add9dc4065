"""Drift statistics between a registered reference histogram and a live window's histogram. Pure.

The reference is the registration's `reference_distribution[<feature>]`: bucket counts over the bounds serving
uses (training's reference.json, flywheel.features), so the KS test runs on its true sample size; older
registrations hold fractions, and the rule's `reference_sample_size` stands in for theirs.

PSI measures how far the distribution moved (effect size); a binned two-sample Kolmogorov-Smirnov test says
whether the move is more than sampling noise. A feature drifts only when both agree, after a Holm (or
Bonferroni) correction over every reference feature, so big samples do not flag trivial shifts and many
features do not flag noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.special import kolmogorov

from flywheel_monitor.rules import DriftRule

PSI_FLOOR = 1e-4  # empty buckets would make PSI infinite; this floor is the customary smoothing


def fractions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total > 0 else [0.0 for _ in counts]


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index of two aligned histograms (fractions or counts; both are normalised)."""
    ref, cur = fractions(reference), fractions(live)
    total = 0.0
    for r, c in zip(ref, cur, strict=True):
        r, c = max(r, PSI_FLOOR), max(c, PSI_FLOOR)
        total += (c - r) * math.log(c / r)
    return total


def ks_binned(reference: Sequence[float], live: Sequence[float], n_ref: int, n_live: int) -> tuple[float, float]:
    """Two-sample KS statistic D over the shared bucket edges and its asymptotic p-value.

    Binning can only hide differences inside a bucket, so D (and the test) are conservative.
    """
    ref, cur = fractions(reference), fractions(live)
    d = cdf_r = cdf_c = 0.0
    for r, c in zip(ref, cur, strict=True):
        cdf_r += r
        cdf_c += c
        d = max(d, abs(cdf_r - cdf_c))
    n_eff = n_ref * n_live / (n_ref + n_live)
    root = math.sqrt(n_eff)
    # Stephens' small-sample correction of the asymptotic Kolmogorov distribution.
    return d, float(min(1.0, max(0.0, kolmogorov((root + 0.12 + 0.11 / root) * d))))


def reference_size(reference: Sequence[float], fallback: int) -> int:
    """The reference's sample size: a histogram of counts (training's reference, flywheel.features) sums to
    it; one of fractions (older registrations) sums to 1 and gets `fallback` (the rule's
    reference_sample_size)."""
    total = float(sum(reference))
    return round(total) if total > 1.0 + 1e-6 else fallback


def adjust(pvalues: Mapping[str, float], family_size: int, method: str) -> dict[str, float]:
    """Family-wise adjusted p-values (Holm step-down or Bonferroni) over `family_size` tests."""
    m = max(family_size, len(pvalues))
    if method == "bonferroni":
        return {k: min(1.0, p * m) for k, p in pvalues.items()}
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(sorted(pvalues.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    psi: float
    ks_d: float
    p_value: float
    p_adjusted: float
    samples: int
    reference_samples: int = 0


@dataclass(frozen=True, slots=True)
class DriftReport:
    features: dict[str, FeatureDrift]
    drifted: tuple[str, ...]

    @property
    def worst(self) -> str | None:
        """The drifted feature with the largest PSI (reported as the trigger's metric)."""
        return max(self.drifted, key=lambda f: self.features[f].psi) if self.drifted else None


def assess(reference: Mapping[str, Sequence[float]], live: Mapping[str, Sequence[int]], rule: DriftRule) -> DriftReport:
    """Test every live feature with enough samples and a histogram aligned with its reference."""
    raw: dict[str, tuple[float, float, float, int, int]] = {}
    for feature, counts in live.items():
        ref = reference.get(feature)
        n = int(sum(counts))
        if ref is None or len(ref) != len(counts) or n < rule.min_samples:
            continue
        n_ref = reference_size(ref, rule.reference_sample_size)
        d, p = ks_binned(ref, counts, n_ref, n)
        raw[feature] = (psi(ref, counts), d, p, n, n_ref)
    adjusted = adjust({f: v[2] for f, v in raw.items()}, len(reference), rule.correction)
    features = {f: FeatureDrift(v[0], v[1], v[2], adjusted[f], v[3], v[4]) for f, v in raw.items()}
    drifted = tuple(sorted(f for f, s in features.items()
                           if s.p_adjusted < rule.ks_alpha and s.psi >= rule.psi_threshold))
    return DriftReport(features, drifted)
