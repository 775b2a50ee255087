"""``surgecast backtest``: surgecast against the baselines on a trace, through the simulator.

The scenario is the benchmark's (``docs/autoscaling.md``): per-replica capacity such that
the trace's peak needs ``--peak-replicas`` at 70 % utilisation, log-normal cold start around
``--cold-start``, warm promotion ``--warm-promotion``, latency SLO ``--slo``. Prints one row
per policy (rich table), writes ``capacity.png`` (demand vs serving capacity per policy),
``forecast_fan.png`` (surgecast's forecast quantiles for the moment one cold-start lead
ahead, as made at each tick, against the demand that came) and ``summary.json`` into
``--out``.

With ``--config FILE`` (a ``PredictiveAutoscaler``), the scenario is the user's fleet instead:
the simulated pods serve the spec's ``capacity.requestsPerSecondPerReplica`` and start in its
``leadTime.coldStart``, and surgecast runs with the spec's settings, forecaster and the
controller's prediction guard, as the controller would run it. ``surgecast history`` writes
such a trace from Prometheus.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoscaler.commands._output import (
    check_writable_dir,
    stdout_console,
    write_atomic,
    write_text_atomic,
)
from autoscaler.commands.forecast import UsageError, load_series, warn_if_mostly_missing
from autoscaler.core.settings import DEFAULT_FORECAST_MODEL
from autoscaler.core.simulator import DEMAND_SIGNALS

if TYPE_CHECKING:
    from autoscaler.config import PredictiveAutoscalerSpec
    from autoscaler.core.decision import Decision
    from autoscaler.core.observation import Autoscaler, DemandView
    from autoscaler.core.scenario import Scenario
    from autoscaler.core.signals import Signals
    from autoscaler.core.simulator import SimResult
    from forecasting.series import Series

NAME = "backtest"
HELP = "Simulate surgecast and the HPA/KEDA/KPA/static/oracle baselines on a trace CSV."

#: table columns: (summary key, header, format)
COLUMNS = (
    ("policy", "policy", "s"),
    ("slo_pct", "% within SLO", ".2f"),
    ("p99_s", "p99 latency s", ".3f"),
    ("gpu_hours", "GPU-hours", ".2f"),
    ("x_oracle", "x oracle", ".3f"),
    ("actions", "actions", ".0f"),
    ("under_min", "min under-provisioned", ".2f"),
)


class FanRecorder:
    """Wraps surgecast and keeps, per tick that used a forecast, the forecast's quantiles
    at ``now + lead`` (the moment the pods ordered now become ready); decides exactly like
    the wrapped autoscaler."""

    def __init__(self, inner: Autoscaler) -> None:
        self.inner = inner
        self.name = inner.name
        self.interval_s = inner.interval_s
        #: the inner autoscaler's own demand lag, if any (see :class:`Autoscaler`)
        self.observation_lag_s: float | None = getattr(inner, "observation_lag_s", None)
        self.demand_signal: str | None = getattr(inner, "demand_signal", None)
        self.quantiles: tuple[float, ...] = ()
        self.points: list[tuple[float, tuple[float, ...]]] = []

    def decide(self, signals: Signals, view: DemandView) -> Decision:
        """Decide with the wrapped autoscaler; record the forecast it used."""
        from autoscaler.core.warm_pool import demand_window

        decision = self.inner.decide(signals, view)
        fc = getattr(self.inner, "last_forecast", None)
        if fc is not None and "predictive" in decision.components:
            at = signals.now_s + decision.components.get("lead_s", 0.0)
            self.quantiles = tuple(fc.quantiles)
            vals = tuple(float(demand_window(fc, q, at, at)[0]) for q in fc.quantiles)
            self.points.append((at, vals))
        return decision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast backtest``."""
    parser.add_argument("--trace", required=True, help="trace CSV (timestamp,<column>,...)")
    add_scenario_arguments(parser, days=None)
    parser.add_argument(
        "--policies",
        default="surgecast,hpa,hpa_rps,keda,kpa,static,oracle",
        help="comma-separated policies (surgecast, hpa, hpa_rps, keda, kpa, static, oracle, "
        "phpa, exact; default all but phpa and exact). exact: surgecast's policy fed the "
        "trace's true demand as its forecast, what a perfect forecast would buy",
    )
    parser.add_argument("--out", default="surgecast-backtest", help="output folder")
    parser.add_argument(
        "--history-days", type=float, default=0.0,
        help="replay from day N of the trace; surgecast's forecaster starts with the N days "
        "before, as the controller backfills forecast.history from Prometheus (default 0: "
        "no history, a fresh install)",
    )


