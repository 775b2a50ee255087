"""``surgecast run``: the controller.

In a cluster (or with a kubeconfig) it watches ``PredictiveAutoscaler`` resources and scales
their Deployments; ``--config FILE --target NS/NAME`` runs one target from a YAML spec
instead (no CRD needed). Leader election (a ``coordination.k8s.io/v1`` Lease) is on by
default: only the leader writes. ``/healthz``, ``/readyz`` and ``/metrics`` are served on
``--metrics-port``. SIGTERM stops the loop after the running ticks, releases the Lease
(a standby takes over at once) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from autoscaler.commands.forecast import UsageError
from autoscaler.commands.live import (
    add_kube_arguments,
    add_prometheus_arguments,
    check_prometheus_arguments,
    make_source,
)

NAME = "run"
HELP = "Run the controller: watch PredictiveAutoscalers, forecast, and pre-scale Deployments."

log = logging.getLogger("surgecast.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast run``."""
    add_prometheus_arguments(parser)
    add_kube_arguments(parser)
    parser.add_argument("--namespace", default=None,
                        help="watch PredictiveAutoscalers in this namespace only (default all)")
    parser.add_argument("--config", default=None,
                        help="run one target from this YAML spec instead of watching CRs "
                             "(needs --target)")
    parser.add_argument("--target", default=None, metavar="NS/NAME",
                        help="with --config: the namespace and name the target is known by")
    parser.add_argument("--metrics-port", type=int, default=8080,
                        help="port of /healthz, /readyz, /metrics (default 8080; 0 = any)")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="bind address (default all)")
    parser.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                        help="skip leader election (only with a single replica)")
    parser.add_argument("--lease-name", default="surgecast-controller",
                        help="leader-election Lease name")
    parser.add_argument("--lease-namespace", default=None,
                        help="leader-election namespace (default: $POD_NAMESPACE or "
                             "surgecast-system)")
    parser.add_argument("--tick-workers", type=int, default=4,
                        help="threads running ticks (default 4)")
    parser.add_argument("--refit-workers", type=int, default=1,
                        help="threads fitting forecasters (default 1; raise it with many "
                             "targets or slow models: a fit never delays a tick)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 2 on bad input, 1 when the controller cannot start."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from autoscaler.errors import ConfigError

    try:
        return _run(args)
    except UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from autoscaler.adapters.kubernetes import KubernetesActuator, load_api_client
    from autoscaler.config import PredictiveAutoscalerSpec, load_config
    from autoscaler.controller.leader import LeaderElector
    from autoscaler.controller.loop import Controller, TargetKey
    from autoscaler.controller.metrics import ControllerMetrics
    from autoscaler.controller.server import ControllerServer
    from autoscaler.errors import ConfigError

    if (args.config is None) != (args.target is None):
        raise UsageError("--config and --target go together")
    if args.tick_workers < 1:
        raise UsageError("--tick-workers must be >= 1")
    if args.refit_workers < 1:
        raise UsageError("--refit-workers must be >= 1")
    check_prometheus_arguments(args)
    static: tuple[TargetKey, PredictiveAutoscalerSpec] | None = None
    if args.config is not None:
        static = (TargetKey.parse(args.target), load_config(args.config))
    api = load_api_client(args.kubeconfig, context=args.context)

    metrics = ControllerMetrics()
    leader: LeaderElector | None = None
    if args.leader_elect:
        ns = args.lease_namespace or os.environ.get("POD_NAMESPACE") or "surgecast-system"
        ident = os.environ.get("POD_NAME") or socket.gethostname()
        leader = LeaderElector(api, ns, args.lease_name, ident, on_change=metrics.set_leader)
    else:
        metrics.set_leader(True)

    def can_write() -> bool:
        return leader is None or leader.is_leader

    def source(key: TargetKey, spec: PredictiveAutoscalerSpec) -> Any:
        return make_source(args, spec)

    def pods(namespace: str, deployment: str) -> Any:
        return KubernetesActuator(api, namespace, deployment, component="surgecast-controller")

    ctl = Controller(source, pods, api_client=None if static else api,
                     namespace=args.namespace, can_write=can_write, metrics=metrics,
                     tick_workers=args.tick_workers, refit_workers=args.refit_workers)
    server = ControllerServer(metrics, host=args.metrics_host, port=args.metrics_port,
                              healthy=ctl.healthy, ready=ctl.ready)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ConfigError:
        raise
    log.info("serving /healthz /readyz /metrics on %s:%d", args.metrics_host, server.port)
    if leader is not None:
        leader.start()
    if static is not None:
        ctl.upsert(*static)
    ctl.start(watch=static is None)
    try:
        stop.wait()
    finally:
        ctl.stop()
        if leader is not None:
            leader.stop(release=True)
        server.stop()
        log.info("stopped")
    return 0
