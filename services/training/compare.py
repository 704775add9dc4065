"""Champion vs challenger on the same held-out rows: paired counts and the exact McNemar test (standard library).

b = rows the champion got right and the challenger wrong, c = the reverse. Under "equally good" each of the
b + c discordant rows is a fair coin, so the one-sided p-value for "the challenger is better" is
P(X >= c) for X ~ Binomial(b + c, 1/2). Rows both got right or both got wrong carry no evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb


def mcnemar_exact_p(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the challenger (c) beats the champion (b); 1.0 with no discordant rows."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, sum(comb(n, k) for k in range(c, n + 1)) / 2**n)


def compare(challenger_correct: Sequence[bool], champion_correct: Sequence[bool]) -> dict[str, float]:
    """The gate's evidence for paired per-row correctness on the same rows, in the same order."""
    if len(challenger_correct) != len(champion_correct):
        raise ValueError("challenger and champion must be scored on the same rows")
    n = len(challenger_correct)
    b = sum(1 for new, old in zip(challenger_correct, champion_correct, strict=True) if old and not new)
    c = sum(1 for new, old in zip(challenger_correct, champion_correct, strict=True) if new and not old)
    delta = (sum(challenger_correct) - sum(champion_correct)) / n if n else 0.0
    return {"n": float(n), "b": float(b), "c": float(c), "p_value": mcnemar_exact_p(b, c), "delta": delta}
