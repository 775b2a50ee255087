"""Season detection on synthetic cycles and on the real traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecasting.seasonality import acf, detect_seasons, primary_season
from forecasting.series import Series


def _synthetic(days: int, step_s: float, weekly: bool, seed: int = 0) -> Series:
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * 86400 / step_s)) * step_s
    daily = 1 + 0.6 * np.sin(2 * np.pi * t / 86400)
    week = 1 - 0.4 * ((t // 86400) % 7 >= 5) if weekly else 1.0
    v = 100 * daily * week + rng.normal(0, 3, t.size)
    return Series(start_s=0, step_s=step_s, values=np.maximum(v, 0), absolute=False)


def test_acf_of_a_sine_peaks_at_its_period() -> None:
    x = np.sin(2 * np.pi * np.arange(400) / 20)
    r = acf(x, 40)
    assert r[0] == 1.0
    assert int(np.argmax(r[10:30])) + 10 == 20


def test_daily_only_is_not_reported_as_weekly() -> None:
    seasons = detect_seasons(_synthetic(21, 3600, weekly=False))
    assert [s.period_s for s in seasons] == [86400.0]
    assert seasons[0].period == 24


def test_weekly_cycle_is_found_beside_the_daily_one() -> None:
    periods = {s.period_s for s in detect_seasons(_synthetic(28, 3600, weekly=True))}
    assert periods == {86400.0, 604800.0}


def test_no_season_in_noise_and_too_short_history() -> None:
    rng = np.random.default_rng(1)
    noise = Series(start_s=0, step_s=3600, values=rng.uniform(0, 10, 24 * 21))
    assert detect_seasons(noise) == []
    short = _synthetic(1.5, 3600, weekly=False)
    assert detect_seasons(short) == []
    assert primary_season(short) == 1


def test_real_traces(traces_dir: Path) -> None:
    wiki = detect_seasons(Series.from_csv(traces_dir / "wikipedia_en_2016_01.csv"))
    assert {s.period_s for s in wiki} >= {86400.0, 604800.0}
    nasa = Series.from_csv(traces_dir / "nasa_http_1995.csv").resample(300)
    assert primary_season(nasa) == 288
    conv = Series.from_csv(traces_dir / "azure_llm_2023_conv.csv")
    assert detect_seasons(conv) == []  # one hour of data holds no daily cycle
