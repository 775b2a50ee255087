"""The Series type: construction, validation, resampling, gaps, parsing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.errors import (
    DuplicateTimestamps,
    InsufficientHistory,
    InvalidValues,
    IrregularSteps,
    NonMonotonicTimestamps,
    SeriesError,
)
from forecasting.series import Series, fill_for_fit, parse_duration

counts = st.lists(
    st.one_of(st.floats(0, 1e6, allow_nan=False), st.just(float("nan"))), min_size=1, max_size=200
)


def test_from_points_marks_skipped_buckets_missing_not_zero() -> None:
    s = Series.from_points([0, 60, 180], [5, 7, 9], step_s=60)
    assert len(s) == 4
    assert s.values[0] == 5 and s.values[1] == 7 and math.isnan(s.values[2])
    assert s.values[3] == 9
    assert s.n_missing == 1


def test_step_is_inferred_from_the_smallest_difference() -> None:
    s = Series.from_points([100, 110, 130], [1, 2, 3])
    assert s.step_s == 10 and len(s) == 4


@pytest.mark.parametrize(
    ("ts", "vs", "err", "fragment"),
    [
        ([0, 60, 30], [1, 2, 3], NonMonotonicTimestamps, "backwards at index 2"),
        ([0, 60, 60], [1, 2, 3], DuplicateTimestamps, "appears twice"),
        ([0, 60, 120], [1, float("nan"), 3], InvalidValues, "index 1"),
        ([0, 60, 120], [1, float("inf"), 3], InvalidValues, "index 1"),
        ([0, 60, 120], [1, -2, 3], InvalidValues, "non-negative"),
        ([0, 60, 125], [1, 2, 3], IrregularSteps, "not on the 60-s grid"),
        ([], [], SeriesError, "at least one"),
        ([0, 60], [1], SeriesError, "equal length"),
    ],
)
def test_validation_errors_are_specific(
    ts: list[float], vs: list[float], err: type[Exception], fragment: str
) -> None:
    with pytest.raises(err, match=fragment):
        Series.from_points(ts, vs, step_s=60 if ts else None)


def test_constructor_rejects_bad_step_and_negative_values() -> None:
    with pytest.raises(SeriesError, match="positive"):
        Series(start_s=0, step_s=0, values=np.ones(3))
    with pytest.raises(InvalidValues, match="negative"):
        Series(start_s=0, step_s=1, values=np.array([1.0, -1.0]))
    with pytest.raises(InvalidValues, match="infinite"):
        Series(start_s=0, step_s=1, values=np.array([1.0, np.inf]))


def test_values_are_read_only_copies() -> None:
    arr = np.array([1.0, 2.0])
    s = Series(start_s=0, step_s=1, values=arr)
    arr[0] = 99
    assert s.values[0] == 1.0
    with pytest.raises(ValueError):
        s.values[0] = 5


def test_resample_counts_sum_and_rates_average() -> None:
    s = Series(start_s=0, step_s=60, values=np.arange(10.0), kind="count")
    r = s.resample(300)
    assert list(r.values) == [0 + 1 + 2 + 3 + 4, 5 + 6 + 7 + 8 + 9]
    g = s.replace(kind="gauge").resample(300)
    assert list(g.values) == [2.0, 7.0]


def test_resample_gap_handling_does_not_invent_traffic() -> None:
    v = np.array([10, 10, np.nan, np.nan, np.nan, 10, 10, 10, 10, np.nan])
    s = Series(start_s=0, step_s=60, values=v)
    r = s.resample(300, min_coverage=0.5)
    # first block: 2 of 5 observed (< 50 %) -> missing, not 20 and not 0
    assert math.isnan(r.values[0])
    # second block: 4 of 5 observed -> the observed rate stands in for the gap
    assert r.values[1] == pytest.approx(50.0)


def test_resample_aligns_to_the_coarse_grid() -> None:
    s = Series(start_s=120, step_s=60, values=np.ones(6))
    r = s.resample(300)
    assert r.start_s == 0
    # first coarse bucket holds minutes 2,3,4 only: 3/5 observed, scaled to 5
    assert r.values[0] == pytest.approx(5.0)


def test_resample_rejects_non_multiples() -> None:
    s = Series(start_s=0, step_s=60, values=np.ones(6))
    with pytest.raises(SeriesError, match="whole multiple"):
        s.resample(90)


def test_append_fills_a_gap_with_missing_and_checks_the_grid() -> None:
    a = Series(start_s=0, step_s=10, values=np.ones(3))
    b = Series(start_s=50, step_s=10, values=np.full(2, 2.0))
    c = a.append(b)
    assert len(c) == 7 and c.n_missing == 2 and c.values[-1] == 2.0
    with pytest.raises(NonMonotonicTimestamps):
        a.append(Series(start_s=10, step_s=10, values=np.ones(1)))
    with pytest.raises(IrregularSteps):
        a.append(Series(start_s=35, step_s=10, values=np.ones(1)))
    with pytest.raises(IrregularSteps):
        a.append(Series(start_s=30, step_s=5, values=np.ones(1)))


def test_between_and_tail() -> None:
    s = Series(start_s=0, step_s=10, values=np.arange(10.0))
    assert list(s.between(20, 50).values) == [2, 3, 4]
    assert s.between(20, 50).start_s == 20
    assert list(s.tail(2).values) == [8, 9]


def test_from_prometheus_range_result() -> None:
    result = [
        {"metric": {"pod": "a"}, "values": [[1000.0, "1"], [1015.0, "2"], [1045.0, "NaN"]]},
        {"metric": {"pod": "b"}, "values": [[1000.0, "3"], [1030.0, "4"]]},
    ]
    with pytest.raises(SeriesError, match="returned 2 series"):
        Series.from_prometheus(result, step_s=15)
    s = Series.from_prometheus(result, step_s=15, aggregate="sum")
    assert s.start_s == 1000 and s.kind == "rate"
    np.testing.assert_array_equal(s.values, [4.0, 2.0, 4.0])  # NaN sample dropped at end
    with pytest.raises(SeriesError, match="missing data, not zero"):
        Series.from_prometheus([], step_s=15)


def test_from_arrivals_counts_and_keeps_real_zeros() -> None:
    s = Series.from_arrivals([0.5, 0.7, 2.1, 2.2, 2.9], step_s=1.0, start_s=0, end_s=4)
    np.testing.assert_array_equal(s.values, [2, 0, 3, 0])
    with pytest.raises(InvalidValues, match="outside the window"):
        Series.from_arrivals([5.0], step_s=1.0, start_s=0, end_s=4)


def test_from_csv_iso_and_relative(tmp_path: Path) -> None:
    iso = tmp_path / "iso.csv"
    iso.write_text("timestamp,requests\n2016-01-01T00:00:00Z,5\n2016-01-01T02:00:00Z,7\n")
    s = Series.from_csv(iso)
    assert s.absolute and s.step_s == 7200 and s.start_s == 1451606400
    rel = tmp_path / "rel.csv"
    rel.write_text("timestamp,requests,rate_rps\n0,10,1\n600,20,2\n1800,30,3\n")
    r = Series.from_csv(rel, step_s=600)
    assert not r.absolute and len(r) == 4 and math.isnan(r.values[2])
    rr = Series.from_csv(rel, column="rate_rps", kind="rate", step_s=600)
    assert rr.values[1] == 2


def test_from_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,requests\n0,1\n60,x\n")
    with pytest.raises(SeriesError, match=r"bad.csv:3: bad requests value"):
        Series.from_csv(bad)
    with pytest.raises(SeriesError, match="no 'tokens' column"):
        Series.from_csv(bad, column="tokens")
    dup = tmp_path / "dup.csv"
    dup.write_text("timestamp,requests\n0,1\n0,2\n")
    with pytest.raises(DuplicateTimestamps, match=r"dup\.csv"):
        Series.from_csv(dup)


def _minutes(n: int, start: int = 0) -> list[str]:
    return [f"2023-11-16T18:{start + i:02d}:00Z,{i + 1}" for i in range(n)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # a short row used to be an IndexError
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:01:00Z\n", r"x\.csv:3: 1 cell, need the "
         "'requests' column"),
        ("2023-11-16T18:00:00Z,1\n\x00\x00\x00\n", r"x\.csv:3: NUL byte"),
        # ISO timestamps and line numbers, not 1.70016e+09 and an index
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:01:00Z,2\n2023-11-16T18:01:00Z,3\n",
         r"x\.csv: timestamp 2023-11-16T18:01:00Z appears twice \(line 3 and line 4\)"),
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:02:00Z,2\n2023-11-16T18:01:00Z,3\n",
         r"backwards at line 4: 2023-11-16T18:02:00Z \(line 3\) then 2023-11-16T18:01:00Z"),
        # the raw cell, not np.float64(nan)
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:01:00Z,NaN\n",
         r"x\.csv:3: requests value 'NaN' is not a finite non-negative number"),
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:01:00Z,-3\n", r"x\.csv:3: requests value '-3'"),
        # a year typo'd as 2061 used to allocate ~9 GiB
        ("2023-11-16T18:00:00Z,1\n2023-11-16T18:01:00Z,2\n2061-11-16T18:02:00Z,3\n",
         r"line 4: 2061-11-16T18:02:00Z is .* days after .* more than 10,000,000"),
    ],
)
def test_from_csv_bad_rows_name_the_line(tmp_path: Path, body: str, fragment: str) -> None:
    f = tmp_path / "x.csv"
    f.write_text("timestamp,requests\n" + body, encoding="utf-8")
    with pytest.raises(SeriesError, match=fragment):
        Series.from_csv(f)


def test_from_csv_reads_a_bom_and_refuses_non_utf8(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbftimestamp,requests\n0,1\n60,2\n")
    assert list(Series.from_csv(bom).values) == [1, 2]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"timestamp,requests,note\n0,1,ok\n60,2,caf\xe9\n")
    with pytest.raises(SeriesError, match=r"latin\.csv:3: not UTF-8 text \(byte 0xe9\)"):
        Series.from_csv(latin)


def test_one_stray_row_is_refused_not_a_halved_step(tmp_path: Path) -> None:
    rows = _minutes(10)
    rows.insert(5, "2023-11-16T18:04:30Z,99")  # between minute 4 and 5
    f = tmp_path / "stray.csv"
    f.write_text("timestamp,requests\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(IrregularSteps, match=r"18:04:30Z \(line 7\) is not on the 60-s grid"):
        Series.from_csv(f)
    # gaps (outages) do not change the step: the most common gap wins
    s = Series.from_points([0, 60, 120, 600, 660, 1200, 1260], [1] * 7)
    assert s.step_s == 60 and len(s) == 22 and s.n_missing == 22 - 7


def test_real_trace_with_outages(traces_dir: Path) -> None:
    s = Series.from_csv(traces_dir / "nasa_http_1995.csv")
    assert s.step_s == 60 and s.absolute
    # the Hurricane Erin outage and the July/August split are gaps, not zeros
    assert s.n_missing > 5000
    r = s.resample(300)
    assert r.n_observed > 0 and np.nanmax(r.values) > np.nanmax(s.values)


def test_fill_for_fit_prefers_last_season_and_leaves_series_untouched() -> None:
    v = np.array([1, 2, 3, 1, np.nan, 3, 1, 2, np.nan])
    s = Series(start_s=0, step_s=1, values=v)
    filled = fill_for_fit(s, season=3)
    np.testing.assert_array_equal(filled, [1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert s.n_missing == 2
    with pytest.raises(InsufficientHistory):
        fill_for_fit(Series(start_s=0, step_s=1, values=np.array([np.nan])))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("1w", 604800), (120, 120),
     ("250ms", 0.25), ("15", 15)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10", "-5m", "5x", "0s", "m"])
def test_parse_duration_rejects(text: str) -> None:
    if text == "10":
        assert parse_duration(text) == 10  # a bare number is seconds
        return
    with pytest.raises(ValueError):
        parse_duration(text)


# ----------------------------------------------------------------- properties
@given(values=counts, k=st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_resample_preserves_observed_totals(values: list[float], k: int) -> None:
    """With full coverage required, a coarse bucket's count is exactly its fine sum."""
    s = Series(start_s=0, step_s=1, values=np.array(values))
    r = s.resample(k, min_coverage=1.0)
    assert len(r) == math.ceil(len(s) / k)
    for i, v in enumerate(r.values):
        block = np.array(values[i * k : (i + 1) * k])
        if len(block) == k and not np.isnan(block).any():
            assert v == pytest.approx(block.sum())
        else:
            assert math.isnan(v)


