"""The promotion gate, probation rollback and operator stage changes: pure decisions, no I/O.

The gate compares a registered challenger with the current champion (the production version) on the
same held-out rows, scored in the challenger's own training run (services/training/compare.py): it
promotes only when held-out accuracy is higher by at least the margin AND the exact one-sided McNemar
p-value is below alpha. See docs/decisions/0008-model-lifecycle.md.

With shadow evaluation on (`shadow_min_pairs` > 0), a challenger that passes that offline gate becomes a
candidate in shadow instead: serving scores live traffic with it beside production and reports paired
correctness on labelled feedback; `shadow_verdict` promotes it when it beats production on at least
`shadow_min_pairs` live pairs by the margin with the McNemar p-value below alpha, and rejects it when it does
not, or when `shadow_max_s` passes first. See docs/decisions/0013-shadow-evaluation.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flywheel.lifecycle import ModelStages
from flywheel.mcnemar import mcnemar_exact_p
from flywheel_orchestrator.policy import Kind

FIRST, GATE, OPERATOR, PROBATION = "first", "gate", "operator", "probation"
SHADOW = "shadow"  # promoted on live shadow evidence
EPSILON = 1e-12  # a delta computed as a ratio of counts must not miss the margin by a rounding error


@dataclass(frozen=True)
class GatePolicy:
    margin: float = 0.01
    alpha: float = 0.05
    probation_s: float = 1800.0
    shadow_min_pairs: int = 0  # 0: no shadow, a version that passes the gate is promoted at once
    shadow_max_s: float = 86_400.0  # a candidate without enough live pairs by then is rejected

    @property
    def shadow(self) -> bool:
        return self.shadow_min_pairs > 0


@dataclass(frozen=True)
class Verdict:
    """promote=True: `reason` is first or gate; promote=False: `reason` says in words why not."""

    version: str
    promote: bool
    reason: str
    champion: str | None
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbationCheck:
    """Whether a breach rolls the production version back; `reason` explains either way (for the log)."""

    rollback: bool
    reason: str
    from_version: str | None = None
    evidence: dict[str, float] = field(default_factory=dict)


def gate_evidence(registration: Mapping[str, Any], policy: GatePolicy) -> dict[str, float]:
    metrics = registration.get("metrics") or {}
    champion = registration.get("champion_metrics") or {}
    comparison = registration.get("comparison") or {}
    evidence = {"challenger_accuracy": metrics.get("accuracy"), "champion_accuracy": champion.get("accuracy"),
                "baseline_accuracy": (registration.get("baseline_metrics") or {}).get("accuracy"),
                "margin": policy.margin, "alpha": policy.alpha,
                **{k: comparison.get(k) for k in ("n", "b", "c", "p_value", "delta")}}
    return {k: float(v) for k, v in evidence.items() if v is not None}


def judge(stages: ModelStages, version: str, registration: Mapping[str, Any], compared_with: str | None,
          policy: GatePolicy) -> Verdict:
    """The gate's decision for a newly registered `version`; `compared_with` is the champion its run scored."""
    evidence = gate_evidence(registration, policy)
    champion = stages.production if stages.production != version else None
    if champion is None:
        return Verdict(version, True, FIRST, None, evidence)
    if compared_with != champion:
        return Verdict(version, False, f"its run was compared with {compared_with or 'no champion'}, but production "
                       f"is now {champion}: retrain, or promote it by hand", champion, evidence)
    if "delta" not in evidence or "p_value" not in evidence:
        why = registration.get("champion_error") or "the run reported no comparison"
        return Verdict(version, False, f"no evidence against champion {champion}: {why}", champion, evidence)
    return _significance(version, champion, evidence, policy)


def _shortfalls(evidence: Mapping[str, float], policy: GatePolicy, prefix: str = "") -> list[str]:
    """Why a challenger is not better by the gate's rule (margin and McNemar); evidence keys carry `prefix`
    ("" offline, "live_" in shadow)."""
    delta, p_value, what = evidence[f"{prefix}delta"], evidence[f"{prefix}p_value"], prefix.replace("_", " ")
    shortfalls = []
    if delta + EPSILON < policy.margin:
        shortfalls.append(f"{what}accuracy delta {delta:+.4f} is below the margin {policy.margin:.4f}")
    if p_value >= policy.alpha:
        shortfalls.append(f"{what}McNemar p-value {p_value:.4g} is not below alpha {policy.alpha:g} "
                          f"(b={evidence.get(f'{prefix}b', 0):.0f}, c={evidence.get(f'{prefix}c', 0):.0f})")
    return shortfalls


