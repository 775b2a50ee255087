"""A regular time series of demand: the one data type every forecaster takes.

A :class:`Series` is a start time, a fixed step and a float array. Missing observations
(scrape gaps, collection outages) are ``NaN``: they are *unknown*, never zero, and nothing
here fills them with invented traffic. Models that need a gap-free input call
:func:`fill_for_fit`, which only bridges the gaps inside a model's own copy.

Values are one of three kinds, which decides how resampling aggregates them:

- ``count``: events per bucket (requests in the bucket); coarser buckets *sum*;
- ``rate``: events per second (a Prometheus ``rate()``); coarser buckets *average*;
- ``gauge``: a level (queue depth, GPU utilisation); coarser buckets *average*.

Timestamps are seconds: Unix seconds when the source had absolute time
(``absolute=True``), seconds from the start of the trace otherwise.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from forecasting.errors import (
    DuplicateTimestamps,
    InsufficientHistory,
    InvalidValues,
    IrregularSteps,
    NonMonotonicTimestamps,
    SeriesError,
)

Kind = Literal["count", "rate", "gauge"]
FloatArray = npt.NDArray[np.float64]

__all__ = ["MAX_BUCKETS", "FloatArray", "Kind", "Series", "fill_for_fit", "parse_duration"]

_GRID_TOLERANCE = 1e-6  # fraction of a step a timestamp may sit off the grid
#: most buckets a series built from points may span (10 million: 115 days at 1 s, 19 years
#: at 1 min); a larger grid is a typo'd timestamp, not a trace
MAX_BUCKETS = 10_000_000


@dataclass(frozen=True, eq=False)
class Series:
    """Values on a regular grid: ``values[i]`` is the bucket starting at ``start_s + i*step_s``.

    Args:
        start_s: timestamp of the first bucket, in seconds.
        step_s: bucket length in seconds (> 0).
        values: one float per bucket; ``NaN`` marks a missing observation.
        kind: ``count``, ``rate`` or ``gauge`` (see the module docstring).
        absolute: whether timestamps are Unix seconds (calendar features are meaningful)
            or relative seconds from the trace start.
        name: free text shown in tables and plots.

    Raises:
        SeriesError: the step is not positive or the array is not one-dimensional.
        InvalidValues: a value is infinite or negative.
    """

    start_s: float
    step_s: float
    values: FloatArray
    kind: Kind = "count"
    absolute: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise SeriesError(f"step_s must be a positive number of seconds, got {self.step_s!r}")
        if not math.isfinite(self.start_s):
            raise SeriesError(f"start_s must be finite, got {self.start_s!r}")
        arr = np.array(self.values, dtype=np.float64, copy=True)
        if arr.ndim != 1:
            raise SeriesError(f"values must be one-dimensional, got shape {arr.shape}")
        _check_values(arr, self.start_s, self.step_s)
        arr.setflags(write=False)
        object.__setattr__(self, "values", arr)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:
        return (
            f"Series(name={self.name!r}, kind={self.kind}, start_s={self.start_s:g}, "
            f"step_s={self.step_s:g}, n={len(self)}, missing={self.n_missing})"
        )

    @property
    def timestamps(self) -> FloatArray:
        """Start time of every bucket, in seconds."""
        return self.start_s + self.step_s * np.arange(len(self), dtype=np.float64)

    @property
    def end_s(self) -> float:
        """Timestamp just after the last bucket (start of the next one)."""
        return self.start_s + self.step_s * len(self)

    @property
    def n_missing(self) -> int:
        """Number of missing (``NaN``) buckets."""
        return int(np.isnan(self.values).sum())

    @property
    def n_observed(self) -> int:
        """Number of observed (non-missing) buckets."""
        return len(self) - self.n_missing

    def replace(self, **changes: Any) -> Series:
        """A copy with some fields changed (``values``, ``name``, ...)."""
        return dataclasses.replace(self, **changes)

    def slice(self, start: int | None = None, stop: int | None = None) -> Series:
        """Buckets ``[start, stop)`` by index, as a new series."""
        idx = range(len(self))[slice(start, stop)]
        first = idx.start if len(idx) else 0
        return self.replace(
            start_s=self.start_s + first * self.step_s, values=self.values[start:stop]
        )

    def between(self, t0_s: float, t1_s: float) -> Series:
        """Buckets whose start lies in ``[t0_s, t1_s)``."""
        i0 = max(0, math.ceil((t0_s - self.start_s) / self.step_s - _GRID_TOLERANCE))
        i1 = max(i0, math.ceil((t1_s - self.start_s) / self.step_s - _GRID_TOLERANCE))
        return self.slice(i0, min(i1, len(self)))

    def tail(self, n: int) -> Series:
        """The last ``n`` buckets."""
        return self.slice(max(0, len(self) - n), None)

    def append(self, other: Series) -> Series:
        """This series followed by ``other``, which must continue it on the same grid.

        A gap between the two is filled with missing buckets, not zeros.

        Raises:
            IrregularSteps: different steps, or ``other`` is off this grid.
            NonMonotonicTimestamps: ``other`` starts before this series ends.
        """
        if not math.isclose(other.step_s, self.step_s, rel_tol=1e-9):
            raise IrregularSteps(
                f"cannot append a series with step {other.step_s:g} s to one with step "
                f"{self.step_s:g} s; resample first"
            )
        offset = (other.start_s - self.end_s) / self.step_s
        if offset < -_GRID_TOLERANCE:
            raise NonMonotonicTimestamps(
                f"appended series starts at {other.start_s:g}, before this one ends at "
                f"{self.end_s:g}"
            )
        n_gap = round(offset)
        if abs(offset - n_gap) > 1e-3:
            raise IrregularSteps(
                f"appended series starts at {other.start_s:g}, off the {self.step_s:g}-s grid"
            )
        values = np.concatenate([self.values, np.full(n_gap, np.nan), other.values])
        return self.replace(values=values)

    def as_rate(self) -> Series:
        """Per-second rate: counts are divided by the step; rates and gauges are unchanged."""
        if self.kind != "count":
            return self
        return self.replace(values=self.values / self.step_s, kind="rate")

    # -------------------------------------------------------------- resampling
    def resample(self, step_s: float, *, min_coverage: float = 0.5) -> Series:
        """Aggregate to a coarser step that is a whole multiple of this one.

        Counts are summed, rates and gauges averaged, over the observed buckets. A coarse
        bucket with less than ``min_coverage`` of its fine buckets observed is missing; a
        partly observed count bucket is scaled up by ``total / observed`` (the rate seen in
        the observed part, not zero, stands in for the unobserved part).

        The coarse grid is aligned to multiples of ``step_s`` from the epoch (or from the
        trace start for relative time), so resampling is stable as data arrives.

        Raises:
            SeriesError: ``step_s`` is not a whole multiple of the current step, or
                ``min_coverage`` is outside (0, 1].
        """
        ratio = step_s / self.step_s
        k = round(ratio)
        if k < 1 or abs(ratio - k) > 1e-9:
            raise SeriesError(
                f"can only resample to a whole multiple of the step ({self.step_s:g} s); "
                f"got {step_s:g} s"
            )
        if not 0 < min_coverage <= 1:
            raise SeriesError(f"min_coverage must be in (0, 1], got {min_coverage}")
        if k == 1:
            return self
        # align: the first coarse bucket starts at floor(start / step_s) * step_s
        new_start = math.floor(self.start_s / step_s + _GRID_TOLERANCE) * step_s
        lead = round((self.start_s - new_start) / self.step_s)
        n_coarse = math.ceil((lead + len(self)) / k)
        padded = np.full(n_coarse * k, np.nan)
        padded[lead : lead + len(self)] = self.values
        blocks = padded.reshape(n_coarse, k)
        observed = (~np.isnan(blocks)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sums = np.nansum(blocks, axis=1)
            means = sums / observed
            coarse = means * k if self.kind == "count" else means
        coarse = np.where(observed >= min_coverage * k, coarse, np.nan)
        return self.replace(start_s=new_start, step_s=step_s, values=coarse)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_points(
        cls,
        timestamps: Sequence[float] | npt.ArrayLike,
        values: Sequence[float] | npt.ArrayLike,
        *,
        step_s: float | None = None,
        kind: Kind = "count",
        absolute: bool = True,
        name: str = "",
    ) -> Series:
        """Build a regular series from (timestamp, value) points that may skip buckets.

        Skipped buckets become missing (``NaN``). The step is inferred, when not given, as
        the most common difference between consecutive timestamps (the smallest of the
        most common on a tie), so one stray row cannot halve it: that row is off the grid
        and refused instead.

        Raises:
            SeriesError: fewer than one point, lengths differ, or the grid would hold more
                than :data:`MAX_BUCKETS` buckets (a typo'd year).
            NonMonotonicTimestamps / DuplicateTimestamps: timestamps out of order or repeated
                (the message gives the first offending index).
            IrregularSteps: a timestamp is off the grid of ``step_s``.
            InvalidValues: a value is NaN, infinite or negative.
        """
        return cls._from_points(
            timestamps, values, step_s=step_s, kind=kind, absolute=absolute, name=name,
            where=lambda i: f"index {i}",
        )

    @classmethod
    def _from_points(
        cls,
        timestamps: Sequence[float] | npt.ArrayLike,
        values: Sequence[float] | npt.ArrayLike,
        *,
        step_s: float | None,
        kind: Kind,
        absolute: bool,
        name: str,
        where: Callable[[int], str],
    ) -> Series:
        """:meth:`from_points`, with ``where(i)`` naming point ``i`` in messages
        (``index 3``, ``line 5``)."""
        ts = np.asarray(timestamps, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
        if ts.ndim != 1 or vs.ndim != 1 or ts.shape != vs.shape:
            raise SeriesError(
                f"timestamps and values must be 1-D and of equal length, got {ts.shape} "
                f"and {vs.shape}"
            )
        if ts.size == 0:
            raise SeriesError("no points: a series needs at least one observation")

        def when(t: float) -> str:
            return _fmt_time(t, absolute)

        if not np.all(np.isfinite(ts)):
            bad = int(np.flatnonzero(~np.isfinite(ts))[0])
            raise SeriesError(f"timestamp at {where(bad)} is not finite ({ts[bad]!r})")
        diffs = np.diff(ts)
        if np.any(diffs < 0):
            bad = int(np.flatnonzero(diffs < 0)[0]) + 1
            raise NonMonotonicTimestamps(
                f"timestamps go backwards at {where(bad)}: {when(ts[bad - 1])} "
                f"({where(bad - 1)}) then {when(ts[bad])}; sort the rows"
            )
        if np.any(diffs == 0):
            bad = int(np.flatnonzero(diffs == 0)[0]) + 1
            raise DuplicateTimestamps(
                f"timestamp {when(ts[bad])} appears twice ({where(bad - 1)} and {where(bad)})"
            )
        bad_v = ~np.isfinite(vs) | (vs < 0)
        if np.any(bad_v):
            i = int(np.flatnonzero(bad_v)[0])
            raise InvalidValues(
                f"value at {where(i)} ({when(ts[i])}) is {float(vs[i])!r}: values must be "
                "finite and non-negative (leave a bucket out to mark it missing)"
            )
        if step_s is None:
            if ts.size < 2:
                raise SeriesError("cannot infer the step from a single point; pass step_s")
            step_s = _most_common_gap(diffs)
        offsets = (ts - ts[0]) / step_s
        span = float(offsets[-1])
        if span + 1 > MAX_BUCKETS:
            i = int(np.argmax(diffs)) + 1
            raise SeriesError(
                f"{where(i)}: {when(ts[i])} is {diffs[i - 1] / 86400:.4g} days after the "
                f"previous point ({when(ts[i - 1])}): a grid of {step_s:g}-s buckets to it "
                f"would hold {span + 1:.3g} buckets, more than {MAX_BUCKETS:,}; fix that "
                "timestamp or resample the trace"
            )
        idx = np.rint(offsets).astype(np.int64)
        off_grid = np.abs(offsets - idx) > 1e-3
        if np.any(off_grid):
            i = int(np.flatnonzero(off_grid)[0])
            raise IrregularSteps(
                f"timestamp {when(ts[i])} ({where(i)}) is not on the {step_s:g}-s grid "
                f"starting at {when(ts[0])}; remove the stray row, or resample or aggregate "
                "the points first"
            )
        out = np.full(int(idx[-1]) + 1, np.nan)
        out[idx] = vs
        return cls(
            start_s=float(ts[0]), step_s=float(step_s), values=out, kind=kind,
            absolute=absolute, name=name,
        )

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        *,
        column: str = "requests",
        step_s: float | None = None,
        kind: Kind = "count",
        name: str | None = None,
    ) -> Series:
        """Read a trace CSV in the format of ``shared/traces/*.csv``.

        The ``timestamp`` column holds ISO-8601 times (``2016-01-01T00:00:00Z``; naive times
        are read as UTC) or numbers of seconds from the trace start. Rows may skip buckets
        (outages): the skipped buckets are missing, not zero. The file is UTF-8, with or
        without a byte-order mark. It is read once, whole, so ``path`` may be a pipe
        (``/dev/stdin``, a FIFO, a shell's ``<(zcat t.csv.gz)``).

        Raises:
            SeriesError: the file is not UTF-8 text, has no ``timestamp`` column or no
                ``column``, a row is too short or a cell cannot be parsed, a value is not
                finite and non-negative (the message names the line), or any error of
                :meth:`from_points` (naming the line).
            OSError: the file cannot be read.
        """
        p = Path(path)
        lines: list[int] = []
        raw_ts: list[str] = []
        raw_vs: list[str] = []
        header: list[str] | None = None
        it = iv = 0
        data = p.read_bytes()  # once: a pipe cannot be read again (for an error message)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SeriesError(_not_utf8(p, data)) from None
        with io.StringIO(text, newline="") as fh:
            reader = csv.reader(fh)
            try:
                for row in reader:
                    if not row:
                        continue
                    if header is None:
                        header = [h.strip() for h in row]
                        if "timestamp" not in header:
                            raise SeriesError(
                                f"{p}: no 'timestamp' column (columns: {', '.join(header)})")
                        if column not in header:
                            raise SeriesError(
                                f"{p}: no {column!r} column (columns: {', '.join(header)})")
                        it, iv = header.index("timestamp"), header.index(column)
                        continue
                    if any("\x00" in cell for cell in row):
                        raise SeriesError(
                            f"{p}:{reader.line_num}: NUL byte in the row: the file is binary "
                            "or corrupt")
                    need = max(it, iv) + 1
                    if len(row) < need:
                        cells = f"{len(row)} cell" + ("s" if len(row) != 1 else "")
                        missing = "timestamp" if len(row) <= it else column
                        raise SeriesError(
                            f"{p}:{reader.line_num}: {cells}, need the {missing!r} column "
                            f"(column {need} of the header)")
                    lines.append(reader.line_num)
                    raw_ts.append(row[it].strip())
                    raw_vs.append(row[iv].strip())
            except csv.Error as exc:
                raise SeriesError(f"{p}:{reader.line_num + 1}: {exc}") from None
        if header is None:
            raise SeriesError(f"{p}: empty file")
        if not raw_ts:
            raise SeriesError(f"{p}: no data rows")
        absolute = not _is_number(raw_ts[0])
        ts = np.empty(len(raw_ts))
        vs = np.empty(len(raw_vs))
        for i, (t, v) in enumerate(zip(raw_ts, raw_vs, strict=True)):
            try:
                ts[i] = _parse_iso(t) if absolute else float(t)
            except (ValueError, OverflowError) as exc:
                raise SeriesError(f"{p}:{lines[i]}: bad timestamp {t!r}: {exc}") from None
            try:
                vs[i] = float(v)
            except ValueError:
                raise SeriesError(f"{p}:{lines[i]}: bad {column} value {v!r}") from None
            if not (math.isfinite(vs[i]) and vs[i] >= 0):
                raise InvalidValues(
                    f"{p}:{lines[i]}: {column} value {v!r} is not a finite non-negative "
                    "number (leave the row out to mark the bucket missing)")
        try:
            return cls._from_points(
                ts, vs, step_s=step_s, kind=kind, absolute=absolute,
                name=name if name is not None else p.stem,
                where=lambda i: f"line {lines[i]}",
            )
        except SeriesError as exc:
            raise type(exc)(f"{p}: {exc}") from None

    @classmethod
    def from_prometheus(
        cls,
        result: Sequence[Mapping[str, Any]],
        *,
        step_s: float,
        kind: Kind = "rate",
        aggregate: Literal["sum", "error"] = "error",
        name: str = "",
    ) -> Series:
        """Build a series from a Prometheus range-query ``result`` (``resultType: matrix``).

        ``result`` is the list of ``{"metric": {...}, "values": [[ts, "v"], ...]}`` that the
        HTTP API (and ``prometheus_api_client``'s ``custom_query_range``) returns. Steps
        with no sample are missing. Several series are summed per timestamp with
        ``aggregate="sum"`` (a timestamp is missing only when every series lacks it);
        otherwise more than one is an error. ``NaN`` samples (Prometheus' ``NaN`` from
        0/0) are treated as missing.

        Raises:
            SeriesError: an empty result (missing data is never zero), several series
                without ``aggregate="sum"``, or malformed samples.
        """
        if not result:
            raise SeriesError(
                "empty Prometheus result: the query matched no series (missing data, not zero)"
            )
        if len(result) > 1 and aggregate != "sum":
            labels = [dict(r.get("metric", {})) for r in result[:3]]
            raise SeriesError(
                f"the query returned {len(result)} series (e.g. {labels}); aggregate it in "
                "PromQL (sum(...)) or pass aggregate='sum'"
            )
        acc: dict[float, float] = {}
        for r in result:
            samples = r.get("values")
            if samples is None:
                raise SeriesError("Prometheus series has no 'values': is this a range query?")
            for sample in samples:
                try:
                    t, v = float(sample[0]), float(sample[1])
                except (TypeError, ValueError, IndexError):
                    raise SeriesError(f"malformed Prometheus sample {sample!r}") from None
                if math.isnan(v):
                    continue
                acc[t] = acc.get(t, 0.0) + v
        if not acc:
            raise SeriesError("every Prometheus sample is NaN: no observation")
        ts = np.array(sorted(acc))
        vs = np.array([acc[t] for t in ts])
        # Prometheus rounds evaluation timestamps to milliseconds; snap to the step grid.
        return cls.from_points(
            ts, vs, step_s=step_s, kind=kind, absolute=True, name=name
        )

    @classmethod
    def from_arrivals(
        cls,
        arrival_times_s: Sequence[float] | npt.ArrayLike,
        *,
        step_s: float,
        start_s: float | None = None,
        end_s: float | None = None,
        absolute: bool = True,
        name: str = "",
    ) -> Series:
        """Count per-request arrival times into buckets of ``step_s`` (a ``count`` series).

        The grid starts at ``start_s`` (default: the first arrival, floored to the step) and
        ends at ``end_s`` (default: just after the last arrival). Empty buckets inside the
        observed window are real zeros: the log was recording and nothing arrived.

        Raises:
            SeriesError: no arrivals and no window, or non-finite times.
            InvalidValues: an arrival lies outside ``[start_s, end_s)``.
        """
        t = np.sort(np.asarray(arrival_times_s, dtype=np.float64).ravel())
        if t.size and not np.all(np.isfinite(t)):
            raise SeriesError("arrival times must be finite")
        if start_s is None:
            if t.size == 0:
                raise SeriesError("no arrivals: pass start_s and end_s for an empty window")
            start_s = math.floor(t[0] / step_s) * step_s
        if end_s is None:
            if t.size == 0:
                raise SeriesError("no arrivals: pass end_s for an empty window")
            end_s = (math.floor((t[-1] - start_s) / step_s) + 1) * step_s + start_s
        if t.size and (t[0] < start_s or t[-1] >= end_s):
            raise InvalidValues(
                f"arrivals span [{t[0]:g}, {t[-1]:g}], outside the window "
                f"[{start_s:g}, {end_s:g})"
            )
        n = max(1, math.ceil((end_s - start_s) / step_s - _GRID_TOLERANCE))
        idx = np.floor((t - start_s) / step_s).astype(np.int64)
        counts = np.bincount(idx, minlength=n).astype(np.float64)[:n]
        return cls(
            start_s=float(start_s), step_s=float(step_s), values=counts, kind="count",
            absolute=absolute, name=name,
        )


def fill_for_fit(series: Series, *, season: int | None = None) -> FloatArray:
    """A gap-free copy of the values for model fitting; the series itself is untouched.

    Leading and trailing gaps are trimmed away by the caller's choice of window; here each
    inner gap is filled from the value one season earlier when observed (seasonal traffic
    repeats), else by linear interpolation between its neighbours. Edge gaps take the
    nearest observation.

    Raises:
        InsufficientHistory: the series has no observation at all.
    """
    v = np.array(series.values, dtype=np.float64)
    missing = np.isnan(v)
    if not missing.any():
        return v
    if missing.all():
        raise InsufficientHistory(
            f"series {series.name!r} has no observed value", needed=1, got=0
        )
    n = len(v)
    if season and season < n:
        # the newest observed value at the same phase of an earlier season: a forward
        # fill down each column of a (seasons x season) grid, vectorised (this runs on
        # every model update in the live controller)
        rows = -(-n // season)
        flat = np.full(rows * season, np.nan)
        flat[:n] = v
        grid = flat.reshape(rows, season)
        idx = np.where(np.isnan(grid), -1, np.arange(rows)[:, None])
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = grid[np.maximum(idx, 0), np.arange(season)]
        filled[idx < 0] = np.nan
        v = filled.reshape(-1)[:n].copy()
        missing = np.isnan(v)
    if missing.any():
        x = np.arange(len(v))
        v[missing] = np.interp(x[missing], x[~missing], v[~missing])
    return v


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"30m"``, ``"1h30m"``, ``"90s"``, ``"2d"`` or ``120``.

    Raises:
        ValueError: the text is not a positive duration (the message says why).
    """
    if isinstance(text, int | float):
        if not (math.isfinite(text) and text > 0):
            raise ValueError(f"duration must be positive, got {text!r}")
        return float(text)
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    if _is_number(s):
        return parse_duration(float(s))
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
    total, num = 0.0, ""
    i = 0
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = s[i : i + 2] if s[i : i + 2] == "ms" else c
        if unit not in units or not num:
            raise ValueError(f"bad duration {text!r}: use e.g. 90s, 30m, 1h30m, 2d")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise ValueError(f"bad duration {text!r}: number {num!r} has no unit (s, m, h, d, w)")
    if total <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return total


def _check_values(arr: FloatArray, start_s: float, step_s: float) -> None:
    finite_or_nan = np.isfinite(arr) | np.isnan(arr)
    if not finite_or_nan.all():
        i = int(np.flatnonzero(~finite_or_nan)[0])
        raise InvalidValues(f"value at t={start_s + i * step_s:g} is {arr[i]!r} (infinite)")
    with np.errstate(invalid="ignore"):
        neg = arr < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InvalidValues(
            f"value at t={start_s + i * step_s:g} is {arr[i]!r}: demand cannot be negative"
        )


def _not_utf8(p: Path, data: bytes) -> str:
    """The message for file ``p``, read as ``data``, that is not UTF-8: the first bad byte
    and its line."""
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        at = exc.start + bom
        line = data[:at].count(b"\n") + 1
        return f"{p}:{line}: not UTF-8 text (byte 0x{data[at]:02x}); save the trace as UTF-8"
    return f"{p}: not UTF-8 text; save the trace as UTF-8"


def _most_common_gap(diffs: FloatArray) -> float:
    """The most common of the consecutive differences (rounded to a microsecond), the
    smallest on a tie."""
    rounded = np.round(diffs, 6)
    gaps, counts = np.unique(rounded, return_counts=True)
    return float(gaps[int(np.argmax(counts))])


def _fmt_time(t: float, absolute: bool) -> str:
    """``t`` as ISO-8601 UTC for absolute series, else as seconds from the start."""
    if not absolute:
        return f"{t:g} s"
    try:
        dt = datetime.fromtimestamp(t, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{t:g}"
    text = dt.isoformat(timespec="microseconds" if dt.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_iso(s: str) -> float:
    text = s[:-1] + "+00:00" if s.endswith("Z") else s
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
