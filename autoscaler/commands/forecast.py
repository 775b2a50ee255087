"""``surgecast forecast``: rolling-origin backtest of forecasters on a trace CSV.

Prints a table of the scores per model (rich), writes ``fan_chart.png`` (quantile bands vs
actuals at the last origin) and ``metrics.json`` into ``--out``. Seasonal naive is always
run too, as the reference of the relative MAE.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

NAME = "forecast"
HELP = "Backtest forecasters on a trace CSV: table, PNG fan chart and JSON metrics."

#: quantile levels every backtest asks for (the fan chart draws 0.05-0.95 and 0.25-0.75)
CLI_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
REFERENCE = "seasonal_naive"


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast forecast``."""
    parser.add_argument("--trace", required=True, help="trace CSV (timestamp,<column>,...)")
    add_backtest_arguments(parser, horizon="30m", origins=5, out="surgecast-forecast")


def add_backtest_arguments(
    parser: argparse.ArgumentParser, *, horizon: str, origins: int, out: str, refit: int = 1
) -> None:
    """The options shared with ``surgecast demo``."""
    parser.add_argument("--column", default="requests", help="value column (default requests)")
    parser.add_argument(
        "--model", action="append", default=None,
        help="model to backtest (repeat or comma-separate; default auto)",
    )
    parser.add_argument("--horizon", default=horizon, help=f"forecast horizon (default {horizon})")
    parser.add_argument(
        "--step", default=None, help="resample to this step first, e.g. 5m (default: as read)"
    )
    parser.add_argument(
        "--origins", type=int, default=origins, help=f"forecast origins (default {origins})"
    )
    parser.add_argument(
        "--refit-every", type=int, default=refit,
        help=f"refit every K origins, update() in between (0: fit once; default {refit})",
    )
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")


def run(args: argparse.Namespace) -> int:
    """Run the backtest on ``--trace``; 2 on bad input (one line on stderr)."""
    try:
        series = load_series(Path(args.trace), args.column, args.step)
        return backtest_and_report(series, args)
    except UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2


def load_series(path: Path, column: str, step: str | None) -> Any:
    """Read and optionally resample a trace, turning every input error into a UsageError."""
    from forecasting.errors import SeriesError
    from forecasting.series import Series, parse_duration

    check_trace_file(path)
    try:
        series = Series.from_csv(path, column=column)
    except SeriesError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    if step is not None:
        try:
            step_s = parse_duration(step)
            series = series.resample(step_s)
        except (ValueError, SeriesError) as exc:
            raise UsageError(f"--step: {exc}") from None
    return series


def warn_if_mostly_missing(command: str, series: Any, use: str) -> None:
    """A warning on stderr (``history``'s wording) when more than half of ``series``'s
    buckets are missing: what ``use`` does with them (interpolates, cannot score) rests on
    little data."""
    missing, n = series.n_missing, len(series)
    if missing > 0.5 * n:
        print(f"surgecast {command}: warning: {missing} of {n} buckets have no value "
              f"({100 * missing / n:.0f} %): {use}", file=sys.stderr)