def split_history(series: Series, days: float) -> tuple[Series, Series | None]:
    """``(replay, history)``: the trace from ``days`` on, and the part before it.

    Raises:
        UsageError: ``days`` is negative or leaves less than two points to replay.
    """
    from autoscaler.core.scenario import split_history as split

    try:
        return split(series, days)
    except ValueError as exc:
        raise UsageError(f"--history-days {days:g}: {exc}") from None


def add_scenario_arguments(parser: argparse.ArgumentParser, *, days: float | None) -> None:
    """The scenario options shared with ``surgecast dry-run``."""
    parser.add_argument("--column", default="requests", help="value column (default requests)")
    parser.add_argument(
        "--config", default=None, metavar="FILE",
        help="a PredictiveAutoscaler YAML (or its bare spec): surgecast runs with its settings "
        "and forecaster (and the controller's prediction guard), the simulated pods serve its "
        "capacity.requestsPerSecondPerReplica and start in its leadTime.coldStart, demand is "
        "averaged over its signals.window",
    )
    parser.add_argument(
        "--peak-replicas", type=int, default=None,
        help="replicas the trace's peak needs at 70%% utilisation (sets capacity; default 40; "
        "not with --config, whose capacity sets it)",
    )
    parser.add_argument(
        "--cold-start", default=None,
        help="median cold start of the simulated pods (default: --config's "
        "leadTime.coldStart, else 120s)",
    )
    parser.add_argument(
        "--warm-promotion", default=None,
        help="warm -> serving delay (default: --config's leadTime.warmPromotion, else 5s)",
    )
    parser.add_argument("--slo", default="500ms", help="latency SLO (default 500ms)")
    parser.add_argument("--step", default="15s", help="simulation step (default 15s)")
    parser.add_argument(
        "--demand-signal", choices=DEMAND_SIGNALS, default="arrivals",
        help="what the Prometheus-fed policies' demand rate() counts: arrivals (default; the "
        "presets' demand, finished requests plus the queue's growth) or completions (a "
        "finished-requests counter alone, capped at the throughput while the pods queue); "
        "the KPA counts arrivals",
    )
    parser.add_argument(
        "--days", type=float, default=days,
        help="use only the first N days of the trace"
        + (f" (default {days:g})" if days else " (default: all)"),
    )
    parser.add_argument(
        "--model", default=None,
        help="surgecast's forecaster (nowcast, seasonal_naive, ets, mstl, gbm, auto, ...; "
        f"default {DEFAULT_FORECAST_MODEL}; not with --config: its forecast.model)",
    )


def load_spec(args: argparse.Namespace) -> PredictiveAutoscalerSpec | None:
    """The ``--config`` spec (``None`` without one); a usage error for a bad file or for
    flags it decides itself."""
    from autoscaler.config import load_config
    from autoscaler.errors import ConfigError

    path = getattr(args, "config", None)
    if path is None:
        return None
    try:
        spec = load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.peak_replicas is not None:
        raise UsageError("--peak-replicas and --config exclude each other: the spec's "
                         "capacity.requestsPerSecondPerReplica sizes the pods")
    if args.model is not None:
        raise UsageError("--model and --config exclude each other: the spec's forecast.model "
                         "is used")
    return spec


