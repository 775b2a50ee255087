"""Whole-controller backtest: surgecast vs HPA, KEDA, PHPA, KPA, static peak and the oracle.

Scenario (docs/autoscaling.md): cold start 120 s median (log-normal sigma 0.15, clipped to
[90, 180] s), warm promotion 5 s, termination 30 s, Prometheus lag 15 s + 60 s rate window,
controller every 15 s (KPA 2 s, PHPA 15 s), per-replica capacity so that the trace's peak
needs 40 replicas at 70 % utilisation, latency = 0.2 s + queueing wait, SLO 0.5 s.

    .venv/bin/python benchmarks/autoscaling.py [--traces a,b] [--days 3] [--step 5]
        [--model seasonal_naive] [--no-phpa]

Prints one table per trace; ``x_oracle`` is GPU-hours over the oracle's cheapest no-queue
schedule (a lower bound).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscaler.core.scenario import (
    DEFAULT_POLICIES,
    build_policies,
    build_scenario,
    compare,
    compatible_step,
)
from forecasting.series import Series

TRACES = [
    "azure_llm_2023_code",
    "azure_llm_2023_conv",
    "nasa_http_1995",
    "wikipedia_en_2016_01",
    "servegen_language_m_large",
]


def traces_dir() -> Path:
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "traces"


def surge_trace() -> Series:
    """The seed's scenario: 300 req/s, then a surge to 2000 req/s (ramp over 2 min)."""
    v = np.concatenate([np.full(1800, 300.0), np.linspace(300, 2000, 120), np.full(1680, 2000.0)])
    return Series(start_s=0.0, step_s=1.0, values=v, kind="count", absolute=False, name="surge")


def run_trace(trace: Series, step_s: float, model: str, phpa: bool) -> list[dict[str, float | str]]:
    scenario = build_scenario(trace, step_s)
    names = list(DEFAULT_POLICIES) + (["phpa"] if phpa else [])
    pols = build_policies(scenario, trace, names, model=model)
    return [row for row, _ in compare(trace, scenario, pols)]


def print_table(title: str, rows: list[dict[str, float | str]]) -> None:
    cols = [
        "policy",
        "slo_pct",
        "p99_s",
        "gpu_hours",
        "x_oracle",
        "actions",
        "under_min",
        "util_pct",
    ]
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(
                f"{v:.3f}"
                if isinstance(v, float) and c in ("p99_s", "x_oracle")
                else f"{v:.2f}"
                if isinstance(v, float)
                else str(v)
            )
        print("| " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--days", type=float, default=3.0, help="slice of each trace, days")
    ap.add_argument("--step", type=float, default=5.0, help="simulation step, seconds")
    ap.add_argument("--model", default="seasonal_naive")
    ap.add_argument("--no-phpa", action="store_true", help="skip PHPA (slow Holt-Winters fits)")
    ap.add_argument("--no-surge", action="store_true")
    a = ap.parse_args()
    if not a.no_surge:
        print_table(
            "surge 300 -> 2000 req/s (1 h)", run_trace(surge_trace(), a.step, a.model, False)
        )
    for name in [t for t in a.traces.split(",") if t]:
        s = Series.from_csv(traces_dir() / f"{name}.csv")
        n = max(2, int(a.days * 86400 / s.step_s))
        s = s.slice(0, n)
        step = a.step if compatible_step(s.step_s, a.step) else s.step_s
        print_table(
            f"{name} (first {s.step_s * len(s) / 86400:.2f} days, step {step:g} s)",
            run_trace(s, step, a.model, not a.no_phpa),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
