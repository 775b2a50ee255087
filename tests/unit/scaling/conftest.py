"""Shared fixtures of the scaling tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autoscaler.core.baselines import PhpaAutoscaler
from autoscaler.core.scenario import MAX_REPLICAS, build_scenario, split_history
from autoscaler.core.simulator import simulate
from forecasting.series import Series


@pytest.fixture(scope="session")
def hpa_replicas_servegen(load_trace: Callable[[str], Series]) -> list[int]:
    """A real replica series: the HPA's count (req/s per pod) on each 15 s sync of days 0-3
    of ServeGen large as the benchmark replays it (17 278 syncs), recorded by a PHPA whose
    season is too long for it ever to predict."""
    trace, _ = split_history(load_trace("servegen_language_m_large"), 0.0, 3.0)
    sc = build_scenario(trace, 15.0)
    p = PhpaAutoscaler(sc.capacity, max_replicas=MAX_REPLICAS, season_length=10**6)
    simulate(trace, p, sc.config)
    return [int(v) for v in p.history]