def model_name(args: argparse.Namespace, spec: PredictiveAutoscalerSpec | None) -> str:
    """surgecast's forecaster: the spec's, ``--model``, or the default."""
    if spec is not None:
        return spec.forecast.model
    return DEFAULT_FORECAST_MODEL if args.model is None else str(args.model)


def make_policies(
    scenario: Scenario, series: Series, names: list[str], args: argparse.Namespace,
    spec: PredictiveAutoscalerSpec | None, history: Series | None,
) -> dict[str, Autoscaler]:
    """The policies by table label: the benchmark's surgecast, or the spec's (its settings,
    forecaster and the controller's default prediction guard, as ``surgecast run`` has)."""
    from autoscaler.config import forecaster_kwargs
    from autoscaler.core.scenario import build_policies, forecast_step

    if {"surgecast", "exact"} & set(names):
        fstep = (forecast_step(series.step_s) if spec is None
                 else float(forecaster_kwargs(spec)["forecast_step_s"]))
        k = fstep / scenario.step_s
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            whose = "the spec's forecast.step" if spec is not None else "its forecast step"
            raise UsageError(
                f"--step {scenario.step_s:g} s: surgecast forecasts in buckets of {fstep:g} s "
                f"({whose}), which must be a whole multiple of the simulation step; use a "
                "--step that divides it (15s does for whole minutes)"
            )
    if spec is None:
        return build_policies(scenario, series, names, model=model_name(args, None),
                              history=history)
    from autoscaler.config import to_policy_settings
    from autoscaler.core.prediction_guard import GuardSettings
    from autoscaler.errors import ConfigError

    try:
        settings = to_policy_settings(spec)
    except ConfigError as exc:
        raise UsageError(f"--config: {exc}") from None
    return build_policies(scenario, series, names, history=history, settings=settings,
                          forecaster=forecaster_kwargs(spec), guard=GuardSettings())


#: finest simulation step (``--step``): the controller ticks every 15 s
MIN_STEP_S = 1.0
#: most simulation steps one replay may take (``--step`` against the trace's span)
MAX_SIM_STEPS = 2_000_000
#: refuse a ``--config`` whose peak needs more than this many times its maxReplicas
MAX_CAPACITY_FACTOR = 10


def _duration(flag: str, raw: str) -> float:
    from forecasting.series import parse_duration

    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if not value > 0:
        raise UsageError(f"{flag} must be > 0, got {raw}")
    return value


