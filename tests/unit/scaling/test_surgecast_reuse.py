"""surgecast reuses its model's forecast while neither the model nor the horizon changed
(the ticks within one forecast bucket), and decides exactly as when it forecasts afresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.scenario import build_scenario, make_surgecast, split_history
from autoscaler.core.signals import Signals
from autoscaler.core.simulator import simulate
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.models.nowcast import Nowcast
from forecasting.series import Series


class Afresh:
    """Wraps surgecast and drops its reused forecast before every tick."""

    def __init__(self, inner: SurgecastAutoscaler) -> None:
        self.inner, self.name, self.interval_s = inner, inner.name, inner.interval_s

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        self.inner._base = None
        return self.inner.decide(signals, view)


@pytest.mark.parametrize("guard", [False, True])
def test_reused_forecast_decides_like_a_fresh_one(
    load_trace: Callable[[str], Series], monkeypatch: pytest.MonkeyPatch, guard: bool
) -> None:
    from autoscaler.core.prediction_guard import GuardSettings

    replay, history = split_history(load_trace("nasa_http_1995"), 1.0, days=0.25)
    scenario = build_scenario(replay, 15.0)
    calls = {"n": 0}
    real = Nowcast._predict

    def counting(self: Nowcast, *a: Any) -> Any:
        calls["n"] += 1
        return real(self, *a)

    monkeypatch.setattr(Nowcast, "_predict", counting)

    def run(wrap: bool) -> tuple[np.ndarray, int]:
        calls["n"] = 0
        pol = make_surgecast(scenario, replay.step_s, "nowcast", history=history,
                             guard=GuardSettings() if guard else None,
                             overrides={"warm_max": 4})
        res = simulate(replay, Afresh(pol) if wrap else pol, scenario.config)
        return res.desired, calls["n"]

    reused, n_reused = run(False)
    fresh, n_fresh = run(True)
    np.testing.assert_array_equal(reused, fresh)
    ticks = round(6 * 3600 / 15)
    assert n_fresh == ticks  # one model forecast per tick without reuse
    # with it, one per 60-s bucket (4 ticks), plus one where the horizon grows in a bucket
    assert ticks / 4 <= n_reused <= ticks / 2


def test_adaptive_level_step_zero_is_off_and_a_step_moves_the_plan(
    load_trace: Callable[[str], Series],
) -> None:
    """ServeGen large, day 1 (10-minute buckets that jump): with ``step`` 0 the adaptive
    level decides exactly as without it; with the default step the level moves with the
    forecast's misses, the policy reads the forecast at it, and the plan changes."""
    trace = load_trace("servegen_language_m_large")
    replay = trace.slice(round(86400 / trace.step_s), round(2 * 86400 / trace.step_s))
    scenario = build_scenario(replay, 15.0)
    runs = {}
    for label, adaptive in (("off", None), ("zero", {"step": 0.0}), ("on", {})):
        pol = make_surgecast(scenario, replay.step_s, adaptive=adaptive)
        levels: list[float] = []
        inner = pol.forecast

        def spy(now_s: float, view: DemandView, _f: Any = inner, _p: Any = pol,
                _l: list[float] = levels) -> Any:
            fc = _f(now_s, view)
            _l.append(_p.adaptive.level if _p.adaptive is not None else 0.9)
            return fc

        pol.forecast = spy  # type: ignore[method-assign]
        res = simulate(replay, pol, scenario.config)
        runs[label] = (res.desired, pol, levels)
    np.testing.assert_array_equal(runs["off"][0], runs["zero"][0])
    on = runs["on"][1]
    assert on.adaptive is not None and on.adaptive.scored > 100
    assert max(runs["on"][2]) > 0.9 and min(runs["on"][2]) < 0.9  # up after misses, down after calm
    assert not np.array_equal(runs["off"][0], runs["on"][0])
