"""Smoke test of benchmarks/controller_loop.py: its core runs real runners on 3 targets x 5
ticks and returns sane measurements (correctness only; no timing assertions)."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from forecasting.series import Series

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("controller_loop_bench",
                                                  ROOT / "benchmarks" / "controller_loop.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trace(load_trace: Callable[[str], Series]) -> Series:
    """Ten days of NASA req/s: room for three 2-day slices at different offsets."""
    return load_trace("nasa_http_1995").slice(0, 10 * 1440).as_rate()


@pytest.mark.parametrize("model", ["seasonal_naive", "ets"])
def test_fetch_excluded_core_measures_real_ticks(bench: ModuleType, trace: Series,
                                                 model: str) -> None:
    (res,) = bench.bench_excluded(trace, 3, 5, [model], "2d")
    res.check()  # raises unless every tick decided, without error, on a fitted model
    assert res.model == model and res.targets == 3 and res.rounds == 5
    assert len(res.tick_s) == 15 and all(t > 0 for t in res.tick_s)
    assert all(math.isfinite(t) for t in res.tick_s)
    assert res.decisions == 15 and res.forecasts == 15
    assert len(res.refit_s) == 3 and all(t > 0 for t in res.refit_s)
    # 5 ticks at 15 s cross at least one minute: each model was updated with a new bucket
    assert res.model_updates >= 3 and any(res.new_bucket)
    # the in-memory adapters were called every tick and their time is inside the tick's
    assert res.calls["prom"] >= 15 and res.calls["kube"] >= 15
    assert all(0 < c <= t for c, t in zip(res.core_s, res.tick_s, strict=True))


def test_check_catches_a_tick_without_decision(bench: ModuleType, trace: Series) -> None:
    (res,) = bench.bench_excluded(trace, 3, 4, ["seasonal_naive"], "2d")
    res.decisions -= 1
    with pytest.raises(AssertionError, match="decisions"):
        res.check()


def test_target_slices_differ_and_cover_now(bench: ModuleType, trace: Series) -> None:
    hist = 2 * 86400.0
    sl = bench.target_slices(trace, 3, hist, 300.0, bench.NOW0)
    for s in sl:
        assert s.start_s <= bench.NOW0 - hist and s.end_s >= bench.NOW0 + 300.0
    assert not np.array_equal(sl[0].values, sl[1].values, equal_nan=True)
