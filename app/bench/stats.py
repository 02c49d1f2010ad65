"""Counts with 95% Wilson score intervals, for the benchmark's rates (detections, false clears, lost turns).

The Wilson interval stays inside [0, 1] and is honest at 0/n and n/n, where the normal approximation
collapses to a zero-width interval: 0 false clears in 30 calls still allows a rate up to 11.4%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials; (0.0, 1.0) when n is 0."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"want 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At k = 0 or k = n one end is exactly 0 or 1; rounding must not push it past.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True, slots=True)
class Count:
    """k of n, with its rate and 95% Wilson interval."""

    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {"k": self.k, "n": self.n, "rate": self.rate, "ci95": [round(lo, 4), round(hi, 4)]}

    def __str__(self) -> str:
        if self.n == 0:
            return "-"
        lo, hi = self.ci95
        return f"{self.k}/{self.n} ({100 * self.k / self.n:.0f}%, CI {100 * lo:.0f}-{100 * hi:.0f}%)"
