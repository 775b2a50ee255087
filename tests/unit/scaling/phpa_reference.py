"""PHPA's model as its source runs it, for the tests to compare the baseline with:
statsmodels called exactly as jthomperoo/predictive-horizontal-pod-autoscaler's
``algorithms/holt_winters/holt_winters.py`` calls it."""

from __future__ import annotations

from typing import Any

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from autoscaler.core.baselines._holt_winters import Smoothing

P = Smoothing(0.5, 0.1, 0.3)
DAY = 5760  # 15 s syncs


def phpa_fit(y: Any, m: int, p: Smoothing) -> Any:
    """statsmodels exactly as PHPA's holt_winters.py calls it (trend and season "add")."""
    model = ExponentialSmoothing(
        np.asarray(y, dtype=np.float64), trend="add", seasonal="add", seasonal_periods=m,
        initialization_method="estimated", damped_trend=False,
        initial_level=None, initial_trend=None, initial_seasonal=None,
    )
    return model.fit(smoothing_level=p.alpha, smoothing_trend=p.beta,
                     smoothing_seasonal=p.gamma, optimized=False)