def prepare(series: Series, args: argparse.Namespace,
            spec: PredictiveAutoscalerSpec | None = None) -> tuple[Series, Scenario]:
    """Slice the trace to ``--days``, check the flags and build the scenario (the user's
    fleet with ``spec``: see :func:`load_spec`)."""
    from autoscaler.core.scenario import MAX_REPLICAS, build_scenario, compatible_step
    from forecasting.models import REGISTRY as MODELS

    step_s = _duration("--step", args.step)
    if step_s < MIN_STEP_S:
        raise UsageError(f"--step must be at least {MIN_STEP_S:g} s, got {args.step}")
    lead = spec.lead_time if spec is not None else None

    def flag_or(value: str | None, default: str) -> str:
        return default if value is None else value  # '' is an error, not the default

    cold_s = _duration("--cold-start",
                       flag_or(args.cold_start, lead.cold_start if lead else "120s"))
    promo_s = _duration("--warm-promotion",
                        flag_or(args.warm_promotion, lead.warm_promotion if lead else "5s"))
    slo_s = _duration("--slo", args.slo)
    peak_replicas = 40 if args.peak_replicas is None else args.peak_replicas
    if peak_replicas < 1:
        raise UsageError(f"--peak-replicas must be >= 1, got {peak_replicas}")
    if peak_replicas > MAX_REPLICAS:
        raise UsageError(f"--peak-replicas must be <= {MAX_REPLICAS} (the simulator caps every "
                         f"policy at {MAX_REPLICAS} replicas), got {peak_replicas}")
    model = model_name(args, spec)
    if model not in MODELS:
        raise UsageError(
            f"unknown model {model!r}; available: {', '.join(sorted(MODELS))}"
        )
    if args.days is not None:
        if not (args.days > 0 and math.isfinite(args.days)):
            raise UsageError(f"--days must be a finite number > 0, got {args.days:g}")
        series = series.slice(0, max(1, round(args.days * 86400 / series.step_s)))
    if not compatible_step(series.step_s, step_s):
        raise UsageError(
            f"--step {args.step} and the trace step {series.step_s:g} s: one must be a whole "
            "multiple of the other"
        )
    warn_if_mostly_missing(getattr(args, "command", NAME), series,
                           "the replay interpolates them linearly")
    n_steps = len(series) * series.step_s / step_s
    if n_steps > MAX_SIM_STEPS:
        raise UsageError(
            f"--step {args.step} cuts the {len(series) * series.step_s / 86400:.3g} days of "
            f"trace into {n_steps:.3g} simulation steps, more than {MAX_SIM_STEPS:,}; use a "
            "coarser --step or fewer --days"
        )
    span_s = len(series) * series.step_s
    need_s = max(600.0, 2 * cold_s)
    if len(series) < 2 or span_s < need_s:
        raise UsageError(
            f"trace too short: {len(series)} points cover {span_s:g} s, need at least "
            f"{need_s:g} s (10 min and two cold starts) in 2 points or more"
        )
    if spec is not None:
        _check_capacity(series, step_s, spec, getattr(args, "command", NAME))
    try:
        scenario = build_scenario(
            series, step_s, peak_replicas=peak_replicas, cold_start_s=cold_s,
            warm_promotion_s=promo_s, slo_s=slo_s,
            capacity_rps=None if spec is None
            else spec.capacity.requests_per_second_per_replica,
            rate_window_s=60.0 if spec is None else _duration("signals.window",
                                                               spec.signals.window),
            replica_bounds=None if spec is None else (spec.min_replicas, spec.max_replicas),
            demand_signal=getattr(args, "demand_signal", "arrivals"),
        )
    except ValueError as exc:
        raise UsageError(str(exc).replace("slo_s", "--slo")) from None
    return series, scenario


def _check_capacity(series: Series, step_s: float, spec: PredictiveAutoscalerSpec,
                    command: str) -> None:
    """Before any simulation: refuse a spec whose capacity makes the trace's peak need more
    than :data:`MAX_CAPACITY_FACTOR` times its ``maxReplicas`` (a capacity in the wrong unit:
    the oracle's bound alone would loop over every replica slot), warn above ``maxReplicas``."""
    import numpy as np

    from autoscaler.core.simulator import demand_rates

    cap = spec.capacity.requests_per_second_per_replica
    util = spec.capacity.target_utilization
    with np.errstate(all="ignore"):
        peak = float(np.nanmax(demand_rates(series, step_s).values, initial=0.0))
    need = math.ceil(peak / (cap * util) - 1e-9) if math.isfinite(peak / (cap * util)) else 0
    if need > MAX_CAPACITY_FACTOR * spec.max_replicas:
        raise UsageError(
            f"--config: the trace's peak ({peak:.4g} req/s) needs "
            f"{f'{need:,}' if need < 10**9 else f'{need:.3g}'} replicas at "
            f"capacity.requestsPerSecondPerReplica {cap:g} and {100 * util:g} % utilisation, "
            f"more than {MAX_CAPACITY_FACTOR} x maxReplicas ({spec.max_replicas}): is the "
            "capacity in requests per second per replica?"
        )
    if need > spec.max_replicas:
        print(f"surgecast {command}: warning: the trace's peak needs {need} replicas at the "
              f"spec's {100 * util:g} % utilisation, more than its maxReplicas "
              f"{spec.max_replicas}: every policy but the oracle is capped below that",
              file=sys.stderr)