def check_trace_file(path: Path) -> None:
    """A usage error unless ``path`` can be read as a trace: a regular file, or a pipe or
    terminal read once to its end (``--trace <(zcat t.csv.gz)``, ``--trace /dev/stdin``:
    :meth:`~forecasting.series.Series.from_csv` reads a file once). Missing, a folder, a
    socket or a block device is each said as such."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"trace file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"trace {path} is a folder, not a file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device"
        raise UsageError(f"trace {path} is {kind}, not a file or a pipe")


def _models(raw: Sequence[str] | None) -> list[str]:
    from forecasting.models import REGISTRY

    names: list[str] = []
    for item in ["auto"] if raw is None else raw:
        given = [n.strip() for n in item.split(",") if n.strip()]
        if not given:
            raise UsageError(f"--model {item!r} names no model")
        for n in given:
            if n not in names:
                names.append(n)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise UsageError(
            f"unknown model {unknown[0]!r}; available: {', '.join(sorted(REGISTRY))}"
        )
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    return names


def backtest_and_report(series: Any, args: argparse.Namespace) -> int:
    """Backtest every model asked on ``series``; print, plot and write the JSON."""

    from forecasting.backtest import cross_validation, rolling_origins
    from forecasting.errors import InsufficientHistory
    from forecasting.models import make
    from forecasting.series import parse_duration

    try:
        horizon_s = parse_duration(args.horizon)
    except ValueError as exc:
        raise UsageError(f"--horizon: {exc}") from None
    h = round(horizon_s / series.step_s)
    if h < 1:
        raise UsageError(
            f"--horizon {args.horizon} is shorter than the series step ({series.step_s:g} s)"
        )
    if args.origins < 1:
        raise UsageError(f"--origins must be at least 1, got {args.origins}")
    if args.refit_every < 0:
        raise UsageError(f"--refit-every must be >= 0, got {args.refit_every}")
    names = _models(args.model)
    warn_if_mostly_missing(getattr(args, "command", NAME), series,
                           "the forecasts are scored on the observed ones only")
    if not args.out.strip():
        raise UsageError("--out is empty")
    out = Path(args.out)
    from autoscaler.commands._output import (
        check_writable_dir,
        stdout_console,
        write_atomic,
        write_text_atomic,
    )

    check_writable_dir("--out", out)
    try:
        origins = rolling_origins(len(series), h, n_windows=args.origins, step_size=h)
    except InsufficientHistory as exc:
        raise UsageError(f"too little history for the horizon: {exc}") from None
    if origins[0] < 2 * h:
        raise UsageError(
            f"too little history for the horizon: {len(series)} points leave only "
            f"{origins[0]} before the first of {args.origins} origins of {h} steps; use a "
            "shorter --horizon, fewer --origins or a longer trace"
        )

    # a pipe or a test gets a wide table instead of rich's 80-column default
    console = stdout_console()
    results = {}
    for name in names:
        kwargs: dict[str, int] = {"horizon": h} if name == "auto" else {}
        with console.status(f"backtesting {name} ..."):
            results[name] = cross_validation(
                series, functools.partial(make, name, **kwargs), h, origins=origins,
                refit=args.refit_every, quantiles=CLI_QUANTILES, levels=(0.5, 0.9),
            )
    _print_table(console, series, h, results)
    png = out / "fan_chart.png"
    write_atomic(png, lambda tmp: _fan_chart(tmp, series, h, results))
    payload = {
        "trace": series.name,
        "column": args.column,
        "step_s": series.step_s,
        "horizon_s": h * series.step_s,
        "h": h,
        "origins_s": [series.start_s + o * series.step_s for o in origins],
        "models": {
            n: {**r.to_dict(), "relative_mae": _rel(r.mae, results[REFERENCE].mae)}
            for n, r in results.items()
        },
    }
    js = out / "metrics.json"
    write_text_atomic(js, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {png} and {js}")
    return 0


def _rel(x: float, ref: float) -> float | None:
    if math.isnan(x) or math.isnan(ref) or ref <= 0:
        return None
    return x / ref


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None or math.isnan(x) else format(x, spec)


def _print_table(console: Any, series: Any, h: int, results: dict[str, Any]) -> None:
    from rich.table import Table

    ref = results[REFERENCE].mae
    first = next(iter(results.values()))
    table = Table(
        title=(
            f"{series.name}: {len(first.origins)} origins, horizon {h} x {series.step_s:g} s"
        )
    )
    for col in ("model", "ok/failed", "MAE", "rel MAE", "RMSE", "MASE", "sMAPE %",
                "pinball", "cov 90%", "fit s", "predict ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in results.items():
        table.add_row(
            name, f"{r.n_ok}/{r.n_failed}", _fmt(r.mae), _fmt(_rel(r.mae, ref), ".2f"),
            _fmt(r.rmse), _fmt(r.mase, ".2f"), _fmt(r.smape, ".1f"), _fmt(r.pinball_mean),
            _fmt(r.coverage.get(0.9, float("nan")), ".2f"), _fmt(r.fit_s, ".2f"),
            _fmt(r.predict_s * 1000, ".1f"),
        )
    console.print(table)
    for name, r in results.items():
        if r.detail and name == "auto":
            console.print(f"auto: {r.detail}", highlight=False, soft_wrap=True)
        if r.errors:
            console.print(f"{name}: {r.n_failed} origin(s) failed, first: {r.errors[0]}",
                          highlight=False, soft_wrap=True)


def _fan_chart(path: Path, series: Any, h: int, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), squeeze=False)
    step_h = series.step_s / 3600.0
    for ax, name in zip(axes[:, 0], names, strict=True):
        r = results[name]
        last = r.origins[-1]
        o = last.origin
        back = min(o, 4 * h)
        hist_x = (np.arange(-back, 0)) * step_h
        ax.plot(hist_x, series.values[o - back : o], color="black", lw=1, label="history")
        fx = np.arange(h) * step_h
        ax.plot(fx, last.actual, color="black", lw=1, ls="--", label="actual")
        f = last.forecast
        if f is not None:
            ax.fill_between(fx, f.quantile(0.05), f.quantile(0.95), alpha=0.25,
                            color="tab:blue", label="q0.05-q0.95")
            ax.fill_between(fx, f.quantile(0.25), f.quantile(0.75), alpha=0.4,
                            color="tab:blue", label="q0.25-q0.75")
            ax.plot(fx, f.median, color="tab:blue", lw=1.5, label="median")
        else:
            ax.text(0.5, 0.5, f"failed: {last.error}", transform=ax.transAxes, ha="center")
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{name} (last origin)", fontsize=9)
        ax.set_ylabel(series.name or "value", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("hours from the forecast origin")
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
