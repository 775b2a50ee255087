"""Warm-pool size from the forecast's spread and the ramp expected within one cold start."""

from __future__ import annotations

import math

import numpy as np

from forecasting.forecast import Forecast

__all__ = ["demand_window", "warm_pool_size"]


def demand_window(fc: Forecast, q: float, t0_s: float, t1_s: float) -> np.ndarray:
    """Forecast values at level ``q`` for the buckets overlapping ``[t0_s, t1_s]``.

    Beyond the forecast's end the last bucket is held; before its start the first is used.
    """
    row = fc.quantile(q)
    i0 = math.floor((t0_s - fc.start_s) / fc.step_s)
    i1 = math.floor((t1_s - fc.start_s) / fc.step_s)
    i0 = min(max(i0, 0), fc.horizon - 1)
    i1 = min(max(i1, i0), fc.horizon - 1)
    out: np.ndarray = row[i0 : i1 + 1]
    return out


def warm_pool_size(
    fc: Forecast,
    now_s: float,
    cold_lead_s: float,
    rps_per_replica: float,
    *,
    high_q: float = 0.95,
    warm_min: int = 0,
    warm_max: int = 0,
) -> int:
    """Pods to keep warm: the high-minus-median spread at its widest over the cold lead,
    plus the median ramp expected within one cold start, in replicas, within
    ``[warm_min, warm_max]``. ``warm_max = 0`` disables the pool.
    """
    if warm_max <= 0:
        return 0
    t1 = now_s + cold_lead_s
    hi = demand_window(fc, high_q, now_s, t1)
    med = demand_window(fc, 0.5, now_s, t1)
    spread = float(np.max(hi - med))
    ramp = max(0.0, float(med[-1] - med[0]))
    need = math.ceil((spread + ramp) / rps_per_replica - 1e-9)
    return min(max(need, warm_min), warm_max)
