"""``surgecast dry-run``: what the controller would decide, tick by tick, on a trace.

Replays the trace (``--trace``, or the embedded English-Wikipedia slice shipped in
``forecasting/data``) through the simulator with surgecast in charge, in the same scenario as
``surgecast backtest``, and prints one aligned line per controller tick (or every
``--every``-th tick, plus every tick whose decision changed the replica count): time,
demand the controller saw, forecast peaks of the median and of the policy quantile over
the lead window, active, warm and total replicas, and the decision's reason and message.

The live mode (``--prometheus URL --target NS/NAME``, see
:mod:`autoscaler.commands.live_dry_run`) runs the controller's own tick against live
Prometheus and, when reachable, reads the cluster through a read-only client.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

from autoscaler.commands.backtest import add_scenario_arguments, load_spec, make_policies, prepare
from autoscaler.commands.forecast import UsageError, load_series
from autoscaler.commands.live import add_kube_arguments, add_prometheus_arguments

if TYPE_CHECKING:
    from autoscaler.core.scenario import Tick
    from forecasting.series import Series

NAME = "dry-run"
HELP = "Print, tick by tick, what the surgecast controller would decide on a trace."
EMBEDDED = "wikipedia_en_2016_01.csv"
#: the trace replay's defaults of its flags that have one: the parser leaves them ``None``,
#: so that the live mode can tell a flag given (refused there) from one left out
TRACE_DEFAULTS: dict[str, object] = {
    "column": "requests", "slo": "500ms", "step": "15s", "days": 2.0, "every": 1,
}


def header(quantile: float) -> str:
    """The column line; ``quantile`` names the policy's forecast column (``p95``)."""
    pq = f"p{100 * quantile:g}"
    return (
        f"{'time (UTC)':<19}  {'demand':>9}  {'p50':>9}  {pq:>9}  "
        f"{'active':>6}  {'warm':>4}  {'total':>5}  {'reason':<20}  message"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast dry-run``."""
    parser.add_argument(
        "--trace", default=None,
        help=f"trace CSV (default: the embedded {EMBEDDED}, see forecasting/data/ATTRIBUTION.md)",
    )
    add_scenario_arguments(parser, days=2.0)
    parser.add_argument(
        "--every", type=int, default=1,
        help="print every N-th tick (ticks that change the replica count always print)",
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after N printed lines")
    live = parser.add_argument_group(
        "live mode", "read live Prometheus (and the cluster, read-only) instead of a trace")
    add_prometheus_arguments(live)
    add_kube_arguments(live)
    live.add_argument("--target", default=None, metavar="NS/NAME",
                      help="the PredictiveAutoscaler to evaluate (its spec is read from the "
                           "cluster unless --config is given)")
    live.add_argument("--once", action="store_true", help="one decision, then exit")
    live.add_argument("--ticks", type=int, default=None,
                      help="stop after N decisions (default: until Ctrl-C)")
    live.add_argument("--replicas", type=int, default=None,
                      help="with no cluster: assume this many ready active pods "
                           "(default: the spec's minReplicas)")
    live.add_argument("--no-cluster", action="store_true",
                      help="do not contact Kubernetes at all")
    parser.set_defaults(**dict.fromkeys(TRACE_DEFAULTS))  # filled in by a trace replay


def _trace_only_flags(args: argparse.Namespace) -> list[str]:
    """The flags given that only a trace replay uses (the simulated scenario, the trace's
    column and span, which ticks to print)."""
    given = [("--column", args.column), ("--days", args.days), ("--step", args.step),
             ("--slo", args.slo), ("--peak-replicas", args.peak_replicas),
             ("--cold-start", args.cold_start), ("--warm-promotion", args.warm_promotion),
             ("--model", args.model), ("--every", args.every), ("--limit", args.limit)]
    return [flag for flag, value in given if value is not None]


def run(args: argparse.Namespace) -> int:
    """Replay and print; 2 on bad input (one line on stderr)."""
    try:
        if args.prometheus is not None or args.target is not None:
            if args.trace is not None:
                raise UsageError("--trace and --prometheus/--target exclude each other")
            trace_only = _trace_only_flags(args)
            if trace_only:
                raise UsageError(
                    f"{trace_only[0]} is for a trace replay (--trace, or the embedded trace); "
                    "the live mode reads the spec (--config or the cluster's) and Prometheus "
                    "instead, so it does not use it")
            from autoscaler.commands.live_dry_run import live_dry_run

            return live_dry_run(args)
        live_only = [flag for flag, given in (
            ("--once", args.once), ("--ticks", args.ticks is not None),
            ("--replicas", args.replicas is not None), ("--no-cluster", args.no_cluster),
            ("--kubeconfig", args.kubeconfig is not None),
            ("--context", args.context is not None)) if given]
        if live_only:
            raise UsageError(f"{live_only[0]} is for the live mode (--prometheus URL --target "
                             "NS/NAME); a trace replay does not use it")
        for name, default in TRACE_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        if args.every < 1:
            raise UsageError(f"--every must be >= 1, got {args.every}")
        if args.limit is not None and args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        if args.trace is None:
            with resources.as_file(embedded_trace()) as p:
                print(f"surgecast dry-run: embedded trace {EMBEDDED} "
                      "(see forecasting/data/ATTRIBUTION.md)")
                series = load_series(p, args.column, None)
        else:
            series = load_series(Path(args.trace), args.column, None)
        return dry_run(series, args)
    except UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2


def embedded_trace() -> Traversable:
    """The trace slice shipped in ``forecasting/data``: a package resource, or the file
    beside ``forecasting.series`` when ``forecasting`` resolves to a namespace package (a
    ``forecasting`` test folder on ``sys.path`` shadows it under pytest)."""
    import forecasting.series

    res = resources.files("forecasting") / "data" / EMBEDDED
    if res.is_file():
        return res
    return Path(forecasting.series.__file__).parent / "data" / EMBEDDED


def format_tick(t: Tick) -> str:
    """One aligned line: time, demand, p50, the policy quantile, active, warm, total,
    reason, message."""

    def num(x: float | None) -> str:
        return f"{x:>9.1f}" if x is not None else f"{'-':>9}"

    d = t.decision
    when = datetime.fromtimestamp(t.now_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{when:<19}  {num(t.demand_rps)}  {num(t.p50_rps)}  {num(t.pq_rps)}  "
        f"{d.active:>6}  {d.warm:>4}  {d.total:>5}  {d.reason.value:<20}  {d.message}"
    )


def dry_run(series: Series, args: argparse.Namespace) -> int:
    """Simulate surgecast on the trace and print the selected ticks and a summary."""
    from autoscaler.commands.backtest import model_name
    from autoscaler.core.scenario import RecordingAutoscaler
    from autoscaler.core.simulator import simulate

    spec = load_spec(args)
    trace, scenario = prepare(series, args, spec)
    rec = RecordingAutoscaler(
        make_policies(scenario, trace, ["surgecast"], args, spec, None)["surgecast"])
    res = simulate(trace, rec, scenario.config, name="surgecast")
    cfg = scenario.config
    print(
        f"{trace.name}: {len(trace) * trace.step_s / 3600:.2f} h, {len(rec.ticks)} ticks of "
        f"{rec.interval_s:g} s, {cfg.capacity_rps_per_replica:.3g} req/s per replica, "
        f"cold start {cfg.cold_start_s:g} s, model {model_name(args, spec)}; demand = the "
        f"delayed rate() the controller saw, p50/p{100 * rec.quantile:g} = forecast peaks over "
        "the lead window (req/s)"
    )
    print(header(rec.quantile))
    printed = 0
    prev_total: int | None = None
    for i, t in enumerate(rec.ticks):
        changed = prev_total is not None and t.decision.total != prev_total
        prev_total = t.decision.total
        if i % args.every and not changed:
            continue
        print(format_tick(t))
        printed += 1
        if args.limit is not None and printed >= args.limit:
            break
    print(
        f"summary: {100 * res.slo_share:.2f} % within the {cfg.slo_s:g} s SLO, p99 "
        f"{res.p99_latency_s:.3f} s, {res.gpu_hours:.2f} GPU-hours "
        f"({res.gpu_hours / scenario.oracle_gpu_hours:.3f} x oracle), {res.actions} actions"
    )
    return 0
