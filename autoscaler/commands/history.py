"""``surgecast history``: a PredictiveAutoscaler's demand, read from Prometheus, as a trace.

It evaluates the target's own demand query (``signals``: preset, selector, window and
overrides; the ``history`` override when there is one), the same chunked range query the
controller's refit backfills ``forecast.history`` with, over ``--days`` up to ``--end``. It
writes a trace CSV in the format of ``shared/traces/`` (``timestamp`` in ISO-8601 UTC,
``requests``, ``rate_rps``), skipping the buckets Prometheus has no value for (missing,
not zero). A ``rate()`` evaluated at ``t`` averages the window that *ends* at ``t``, so the
row of the bucket ``[t - step, t)`` holds the query at ``t``: its ``requests`` are that
bucket's count when ``signals.window`` equals ``--step`` (1m both by default), and a
``window``-long moving average otherwise. ``surgecast backtest --trace FILE --config
PA.yaml`` then replays the fleet's own traffic through surgecast with its own settings,
and the baselines; ``surgecast forecast --trace FILE`` backtests forecasters on it.

Read-only: Prometheus queries and, without ``--config``, one GET of the resource.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from autoscaler.commands._output import write_text_atomic
from autoscaler.commands.forecast import UsageError
from autoscaler.commands.live import (
    add_kube_arguments,
    add_prometheus_arguments,
    check_prometheus_arguments,
    make_source,
    prometheus_url,
    read_only_cluster,
    target_spec,
)

if TYPE_CHECKING:
    from forecasting.series import Series

NAME = "history"
HELP = ("Write a PredictiveAutoscaler's demand from Prometheus as a trace CSV (for backtest "
        "and forecast).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast history``."""
    parser.add_argument("--target", default=None, metavar="NS/NAME",
                        help="the PredictiveAutoscaler whose demand to read (its spec is read "
                             "from the cluster unless --config is given)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="the PredictiveAutoscaler YAML (or bare spec) to take the signal "
                             "queries from, instead of the cluster's resource")
    parser.add_argument("--days", type=float, default=7.0,
                        help="how far back from --end (default 7)")
    parser.add_argument("--end", default="now",
                        help="end of the range: now (default) or an ISO-8601 time, e.g. "
                             "2026-11-20T00:00:00Z")
    parser.add_argument("--step", default="1m",
                        help="bucket of the trace (default 1m; at least the scrape interval)")
    parser.add_argument("--out", default="demand.csv", help="CSV to write (default demand.csv)")
    add_prometheus_arguments(parser)
    add_kube_arguments(parser)


def _end_s(raw: str, step_s: float) -> float:
    """``--end`` as Unix seconds, floored to the step (whole buckets only)."""
    if raw == "now":
        t = time.time()
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            raise UsageError(f"--end: not 'now' or an ISO-8601 time: {raw!r}") from None
    return math.floor(t / step_s) * step_s


def write_trace(series: Series, path: Path) -> int:
    """``series`` (req/s, each value labelled with its bucket's start) as a trace CSV: one
    row per bucket with a value; the row count.

    ``requests`` is rate x step (fractional: a ``rate()`` is an average), which
    :meth:`forecasting.series.Series.from_csv` reads back as the same rates. The file is
    replaced whole or not at all (:mod:`autoscaler.commands._output`): a failed write
    leaves an existing ``path`` as it was.

    Raises:
        UsageError: the file cannot be written.
    """
    rows = ["timestamp,requests,rate_rps"]
    for i, v in enumerate(series.values):
        if not math.isfinite(v):
            continue  # missing: no row, as in the shared traces
        t = datetime.fromtimestamp(series.start_s + i * series.step_s, tz=UTC)
        rows.append(f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{v * series.step_s:.10g},{v:.10g}")
    write_text_atomic(path, "\n".join(rows) + "\n")
    return len(rows) - 1


def run(args: argparse.Namespace) -> int:
    """Fetch and write; 2 on bad input or when Prometheus cannot give the demand."""
    try:
        return _history(args)
    except UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2


def _history(args: argparse.Namespace) -> int:
    from autoscaler.controller.loop import TargetKey
    from autoscaler.errors import ConfigError, MetricsUnavailable
    from forecasting.series import MAX_BUCKETS, parse_duration

    prometheus_url(args)
    check_prometheus_arguments(args)
    if args.config is None and args.target is None:
        raise UsageError("give --target NS/NAME (read from the cluster) or --config FILE")
    if not (args.days > 0 and math.isfinite(args.days)):
        raise UsageError(f"--days must be > 0, got {args.days:g}")
    try:
        step_s = parse_duration(args.step)
    except ValueError as exc:
        raise UsageError(f"--step: {exc}") from None
    if not (step_s >= 1 and float(step_s).is_integer()):
        raise UsageError(f"--step must be a whole number of seconds >= 1, got {args.step}")
    end_s = _end_s(args.end, step_s)
    start_s = end_s - args.days * 86400.0
    if start_s < 0:
        raise UsageError(f"--days {args.days:g} before --end {args.end} starts before 1970")
    n_buckets = args.days * 86400.0 / step_s
    if n_buckets > MAX_BUCKETS:
        raise UsageError(
            f"--days {args.days:g} at --step {args.step} is {n_buckets:.3g} buckets, more "
            f"than {MAX_BUCKETS:,}; use a coarser --step or fewer --days")
    api = None
    ns, name = "", ""
    if args.target is not None:
        try:
            key = TargetKey.parse(args.target)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        ns, name = key.namespace, key.name
        if args.config is None:
            api, _why = read_only_cluster(args)
    spec = target_spec(args, api, ns, name)
    try:
        source = make_source(args, spec)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    promql = source.rendered.get("history") or source.rendered.get("demand_rps")
    try:
        # the query at t describes the bucket that ends at t: evaluate one step later, then
        # label each value with the start of its bucket
        at_ends = source.history(start_s + step_s, end_s + step_s, step_s)
    except (MetricsUnavailable, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    series = at_ends.replace(start_s=at_ends.start_s - step_s)
    n_values = int(sum(1 for v in series.values if math.isfinite(v)))
    if n_values == 0:
        raise UsageError(
            f"Prometheus at {source.base_url} has no value of the demand query over the "
            f"{args.days:g} days to {_iso(end_s)}: {promql} (check signals.selector, and that "
            "Prometheus scrapes the workers)"
        )
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write --out {out}: {exc}") from None
    rows = write_trace(series, out)
    finite = [v for v in series.values if math.isfinite(v)]
    missing = len(series) - n_values
    print(f"wrote {out}: {rows} buckets of {step_s:g} s from {_iso(series.start_s)} to "
          f"{_iso(series.start_s + len(series) * series.step_s)}, {missing} missing; demand "
          f"mean {sum(finite) / len(finite):.3g} req/s, peak {max(finite):.3g} req/s")
    print(f"  query: {promql}")
    if missing > 0.5 * len(series):
        print(f"  ! {missing} of {len(series)} buckets have no value: Prometheus' retention or "
              "the workers' scrape did not cover the whole range", file=sys.stderr)
    config = args.config or f"<the {ns}/{name} resource as YAML>"
    print(f"replay it: surgecast backtest --trace {out} --config {config}")
    return 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
