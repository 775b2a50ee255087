"""surgecast's policy fed a perfect forecast: what forecasting alone could still buy.

:class:`ClairvoyantSurgecast` is :class:`~autoscaler.core.surgecast.SurgecastAutoscaler`
with its forecaster replaced by the truth: every future bucket's forecast (all quantiles)
is the trace's real mean demand over that bucket. Everything else (the reactive floor,
the lead, the utilisation the forecast is planned at, the scale-down windows, the
observation lag of the signals) is surgecast's own. It is a yardstick for the benchmark,
not a policy anyone can run:

- at the simulator's step it sees every burst the trace has, so its gap to the oracle is
  the cost of the policy's own mechanics (planned utilisation, floor, scale-down windows);
- at the forecast step (1 minute, or the trace's own step when coarser) it knows each
  bucket's mean but not the bursts inside it, so its gap to the first is what sub-bucket
  variation costs, which no forecast at that step can remove; and the gap from it to
  surgecast with a real forecaster is the cost of forecast error.
"""

from __future__ import annotations

import numpy as np

from autoscaler.core.observation import DemandView
from autoscaler.core.settings import PolicySettings
from autoscaler.core.surgecast import SurgecastAutoscaler
from forecasting.forecast import Forecast
from forecasting.series import FloatArray

__all__ = ["ClairvoyantSurgecast"]


class ClairvoyantSurgecast(SurgecastAutoscaler):
    """surgecast with a perfect forecast of ``rates_rps`` at ``forecast_step_s``.

    Args:
        settings: the policy's settings (as for surgecast).
        rates_rps: the demand the simulator replays, one value per ``step_s``.
        start_s: time of ``rates_rps[0]``.
        step_s: the simulator's step; ``forecast_step_s`` must be a multiple of it.
        forecast_step_s: the bucket length of the perfect forecast.

    Raises:
        ValueError: ``forecast_step_s`` is not a positive multiple of ``step_s``.
    """

    name = "surgecast_clairvoyant"

    def __init__(
        self,
        settings: PolicySettings,
        rates_rps: FloatArray,
        start_s: float,
        step_s: float,
        *,
        forecast_step_s: float,
    ) -> None:
        k = forecast_step_s / step_s
        if step_s <= 0 or round(k) < 1 or abs(k - round(k)) > 1e-9:
            raise ValueError(
                f"forecast_step_s {forecast_step_s:g} must be a positive multiple of the "
                f"step {step_s:g}"
            )
        super().__init__(settings, forecast_step_s=forecast_step_s)
        self._rates = np.asarray(rates_rps, dtype=np.float64)
        self._rates_start_s = start_s
        self._k = round(k)
        self._step_s = step_s

    def forecast(self, now_s: float, view: DemandView) -> Forecast | None:
        """The true mean demand of each bucket over the lead (the last one repeated past
        the end of the trace)."""
        self._history(view)
        hist_end, h = self._horizon(now_s)
        i0 = round((hist_end - self._rates_start_s) / self._step_s)
        n = len(self._rates)
        vals = np.empty(h)
        for j in range(h):
            a = min(max(0, i0 + j * self._k), n - 1)
            b = min(max(a + 1, i0 + (j + 1) * self._k), n)
            vals[j] = float(self._rates[a:b].mean())
        qs = self._quantiles()
        fc = Forecast(
            start_s=hist_end,
            step_s=self.forecast_step_s,
            quantiles=tuple(qs),
            values=np.tile(vals, (len(qs), 1)),
            model="clairvoyant",
            kind="rate",
        )
        self.last_forecast = fc
        return fc