def _significance(version: str, champion: str, evidence: dict[str, float], policy: GatePolicy) -> Verdict:
    shortfalls = _shortfalls(evidence, policy)
    if shortfalls:
        return Verdict(version, False, f"not better than champion {champion}: " + "; ".join(shortfalls),
                       champion, evidence)
    return Verdict(version, True, GATE, champion, evidence)


def probation(stages: ModelStages | None, kind: Kind, evidence: Mapping[str, str], now_ms: int,
              policy: GatePolicy) -> ProbationCheck:
    """A metric breach or drift of the production version soon after its promotion sends it back."""
    if kind not in (Kind.METRIC_BREACH, Kind.DRIFT):
        return ProbationCheck(False, f"{kind} is not a breach")
    production = stages.production_record() if stages else None
    if production is None or production.promoted_at is None:
        return ProbationCheck(False, "no production version")
    if evidence.get("model_version") != production.version:
        return ProbationCheck(False, f"the breach concerns {evidence.get('model_version') or 'no version'}, "
                              f"not production {production.version}")
    age_s = (now_ms - production.promoted_at) / 1000
    if age_s > policy.probation_s:
        return ProbationCheck(False, f"{production.version} left probation {age_s - policy.probation_s:.0f}s ago")
    if stages.previous_production() is None:
        return ProbationCheck(False, f"{production.version} breached in probation but has no previous version")
    numbers = {k: _number(evidence.get(k)) for k in ("observed_value", "threshold", "sample_size")}
    numbers = {k: v for k, v in numbers.items() if v is not None}
    return ProbationCheck(True, f"{kind} within {policy.probation_s:g}s of promotion: "
                          f"{evidence.get('rule', '')} {evidence.get('metric', '')}".strip(),
                          production.version,
                          {**numbers, "seconds_since_promotion": age_s, "probation_s": policy.probation_s})


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def shadow_evidence(counts: Mapping[str, float], policy: GatePolicy) -> dict[str, float]:
    """Live paired numbers of a shadowed candidate: accuracies, delta, McNemar b, c and p-value."""
    n, b, c = (int(counts.get(k, 0)) for k in ("n", "b", "c"))
    evidence = {"live_n": float(n), "live_b": float(b), "live_c": float(c),
                "live_p_value": mcnemar_exact_p(b, c), "margin": policy.margin, "alpha": policy.alpha,
                "shadow_min_pairs": float(policy.shadow_min_pairs)}
    if n:
        evidence |= {"live_production_accuracy": counts.get("production_correct", 0) / n,
                     "live_candidate_accuracy": counts.get("shadow_correct", 0) / n, "live_delta": (c - b) / n}
    return evidence


def shadow_verdict(stages: ModelStages, version: str, now_ms: int, policy: GatePolicy) -> Verdict | None:
    """The decision on a candidate in shadow, or None while it keeps collecting live pairs."""
    record = stages.versions.get(version)
    if record is None or record.stage != "candidate" or not record.shadow:
        return None
    shadow, champion = record.shadow, stages.production
    evidence = shadow_evidence(shadow, policy)
    age_s = (now_ms - int(shadow.get("started_at", now_ms))) / 1000
    evidence["seconds_in_shadow"] = age_s
    if champion != shadow.get("against"):
        return Verdict(version, False, f"shadowed against {shadow.get('against')}, but production is now "
                       f"{champion or 'none'}: promote it by hand if still wanted", champion, evidence)
    n = int(evidence["live_n"])
    if n < policy.shadow_min_pairs:
        if age_s > policy.shadow_max_s:
            return Verdict(version, False, f"only {n} live pairs of the {policy.shadow_min_pairs} needed within "
                           f"{policy.shadow_max_s:g}s in shadow", champion, evidence)
        return None
    shortfalls = _shortfalls(evidence, policy, "live_")
    if shortfalls:
        return Verdict(version, False, f"not better than production {champion} on {n} live pairs: "
                       + "; ".join(shortfalls), champion, evidence)
    return Verdict(version, True, SHADOW, champion, evidence)
