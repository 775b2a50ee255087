"""``surgecast dry-run --prometheus URL --target NS/NAME``: the controller's own tick on
live data, printed, never acted on.

- Prometheus: the same queries and history fetch as the controller.
- Kubernetes, when reachable (kubeconfig or in-cluster) and not ``--no-cluster``: the
  target's pods and, without ``--config``, the ``PredictiveAutoscaler`` itself, read through
  :class:`~autoscaler.adapters.kubernetes.ReadOnlyApiClient`, which refuses any request
  but GET before it leaves the process. The runner is also built with ``can_write`` false
  and no status writer, so nothing tries to write in the first place.
- With no cluster, ``--replicas`` (default the spec's ``minReplicas``) stands for the
  ready active pods.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from autoscaler.commands.dry_run import header
from autoscaler.commands.forecast import UsageError
from autoscaler.commands.live import (
    StaticPods,
    check_prometheus_arguments,
    make_source,
    prometheus_url,
    read_only_cluster,
    target_spec,
)

if TYPE_CHECKING:
    from autoscaler.controller.target import TargetRunner, TickOutcome

__all__ = ["format_outcome", "live_dry_run"]


def format_outcome(runner: TargetRunner, out: TickOutcome) -> str:
    """One aligned line in the trace dry-run's columns."""
    from datetime import UTC, datetime

    def num(x: float | None) -> str:
        return f"{x:>9.1f}" if x is not None else f"{'-':>9}"

    when = datetime.fromtimestamp(out.now_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    peaks = out.forecast_peaks(runner.quantiles, runner._lead_s(), runner.settings.interval_s)
    pq = peaks.get(runner.settings.quantile)
    head = f"{when:<19}  {num(out.signals.demand_rps)}  {num(peaks.get(0.5))}  {num(pq)}  "
    d = out.decision
    if d is None:
        return head + f"{'-':>6}  {'-':>4}  {'-':>5}  {'NoDecision':<20}  {'; '.join(out.errors)}"
    pred = "" if out.prediction_used else " [reactive only]"
    return head + (f"{d.active:>6}  {d.warm:>4}  {d.total:>5}  {d.reason.value:<20}  "
                   f"{d.message}{pred}")


def live_dry_run(args: argparse.Namespace) -> int:
    """Refit, then tick and print until ``--once``/``--ticks``/Ctrl-C."""
    from autoscaler.adapters.kubernetes import KubernetesActuator
    from autoscaler.controller.loop import TargetKey
    from autoscaler.controller.target import TargetRunner
    from autoscaler.errors import ConfigError

    if args.target is None:
        raise UsageError("live mode needs --target NAMESPACE/NAME")
    prometheus_url(args)
    check_prometheus_arguments(args)
    if args.ticks is not None and args.ticks < 1:
        raise UsageError(f"--ticks must be >= 1, got {args.ticks}")
    if args.replicas is not None and args.replicas < 0:
        raise UsageError(f"--replicas must be >= 0, got {args.replicas}")
    try:
        key = TargetKey.parse(args.target)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    api, why_not = read_only_cluster(args)
    spec = target_spec(args, api, key.namespace, key.name)
    pods: Any
    if api is not None:
        pods = KubernetesActuator(api, key.namespace, spec.scale_target_ref.name,
                                  component="surgecast-dry-run", max_retries=1)
        where = f"cluster (read-only), Deployment {key.namespace}/{spec.scale_target_ref.name}"
    else:
        n = spec.min_replicas if args.replicas is None else args.replicas
        pods = StaticPods(n)
        where = f"no cluster ({why_not.splitlines()[0][:120]}); assuming {n} ready active pods"
    try:
        source = make_source(args, spec)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    runner = TargetRunner(str(key), spec, source, pods, can_write=lambda: False,
                          write_status=None)
    print(f"surgecast dry-run (live, read-only): {key}; Prometheus {source.base_url}; {where}; "
          f"model {spec.forecast.model}, quantile {spec.forecast.quantile:g}, every "
          f"{runner.settings.interval_s:g} s")
    now = time.time()
    if runner.refit(now):
        assert runner.live.history is not None
        print(f"fitted {spec.forecast.model} on {runner.live.history.n_observed} buckets of "
              f"{runner.step_s:g} s")
    else:
        print(f"no forecast yet ({runner.live.last_error or runner._history_failed}); "
              "deciding on the reactive rule", file=sys.stderr)
    print(header(runner.settings.quantile))
    n_ticks = 1 if args.once else args.ticks
    done = 0
    next_refit = now + runner.refit_every_s
    try:
        while True:
            now = time.time()
            if now >= next_refit:
                runner.refit(now)
                next_refit = now + runner.refit_every_s
            out = runner.tick(now)
            print(format_outcome(runner, out), flush=True)
            for e in out.errors:
                print(f"  ! {e}", file=sys.stderr)
            done += 1
            if n_ticks is not None and done >= n_ticks:
                return 0
            time.sleep(max(0.0, now + runner.settings.interval_s - time.time()))
    except KeyboardInterrupt:
        return 0