def _policy_names(raw: str) -> list[str]:
    from autoscaler.core.scenario import POLICY_LABELS

    names: list[str] = []
    for n in raw.split(","):
        n = n.strip()
        if n and n not in names:
            names.append(n)
    unknown = [n for n in names if n not in POLICY_LABELS]
    if unknown:
        raise UsageError(
            f"unknown policy {unknown[0]!r}; available: {', '.join(POLICY_LABELS)}"
        )
    if not names:
        raise UsageError("--policies is empty")
    return names


def run(args: argparse.Namespace) -> int:
    """Run the comparison; 2 on bad input (one line on stderr)."""
    try:
        names = _policy_names(args.policies)
        series = load_series(Path(args.trace), args.column, None)
        return backtest_and_report(series, names, args)
    except UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2


def backtest_and_report(series: Series, names: list[str], args: argparse.Namespace) -> int:
    """Simulate every policy; print the table, write the PNG and the JSON."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from autoscaler.core.scenario import compare

    spec = load_spec(args)
    if not args.out.strip():
        raise UsageError("--out is empty")
    series, history = split_history(series, getattr(args, "history_days", 0.0))
    series, scenario = prepare(series, args, spec)
    out = Path(args.out)
    check_writable_dir("--out", out)
    policies = make_policies(scenario, series, names, args, spec, history)
    fan = FanRecorder(policies["surgecast"]) if "surgecast" in policies else None
    if fan is not None:
        policies["surgecast"] = fan

    console = stdout_console()
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
        TimeElapsedColumn(), console=err, transient=True, disable=not sys.stderr.isatty(),
    )
    labels = list(policies)
    with progress:
        # one unit a simulated step of each policy: the bar moves within a long simulation
        task = progress.add_task(f"simulating {labels[0]}", total=None)
        finished: list[int] = [0]  # steps of the policies already simulated

        def step(name: str, k: int, n: int) -> None:
            i = labels.index(name)
            progress.update(
                task, total=n * len(labels), completed=finished[0] + k,
                description=f"simulating {name} ({i + 1}/{len(labels)})",
            )
            if k == n:
                finished[0] += n

        results = compare(series, scenario, policies, on_progress=step)

    _print_table(console, series, scenario, [row for row, _ in results])
    png = out / "capacity.png"
    write_atomic(png, lambda tmp: _plot(tmp, [res for _, res in results]))
    written = [png]
    if fan is not None:
        fan_png = out / "forecast_fan.png"
        sim = next(res for _, res in results if res.name == "surgecast")
        write_atomic(fan_png, lambda tmp: _plot_fan(tmp, fan, sim))
        written.append(fan_png)
    payload = summary_payload(series, scenario, args, results, spec)
    js = out / "summary.json"
    write_text_atomic(js, json.dumps(payload, indent=2) + "\n")
    written.append(js)
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
    return 0


def summary_payload(
    series: Series, scenario: Scenario, args: argparse.Namespace,
    results: list[tuple[dict[str, float | str], SimResult]],
    spec: PredictiveAutoscalerSpec | None = None,
) -> dict[str, Any]:
    """What ``summary.json`` holds: the scenario and one summary row per policy."""
    cfg = scenario.config
    return {
        "trace": series.name,
        "column": args.column,
        "trace_step_s": series.step_s,
        "start_s": series.start_s,
        "duration_s": len(series) * series.step_s,
        "model": model_name(args, spec),
        "config": getattr(args, "config", None),
        "history_days": getattr(args, "history_days", 0.0),
        "scenario": {
            "step_s": cfg.step_s,
            "rate_window_s": cfg.rate_window_s,
            "demand_signal": cfg.demand_signal,
            "peak_replicas": scenario.peak_replicas,
            "capacity_rps_per_replica": cfg.capacity_rps_per_replica,
            "cold_start_s": cfg.cold_start_s,
            "warm_promotion_s": cfg.warm_promotion_s,
            "slo_s": cfg.slo_s,
            "base_latency_s": cfg.base_latency_s,
            "initial_replicas": scenario.initial_replicas,
            "oracle_gpu_hours": scenario.oracle_gpu_hours,
        },
        "policies": [
            {**row, "reasons": dict(res.reasons)} for row, res in results
        ],
    }


def _print_table(
    console: Any, series: Series, scenario: Scenario, rows: list[dict[str, float | str]]
) -> None:
    from rich.table import Table

    cfg = scenario.config
    table = Table(
        title=f"{series.name}: {len(series) * series.step_s / 3600:.2f} h, step {cfg.step_s:g} s",
        caption=(
            f"{cfg.capacity_rps_per_replica:.3g} req/s per replica, cold start "
            f"{cfg.cold_start_s:g} s, warm promotion {cfg.warm_promotion_s:g} s, SLO "
            f"{cfg.slo_s:g} s; oracle {scenario.oracle_gpu_hours:.2f} GPU-h"
        ),
    )
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="left" if header == "policy" else "right")
    for r in rows:
        cells = []
        for key, _, spec in COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else format(v, spec))
        table.add_row(*cells)
    console.print(table)


def _plot(path: Path, results: list[SimResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        len(results), 1, figsize=(11, 2.2 * len(results)), sharex=True, squeeze=False
    )
    for ax, res in zip(axes[:, 0], results, strict=True):
        n = len(res.demand_rps)
        stride = max(1, n // 4000)  # keep the PNG light on long traces
        x = (np.arange(0, n, stride) * res.step_s) / 3600.0
        ax.plot(x, res.demand_rps[::stride], color="black", lw=0.8, label="demand req/s")
        cap = res.capacity_per_replica_rps
        ax.plot(
            x, res.capacity_rps[::stride], color="tab:blue", lw=1.0,
            label="serving capacity req/s", drawstyle="steps-post",
        )
        if float(np.max(res.warm, initial=0.0)) > 0:  # ready but idle: the warm pool
            ax.plot(
                x, ((res.active + res.warm) * cap)[::stride], color="tab:green", lw=0.8,
                ls="--", label="ready capacity (active + warm) req/s", drawstyle="steps-post",
            )
        ax.plot(
            x, ((res.starting + res.warm + res.active + res.terminating) * cap)[::stride],
            color="tab:red", lw=0.6, alpha=0.6,
            label="every pod paid for (starting, warm, active, terminating) x capacity",
            drawstyle="steps-post",
        )
        ax.set_title(
            f"{res.name}: {100 * res.slo_share:.2f} % within SLO, "
            f"{res.gpu_hours:.1f} GPU-h", fontsize=9,
        )
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("hours from the trace start")
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)


def _plot_fan(path: Path, fan: FanRecorder, res: SimResult) -> None:
    """Forecast fan: per tick, the quantiles for ``now + lead`` plotted at that moment
    (bands between the median and the outer quantiles), with the demand that came."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(11, 3.6))
    n = len(res.demand_rps)
    stride = max(1, n // 4000)
    x = (np.arange(0, n, stride) * res.step_s) / 3600.0
    ax.plot(x, res.demand_rps[::stride], color="black", lw=0.8, label="demand req/s")
    if fan.points:
        t = (np.array([p[0] for p in fan.points]) - res.start_s) / 3600.0
        vals = np.array([p[1] for p in fan.points])
        qs = fan.quantiles
        i_med = int(np.argmin([abs(q - 0.5) for q in qs]))
        uppers = [i for i in range(len(qs)) if qs[i] > qs[i_med]]
        for rank, i in enumerate(sorted(uppers, key=lambda i: -qs[i])):
            ax.fill_between(
                t, vals[:, i_med], vals[:, i], step="post", color="tab:orange",
                alpha=0.2 + 0.2 * rank, lw=0, label=f"forecast p50..p{100 * qs[i]:g}",
            )
        ax.plot(t, vals[:, i_med], color="tab:orange", lw=0.8, drawstyle="steps-post",
                label="forecast p50")
        title = "surgecast forecast fan at now + cold-start lead"
    else:
        title = "surgecast forecast fan: no forecast (history shorter than the model needs)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("hours from the trace start")
    ax.set_ylabel("req/s")
    ax.legend(fontsize=7, loc="upper left")
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