@given(values=counts, start=st.integers(-1000, 1000), step=st.sampled_from([1, 10, 60]))
@settings(max_examples=60, deadline=None)
def test_points_roundtrip(values: list[float], start: int, step: int) -> None:
    """Observed points rebuild the same series (gaps in the middle stay gaps)."""
    s = Series(start_s=start, step_s=step, values=np.array(values))
    obs = ~np.isnan(s.values)
    if not obs.any():
        return
    r = Series.from_points(s.timestamps[obs], s.values[obs], step_s=step)
    first, last = np.flatnonzero(obs)[[0, -1]]
    np.testing.assert_array_equal(r.values, s.values[first : last + 1])
    assert r.start_s == s.timestamps[first]


@given(values=counts, cut=st.integers(0, 200))
@settings(max_examples=60, deadline=None)
def test_slice_then_append_is_identity(values: list[float], cut: int) -> None:
    s = Series(start_s=0, step_s=5, values=np.array(values))
    cut = min(cut, len(s) - 1)
    a, b = s.slice(0, cut), s.slice(cut, None)
    if len(a) == 0:
        return
    np.testing.assert_array_equal(a.append(b).values, s.values)


def _fill_reference(values: np.ndarray, season: int | None) -> np.ndarray:
    """The obvious loop: each gap takes the newest observed value at the same phase of an
    earlier season, else linear interpolation (edges: nearest)."""
    v = values.astype(float).copy()
    if season and season < len(v):
        for i in np.flatnonzero(np.isnan(v)):
            j = i - season
            while j >= 0 and np.isnan(v[j]):
                j -= season
            if j >= 0:
                v[i] = v[j]
    m = np.isnan(v)
    if m.any():
        x = np.arange(len(v))
        v[m] = np.interp(x[m], x[~m], v[~m])
    return v


@given(
    st.lists(st.one_of(st.none(), st.floats(0, 1e6)), min_size=2, max_size=200),
    st.one_of(st.none(), st.integers(1, 50)),
)
def test_fill_for_fit_equals_the_reference_loop(raw: list[float | None],
                                                season: int | None) -> None:
    vals = np.array([np.nan if x is None else x for x in raw])
    if np.isnan(vals).all():
        vals[0] = 1.0
    s = Series(start_s=0, step_s=60, values=vals)
    np.testing.assert_array_equal(fill_for_fit(s, season=season), _fill_reference(vals, season))
