"""The exact one-sided McNemar test on paired correctness, shared by the live shadow comparison (serving, the
orchestrator's shadow gate). The training container carries its own copy (services/training/compare.py, a
standalone script); tests keep the two equal.

b = pairs only the champion got right, c = pairs only the challenger got right. Under "equally good" each of
the b + c discordant pairs is a fair coin, so the p-value for "the challenger is better" is P(X >= c) for
X ~ Binomial(b + c, 1/2); 1.0 with no discordant pairs.
"""

from __future__ import annotations

from math import comb


def mcnemar_exact_p(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the challenger (c) beats the champion (b)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, sum(comb(n, k) for k in range(c, n + 1)) / 2**n)
