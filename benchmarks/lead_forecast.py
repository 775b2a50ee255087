"""Forecast accuracy at the horizon the autoscaler uses: one cold start ahead.

The policy sizes capacity from the forecast over ``[now, now + lead + interval]`` (about
4 minutes with a 120 s cold start, the 15 s tick and the scrape lag). This backtest asks
every model for that horizon the way the simulator's surgecast does: buckets of
``max(60 s, trace step)``, fitted on the first part of a 3-day slice, ``update()``-d one
bucket at a time, refitted every 6 h, scored at every origin of the last third on the
bucket ``ceil(240 s / step)`` ahead (at least one). Persistence (the last bucket, what the
reactive rule assumes) is the reference row.

Columns: MAE and mean pinball loss at the policy's 0.9 quantile, both relative to
persistence (< 1 is better), coverage of the 0.9 quantile (share of outcomes at or below
it; 0.9 is calibrated), median predict time.

    .venv/bin/python benchmarks/lead_forecast.py [--models seasonal_naive,nowcast,ets]
        [--traces servegen_language_m_large,nasa_http_1995] [--days 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoscaling import traces_dir

from autoscaler.core.simulator import demand_rates
from forecasting.errors import ForecastingError
from forecasting.models import make
from forecasting.series import Series

TRACES = [
    "wikipedia_en_2016_01",
    "servegen_language_m_small",
    "servegen_language_m_large",
    "nasa_http_1995",
    "azure_llm_2023_conv",
    "azure_llm_2023_code",
]


def score(model: str, y: np.ndarray, step_s: float, h: int, start: int) -> dict[str, float]:
    """Roll ``model`` over origins ``start .. len(y) - h``; errors of the bucket ``h`` ahead."""
    refit_every = max(1, int(6 * 3600 / step_s))
    ae: list[float] = []
    pin: list[float] = []
    cov: list[bool] = []
    times: list[float] = []
    m = None
    fitted_at = -refit_every
    for o in range(start, len(y) - h + 1):
        tgt = float(y[o + h - 1])  # the h-th bucket after the history y[:o]
        if model == "persistence":
            med = q9 = float(y[o - 1])
        else:
            try:
                if m is None or o - fitted_at >= refit_every:
                    m = make(model).fit(Series(0.0, step_s, y[:o], kind="rate"))
                    fitted_at = o
                t0 = time.perf_counter()
                fc = m.predict(h, (0.5, 0.9))
                times.append(time.perf_counter() - t0)
                med, q9 = float(fc.values[0, h - 1]), float(fc.values[1, h - 1])
                m.update(Series(o * step_s, step_s, y[o : o + 1], kind="rate"))
            except ForecastingError:
                m = None
                continue
        ae.append(abs(tgt - med))
        pin.append(max(0.9 * (tgt - q9), 0.1 * (q9 - tgt)))
        cov.append(tgt <= q9 + 1e-9)
    return {
        "mae": float(np.mean(ae)) if ae else math.nan,
        "pinball90": float(np.mean(pin)) if pin else math.nan,
        "coverage90": float(np.mean(cov)) if cov else math.nan,
        "predict_ms": 1e3 * float(np.median(times)) if times else 0.0,
        "n": float(len(ae)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="seasonal_naive,nowcast")
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--days", type=float, default=3.0)
    a = ap.parse_args()
    models = ["persistence", *[m for m in a.models.split(",") if m]]
    for name in [t for t in a.traces.split(",") if t]:
        s = Series.from_csv(traces_dir() / f"{name}.csv")
        s = s.slice(0, max(2, int(a.days * 86400 / s.step_s)))
        step = max(60.0, s.step_s)
        y = np.asarray(demand_rates(s, step).values, dtype=np.float64)
        h = max(1, math.ceil(240.0 / step))
        need = max(make(m).min_history(step) for m in models if m != "persistence")
        start = max(len(y) * 2 // 3, need)
        n_orig = len(y) - h + 1 - start
        print(f"\n### {name}: step {step:g} s, {h} bucket(s) ahead, {n_orig} origins\n")
        print(
            "| model | MAE / persistence | pinball q0.9 / persistence | coverage q0.9 "
            "| predict ms |"
        )
        print("|---|---|---|---|---|")
        ref = score("persistence", y, step, h, start)
        for model in models:
            r = ref if model == "persistence" else score(model, y, step, h, start)
            print(
                f"| {model} | {r['mae'] / ref['mae']:.3f} | "
                f"{r['pinball90'] / ref['pinball90']:.3f} | {r['coverage90']:.2f} | "
                f"{r['predict_ms']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
