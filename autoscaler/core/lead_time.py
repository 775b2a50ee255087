"""Cold-start lead time: a robust high quantile of observed raise -> Ready durations."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

__all__ = ["LeadTimeEstimate"]


@dataclass(frozen=True)
class LeadTimeEstimate:
    """Observed start durations and the prior used until ``min_samples`` exist.

    The estimate is the ``quantile`` of the last ``keep`` samples after dropping values
    beyond median + 5 MAD (a pod stuck in ImagePullBackOff for an hour must not make the
    controller plan an hour ahead forever). With ``learn=False`` observations are ignored and
    the prior is the lead (a fixed lead time).
    """

    prior_s: float
    quantile: float = 0.9
    min_samples: int = 5
    keep: int = 50
    samples: tuple[float, ...] = ()
    learn: bool = True

    def observe(self, *durations_s: float) -> LeadTimeEstimate:
        """Add durations (negative or non-finite ones are ignored)."""
        if not self.learn:
            return self
        good = tuple(float(d) for d in durations_s if np.isfinite(d) and d >= 0)
        if not good:
            return self
        kept = (self.samples + good)[-self.keep :]
        return replace(self, samples=kept)

    @cached_property
    def lead_s(self) -> float:
        """The lead to plan with, seconds (computed once per estimate: it is immutable)."""
        if not self.learn or len(self.samples) < self.min_samples:
            return self.prior_s
        x = np.asarray(self.samples)
        med = float(np.median(x))
        mad = float(np.median(np.abs(x - med)))
        inliers = x[x <= med + 5 * max(mad, 1e-9 + 0.05 * med)]
        return float(np.quantile(inliers, self.quantile))
