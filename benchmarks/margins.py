"""surgecast's two margins against its quantile: does a higher quantile pay for itself with
less utilisation headroom?

    nice -n 10 .venv/bin/python benchmarks/margins.py [--traces a,b] [--days 3] [--jobs 2]

The margins are the utilisation the forecast is planned at (``forecast_util_ratio``) and
the reactive floor while predicting (``predicting_target_util_ratio``). surgecast alone
(quantile, forecast utilisation, floor) on the benchmark's scenario (``build_scenario``,
step 15 s, no history, ``nowcast``); one line per trace and setting: % of requests within
the SLO and GPU-hours over the oracle's, marked when the issue's target (>= 99.5 % at
<= 1.25x) is met. docs/autoscaling.md, "Margins traded on ServeGen large", has the table.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from autoscaler.core.scenario import build_scenario, make_surgecast
from autoscaler.core.simulator import simulate
from forecasting.series import Series

TRACES = ("servegen_language_m_large", "servegen_language_m_small", "wikipedia_en_2016_01")
#: (quantile, forecast_util_ratio, predicting_target_util_ratio); the first is the default
SETTINGS: tuple[tuple[float, float, float], ...] = (
    (0.9, 0.9, 0.9), (0.95, 0.9, 0.9), (0.95, 0.93, 0.9), (0.95, 0.9, 0.93),
    (0.95, 0.93, 0.93), (0.95, 0.95, 0.93), (0.98, 0.95, 0.93), (0.95, 0.95, 0.95),
)


def traces_dir() -> Path:
    """``$SURGECAST_TRACES`` or ``../shared/traces`` beside the repository."""
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


def run_one(name: str, days: float, setting: tuple[float, float, float]) -> tuple[float, float]:
    """``(% within SLO, x oracle)`` of surgecast with ``setting`` on ``days`` of ``name``."""
    trace = Series.from_csv(traces_dir() / f"{name}.csv")
    trace = trace.slice(0, round(days * 86400 / trace.step_s))
    scenario = build_scenario(trace, 15.0)
    q, f, p = setting
    pol = make_surgecast(scenario, trace.step_s, overrides={
        "quantile": q, "forecast_util_ratio": f, "predicting_target_util_ratio": p})
    res = simulate(trace, pol, scenario.config)
    return 100.0 * res.slo_share, res.gpu_hours / scenario.oracle_gpu_hours


def main() -> int:
    """Run every trace x setting and print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    names = [t for t in args.traces.split(",") if t]
    jobs = [(n, s) for s in SETTINGS for n in names]
    with ProcessPoolExecutor(max(1, args.jobs)) as ex:
        futures = [ex.submit(run_one, n, args.days, s) for n, s in jobs]
        print("| trace | quantile | forecast util | floor | % in SLO | x oracle | target |")
        print("|---|---|---|---|---|---|---|")
        for (name, (q, f, p)), fut in zip(jobs, futures, strict=True):
            slo, x = fut.result()
            met = "met" if slo >= 99.5 and x <= 1.25 else ""
            print(f"| {name} | {q:g} | {f:g} | {p:g} | {slo:.2f} | {x:.3f} | {met} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
