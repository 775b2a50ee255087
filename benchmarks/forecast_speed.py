"""Speed and accuracy of the statistical and ML forecasters (ETS, MSTL, GBM) on real traces.

Prints two tables (markdown):

1. fit / predict / update time on 14 days of 1-min NASA data (20,160 points, daily season
   1,440 steps); targets: fit <= 5 s, predict <= 50 ms (median).
2. rolling-origin accuracy against seasonal naive: MAE relative to seasonal naive's
   (< 1 is better), mean pinball loss over the 0.05/0.5/0.95 levels relative to seasonal
   naive's, 90 % interval coverage (q0.05..q0.95) and the mean fit time per origin.

Run: ``.venv/bin/python benchmarks/forecast_speed.py`` (about 2-4 min on 2 cores;
``--quick`` uses fewer origins). Traces: ``$SURGECAST_TRACES`` or ``../shared/traces``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecasting.models import make
from forecasting.scoring import coverage, mae, pinball
from forecasting.series import Series

MODELS = ("seasonal_naive", "ets", "mstl", "gbm")
Q = (0.05, 0.5, 0.95)


def traces_dir() -> Path:
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


@dataclass(frozen=True)
class Case:
    label: str
    trace: str
    resample_s: float | None
    history: int  # points of history at each origin
    horizon: int  # points ahead
    first_origin: int
    stride: int  # points between origins
    n_origins: int


CASES = (
    Case("wikipedia 1h, 3 wk, h=24h", "wikipedia_en_2016_01", None, 24 * 21, 24, 24 * 21, 24, 10),
    Case("nasa 5min, 14 d, h=1h", "nasa_http_1995", 300.0, 288 * 14, 12, 288 * 14, 72, 12),
    Case("nasa 1min, 14 d, h=1h", "nasa_http_1995", None, 1440 * 14, 60, 1440 * 14, 360, 8),
    Case("servegen m-small 10min, 7 d, h=1h", "servegen_language_m_small", None, 144 * 7, 6,
         144 * 7, 36, 16),
)


def load(name: str, resample_s: float | None) -> Series:
    s = Series.from_csv(traces_dir() / f"{name}.csv")
    if name.startswith("servegen"):
        # the traces README: m-small's 37 all-zero windows "look like collection gaps,
        # not real idle periods": mark them missing (not scored, bridged for fitting)
        s = s.replace(values=np.where(s.values == 0, np.nan, s.values))
    return s.resample(resample_s) if resample_s else s


def speed_table(nasa: Series) -> None:
    hist = nasa.slice(0, 1440 * 14)
    new = nasa.slice(1440 * 14, 1440 * 14 + 10)
    print("\n### Speed: 14 days of 1-min NASA (20,160 points), horizon 60 steps\n")
    print(
        "| model | fit s | predict ms (median of 50) | update ms (10 new points = 1 coarse "
        "bucket, median of 20) | detail |"
    )
    print("|---|---:|---:|---:|---|")
    for name in MODELS:
        t0 = time.perf_counter()
        m = make(name).fit(hist)
        fit_s = time.perf_counter() - t0
        pred = []
        for _ in range(50):
            t0 = time.perf_counter()
            f = m.predict(60, Q)
            pred.append(time.perf_counter() - t0)
        upd = []
        cur = new
        for _ in range(20):
            t0 = time.perf_counter()
            m.update(cur)
            upd.append(time.perf_counter() - t0)
            cur = nasa.between(cur.end_s, cur.end_s + 600.0)
        print(
            f"| {name} | {fit_s:.2f} | {1e3 * statistics.median(pred):.1f} | "
            f"{1e3 * statistics.median(upd):.1f} | {f.detail} |"
        )


def accuracy_table(quick: bool) -> None:
    print("\n### Accuracy: rolling origins, refit at each origin\n")
    print("| trace | model | rel. MAE | rel. pinball | 90% coverage | fit s (mean) |")
    print("|---|---|---:|---:|---:|---:|")
    for case in CASES:
        s = load(case.trace, case.resample_s)
        n_or = max(2, case.n_origins // 3) if quick else case.n_origins
        origins = [case.first_origin + i * case.stride for i in range(n_or)]
        origins = [o for o in origins if o + case.horizon <= len(s)]
        scores: dict[str, tuple[float, float, float, float]] = {}
        for name in MODELS:
            maes, pins, covs, fits = [], [], [], []
            for o in origins:
                hist = s.slice(o - case.history, o)
                actual = s.values[o : o + case.horizon]
                t0 = time.perf_counter()
                m = make(name).fit(hist)
                fits.append(time.perf_counter() - t0)
                f = m.predict(case.horizon, Q)
                maes.append(mae(actual, f.median))
                pins.append(np.mean([pinball(actual, f.quantile(q), q) for q in Q]))
                covs.append(coverage(actual, f.quantile(0.05), f.quantile(0.95)))
            scores[name] = (
                float(np.nanmean(maes)), float(np.nanmean(pins)), float(np.nanmean(covs)),
                float(np.mean(fits)),
            )
        base_mae, base_pin = scores["seasonal_naive"][0], scores["seasonal_naive"][1]
        for name, (m_, p_, c_, f_) in scores.items():
            print(
                f"| {case.label} ({len(origins)} origins) | {name} | {m_ / base_mae:.3f} | "
                f"{p_ / base_pin:.3f} | {c_:.2f} | {f_:.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a third of the origins")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    speed_table(load("nasa_http_1995", None))
    if not args.skip_accuracy:
        accuracy_table(args.quick)


if __name__ == "__main__":
    main()
