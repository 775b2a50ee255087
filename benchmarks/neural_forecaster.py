"""Speed and accuracy of the small neural forecaster (PatchTST, the ``neural`` extra).

Prints two markdown tables:

1. speed: fit time at the training budget, predict latency (median of 50 calls) and
   update + predict latency (median of 20) on 14 days of 1-min NASA data and 3 weeks of
   hourly Wikipedia, with what the training did (coarse factor, context, epochs, why it
   stopped);
2. accuracy at rolling origins, a fresh fit at each: MAE and mean pinball loss
   (0.05/0.5/0.95) relative to seasonal naive's, and the 90 % interval coverage, on
   Wikipedia hourly (horizon 24 h) and NASA at 5 min (horizon 1 h).

Run: ``.venv/bin/python benchmarks/neural_forecaster.py`` (about 5 min on 2 cores at the
default 20-s budget; ``--budget 5 --origins 3`` for a quick look). Traces:
``$SURGECAST_TRACES`` or ``../shared/traces``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from forecasting.models.patchtst import PatchTST
from forecasting.models.seasonal_naive import SeasonalNaive
from forecasting.scoring import coverage, mae, pinball
from forecasting.series import Series

Q = (0.05, 0.5, 0.95)


def traces_dir() -> Path:
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


def load(name: str, resample_s: float | None = None) -> Series:
    s = Series.from_csv(traces_dir() / f"{name}.csv")
    return s.resample(resample_s) if resample_s else s


def import_time() -> float:
    """Seconds to import torch and transformers' PatchTST (paid once, by the first fit)."""
    t0 = time.perf_counter()
    import torch  # noqa: F401
    from transformers import PatchTSTForPrediction  # noqa: F401

    return time.perf_counter() - t0


def speed_table(budget: float) -> None:
    nasa = load("nasa_http_1995")
    wiki = load("wikipedia_en_2016_01")
    cases = (
        ("nasa 1 min, 14 d (20,160 pts), h=60", nasa, 1440 * 14, 60),
        ("wikipedia 1 h, 3 wk (504 pts), h=24", wiki, 24 * 21, 24),
    )
    print(f"\nimport torch + transformers (once per process): {import_time():.1f} s")
    print(f"\n### Speed (training budget {budget:g} s, 1 torch thread)\n")
    print("| series | fit s | train s | epochs | stopped by | factor | context | "
          "predict ms (median of 50) | update+predict ms (median of 20) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for label, s, n, h in cases:
        hist = s.slice(0, n)
        t0 = time.perf_counter()
        m = PatchTST(budget_s=budget).fit(hist)
        fit_s = time.perf_counter() - t0
        pred = []
        for _ in range(50):
            t0 = time.perf_counter()
            m.predict(h, Q)
            pred.append(time.perf_counter() - t0)
        upd = []
        cur = s.slice(n, n + 1)
        for i in range(20):
            t0 = time.perf_counter()
            m.update(cur)
            m.predict(h, Q)
            upd.append(time.perf_counter() - t0)
            cur = s.slice(n + i + 1, n + i + 2)
        r = m.report
        assert r is not None
        print(
            f"| {label} | {fit_s:.1f} | {r.seconds:.1f} | {r.epochs} | {r.stopped_by} | "
            f"{r.factor} | {r.context_length} | {1e3 * statistics.median(pred):.1f} | "
            f"{1e3 * statistics.median(upd):.1f} |"
        )


def accuracy_table(budget: float, n_origins: int) -> None:
    cases = (
        ("wikipedia 1 h, 3 wk history, h=24 h", load("wikipedia_en_2016_01"), 24 * 21, 24, 24),
        ("nasa 5 min, 14 d history, h=1 h", load("nasa_http_1995", 300.0), 288 * 14, 12, 72),
    )
    print(f"\n### Accuracy at rolling origins (fresh fit each, budget {budget:g} s)\n")
    print("| series | origins | rel. MAE | rel. pinball | 90% coverage (PatchTST) | "
          "90% coverage (seasonal naive) | fit s (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, s, hist_n, h, stride in cases:
        origins = [hist_n + i * stride for i in range(n_origins)]
        origins = [o for o in origins if o + h <= len(s)]
        rows: dict[str, list[tuple[float, float, float]]] = {"nn": [], "sn": []}
        fits = []
        for o in origins:
            hist = s.slice(o - hist_n, o)
            actual = s.values[o : o + h]
            t0 = time.perf_counter()
            nn = PatchTST(budget_s=budget).fit(hist)
            fits.append(time.perf_counter() - t0)
            for key, model in (("nn", nn), ("sn", SeasonalNaive().fit(hist))):
                f = model.predict(h, Q)
                rows[key].append((
                    mae(actual, f.median),
                    float(np.mean([pinball(actual, f.quantile(q), q) for q in Q])),
                    coverage(actual, f.quantile(0.05), f.quantile(0.95)),
                ))
        nn_a = np.nanmean(np.array(rows["nn"]), axis=0)
        sn_a = np.nanmean(np.array(rows["sn"]), axis=0)
        print(
            f"| {label} | {len(origins)} | {nn_a[0] / sn_a[0]:.3f} | {nn_a[1] / sn_a[1]:.3f} | "
            f"{nn_a[2]:.2f} | {sn_a[2]:.2f} | {np.mean(fits):.1f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=20.0, help="training budget, seconds")
    ap.add_argument("--origins", type=int, default=6, help="rolling origins per trace")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    speed_table(args.budget)
    if not args.skip_accuracy:
        accuracy_table(args.budget, args.origins)


if __name__ == "__main__":
    main()
