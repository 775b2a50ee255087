"""surgecast with GPU-utilisation tiers (``spec.gpuTiers``) against the HPA on GPU
utilisation, on a bursty trace where a 1-minute forecast cannot see the bursts.

    nice -n 10 .venv/bin/python benchmarks/gpu_tiers.py [--traces azure_llm_2023_code] [--jobs 2]

A tier keeps at least ``ceil(ready x factor)`` pods while the pods' GPU utilisation is at
least its threshold: a saturation signal, the one the HPA on GPU utilisation reacts to.
surgecast alone (tiers, quantile) and the HPA on GPU utilisation (its target) on the
benchmark's scenario (``build_scenario``, step 15 s, no history, ``nowcast``), the whole
trace (Azure code is 1 h); one line per trace and setting: % of requests within the SLO and
GPU-hours over the oracle's. docs/autoscaling.md, "Reading the ablations", has the table.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

from margins import traces_dir

from autoscaler.core.baselines import REGISTRY as BASELINES
from autoscaler.core.observation import Autoscaler
from autoscaler.core.scenario import build_scenario, make_surgecast
from autoscaler.core.settings import Tier
from autoscaler.core.simulator import simulate
from forecasting.series import Series

TRACES = ("azure_llm_2023_code",)
#: (label, tiers as (utilisation at least, scale factor), quantile); the first is the default
SETTINGS: tuple[tuple[str, tuple[tuple[float, float], ...], float], ...] = (
    ("no tier", (), 0.9),
    ("no tier", (), 0.5),
    ("99 % -> 1.15x", ((0.99, 1.15),), 0.9),
    ("99 % -> 1.15x", ((0.99, 1.15),), 0.5),
    ("95 % -> 1.1x, 99 % -> 1.25x", ((0.95, 1.1), (0.99, 1.25)), 0.5),
    ("95 % -> 1.25x", ((0.95, 1.25),), 0.9),
    ("90 % -> 1.5x", ((0.9, 1.5),), 0.9),
    ("ladder 90/95/99 % -> 1.125/1.1875/1.25x", ((0.9, 1.125), (0.95, 1.1875), (0.99, 1.25)), 0.9),
    ("ladder 90/95/99 % -> 1.125/1.1875/1.25x", ((0.9, 1.125), (0.95, 1.1875), (0.99, 1.25)), 0.5),
)
#: the HPA on GPU utilisation at these targets, for the line surgecast is read against
HPA_TARGETS = (0.6, 0.7, 0.8, 0.9)


def run_one(name: str, kind: str, setting: object) -> tuple[float, float]:
    """``(% within SLO, x oracle)``: surgecast with ``setting`` (tiers, quantile) or the
    HPA on GPU utilisation at target ``setting``, on the whole trace ``name``."""
    trace = Series.from_csv(traces_dir() / f"{name}.csv")
    scenario = build_scenario(trace, 15.0)
    pol: Autoscaler
    if kind == "surgecast":
        tiers, q = setting  # type: ignore[misc]
        pol = make_surgecast(scenario, trace.step_s, overrides={
            "quantile": q, "tiers": tuple(Tier(u, f) for u, f in tiers)})
    else:
        pol = BASELINES["hpa"](scenario.capacity, target_util_ratio=setting)
    res = simulate(trace, pol, scenario.config)
    return 100.0 * res.slo_share, res.gpu_hours / scenario.oracle_gpu_hours


def main() -> int:
    """Run every trace x setting and print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    names = [t for t in args.traces.split(",") if t]
    jobs: list[tuple[str, str, str, object]] = []
    for n in names:
        jobs += [(n, "surgecast", f"{lab}, q{q:g}", (t, q)) for lab, t, q in SETTINGS]
        jobs += [(n, "hpa", f"hpa(gpu) target {x:.0%}", x) for x in HPA_TARGETS]
    with ProcessPoolExecutor(max(1, args.jobs)) as ex:
        futures = [ex.submit(run_one, n, kind, s) for n, kind, _, s in jobs]
        print("| trace | policy | % in SLO | x oracle |")
        print("|---|---|---|---|")
        for (name, _, label, _), fut in zip(jobs, futures, strict=True):
            slo, x = fut.result()
            print(f"| {name} | {label} | {slo:.2f} | {x:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
