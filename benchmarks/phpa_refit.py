"""Did the earlier PHPA baseline's hourly Holt-Winters refit change its decisions?

PHPA runs its model on every sync (``perSyncPeriod`` 1). The earlier baseline, kept as
``PhpaAutoscaler(refit_every=240)`` (the benchmark ran it until the baseline followed PHPA
per sync), refits every 240 syncs (1 h) with every parameter estimated and between fits
reads the last fit's forecast further ahead, because one such statsmodels fit at 3 seasons
of 15 s syncs takes 20-40 s. This replays days 0-3 of a trace with that variant and, at
``--samples`` syncs spread over day 3 (the day it predicts), fits afresh on the same
history and compares the raw recommendation ``max(hpa, predicted)`` (open loop: the replay
follows the hourly-refit variant).

    nice -n 10 .venv/bin/python benchmarks/phpa_refit.py [--trace servegen_language_m_large]
        [--samples 24]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

from autoscaler.core.baselines.phpa import PhpaAutoscaler, holt_winters_forecast
from autoscaler.core.decision import Decision
from autoscaler.core.observation import DemandView
from autoscaler.core.scenario import MAX_REPLICAS, build_scenario, split_history
from autoscaler.core.signals import Signals
from autoscaler.core.simulator import simulate
from forecasting.series import Series


class _Probe(PhpaAutoscaler):
    """The hourly-refit PHPA; at chosen syncs also fits afresh and records both predictions."""

    def __init__(self, cap: float, at: set[int]) -> None:
        super().__init__(cap, max_replicas=MAX_REPLICAS, season_length=5760, refit_every=240)
        self.at, self.sync = at, 0
        self.rows: list[tuple[int, int, int, int, int]] = []

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        stale = self._since_fit  # syncs since the last fit, before this one
        d = super().decide(signals, view)
        if self.sync in self.at and "predicted" in d.components:
            fresh = holt_winters_forecast(np.asarray(self.history), self.season, self.look_ahead)
            pred = max(0, math.ceil(float(fresh[-1]) - 1e-9))
            self.rows.append((self.sync, stale, int(d.components["hpa"]),
                              int(d.components["predicted"]), pred))
        self.sync += 1
        return d


def main() -> int:
    ap = argparse.ArgumentParser(description="PHPA baseline: hourly vs fresh Holt-Winters fits")
    ap.add_argument("--trace", default="servegen_language_m_large")
    ap.add_argument("--samples", type=int, default=24)
    a = ap.parse_args()
    root = os.environ.get("SURGECAST_TRACES")
    tdir = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "traces"
    trace, _ = split_history(Series.from_csv(tdir / f"{a.trace}.csv"), 0.0, 3.0)
    sc = build_scenario(trace, 15.0)
    day3 = 2 * 5760
    # one sample per 240 syncs, each at a different age of the last fit (10, 20, ... syncs)
    at = {day3 + 240 * j + (10 * (j + 1)) % 240 for j in range(a.samples)}
    probe = _Probe(sc.capacity, at)
    t0 = time.perf_counter()
    simulate(trace, probe, sc.config)
    print(f"{a.trace}: {len(probe.rows)} samples on day 3, {time.perf_counter() - t0:.0f} s")
    print("| sync | syncs since fit | hpa | predicted (hourly fit) | predicted (fresh fit) |"
          " raw hourly | raw fresh |")
    print("|---|---|---|---|---|---|---|")
    changed = 0
    for sync, stale, hpa, old, new in probe.rows:
        changed += max(hpa, old) != max(hpa, new)
        print(f"| {sync} | {stale} | {hpa} | {old} | {new} | {max(hpa, old)} | {max(hpa, new)} |")
    print(f"raw recommendation changed at {changed} of {len(probe.rows)} samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
