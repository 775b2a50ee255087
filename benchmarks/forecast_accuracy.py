"""Accuracy and speed of every registered forecaster on the shared public traces.

Rolling-origin backtests (:func:`forecasting.backtest.cross_validation`) per trace:

======================  ==========  ========  =======================================
trace                   step        horizon   origins (default / ``--quick``)
======================  ==========  ========  =======================================
Wikipedia en, 2016-01   1 h         24 h      6 daily / 3
NASA HTTP 1995          5 min       1 h       6, 6 h apart, last 21 days / 3
ServeGen m-small        10 min      1 h       8, 6 h apart / 3
ServeGen m-large        10 min      1 h       8, 6 h apart / 3
Azure LLM conv 2023     10 s        5 min     6, 5 min apart / 3
======================  ==========  ========  =======================================

Models are refitted every ``--refit-every`` origins (default 3) and ``update()``-d in
between. Prints one markdown table per trace: MAE relative to seasonal naive (< 1 is
better), mean pinball loss over the 0.05/0.25/0.5/0.75/0.95 levels relative to seasonal
naive's, 90 % interval coverage (q0.05..q0.95), mean fit time and median predict time.

Run: ``.venv/bin/python benchmarks/forecast_accuracy.py [--quick] [--models auto,ets]
[--traces wikipedia,nasa]``. Traces: ``$SURGECAST_TRACES`` or ``../shared/traces``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from forecasting.backtest import BacktestResult, cross_validation
from forecasting.models import REGISTRY, make
from forecasting.series import Series

Q = (0.05, 0.25, 0.5, 0.75, 0.95)


def traces_dir() -> Path:
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    trace: str
    resample_s: float | None
    keep: int | None  # most recent points kept (bounds the cost), None = all
    horizon: int
    stride: int
    n_origins: int


CASES = (
    Case("wikipedia", "Wikipedia en 1 h, h=24 h", "wikipedia_en_2016_01", None, None, 24, 24, 6),
    Case("nasa", "NASA 1995 5 min, h=1 h", "nasa_http_1995", 300.0, 288 * 21, 12, 72, 6),
    Case("m_small", "ServeGen m-small 10 min, h=1 h", "servegen_language_m_small", None, None,
         6, 36, 8),
    Case("m_large", "ServeGen m-large 10 min, h=1 h", "servegen_language_m_large", None, None,
         6, 36, 8),
    Case("azure_conv", "Azure LLM conv 10 s, h=5 min", "azure_llm_2023_conv", 10.0, None,
         30, 30, 6),
)


def load(case: Case) -> Series:
    s = Series.from_csv(traces_dir() / f"{case.trace}.csv")
    if case.resample_s is not None:
        s = s.resample(case.resample_s)
    if case.keep is not None:
        s = s.tail(case.keep)
    return s


def fmt(x: float, spec: str = ".2f") -> str:
    return "-" if math.isnan(x) else format(x, spec)


def run_case(case: Case, models: list[str], n_origins: int, refit: int) -> list[str]:
    s = load(case)
    results: dict[str, BacktestResult] = {}
    for name in models:
        kw = {"horizon": case.horizon} if name == "auto" else {}
        t0 = time.perf_counter()
        results[name] = cross_validation(
            s, lambda name=name, kw=kw: make(name, **kw), case.horizon,
            n_windows=n_origins, step_size=case.stride, refit=refit, quantiles=Q,
        )
        print(f"  {case.key}/{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    ref = results["seasonal_naive"]
    best = min((r.mae for n, r in results.items() if n != "auto"), default=float("nan"))
    lines = [
        f"\n### {case.label} ({len(s)} points, {n_origins} origins, refit every {refit})\n",
        "| model | rel MAE | rel pinball | pinball | cov 90% | fit s | predict ms | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rel = r.mae / ref.mae if ref.mae else float("nan")
        relp = r.pinball_mean / ref.pinball_mean if ref.pinball_mean else float("nan")
        lines.append(
            f"| {name} | {fmt(rel)} | {fmt(relp)} | {r.pinball_mean:.4g} | "
            f"{fmt(r.coverage.get(0.9, float('nan')))} | {fmt(r.fit_s)} | "
            f"{fmt(r.predict_s * 1000, '.1f')} | {r.n_failed} |"
        )
    if "auto" in results:
        a = results["auto"]
        lines.append(
            f"\nauto vs best single model: MAE ratio {fmt(a.mae / best)}; last choice: "
            f"{a.detail}"
        )
    for name, r in results.items():
        if r.errors:
            lines.append(f"\n{name}: {r.n_failed} failed origin(s), first: {r.errors[0]}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 origins, fit once")
    ap.add_argument("--models", default=None, help="comma-separated (default: all registered)")
    ap.add_argument("--traces", default=None,
                    help=f"comma-separated of {','.join(c.key for c in CASES)}")
    ap.add_argument("--refit-every", type=int, default=3)
    args = ap.parse_args()
    models = args.models.split(",") if args.models else list(REGISTRY)
    if "seasonal_naive" not in models:
        models.insert(0, "seasonal_naive")
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; available: {sorted(REGISTRY)}")
    keys = args.traces.split(",") if args.traces else [c.key for c in CASES]
    cases = [c for c in CASES if c.key in keys]
    if len(cases) != len(keys):
        ap.error(f"unknown trace in {keys}; available: {[c.key for c in CASES]}")
    out: list[str] = []
    t0 = time.perf_counter()
    for c in cases:
        n = 3 if args.quick else c.n_origins
        refit = 0 if args.quick else args.refit_every
        out += run_case(c, models, n, refit)
    print("\n".join(out))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; models: {', '.join(models)}")


if __name__ == "__main__":
    main()
