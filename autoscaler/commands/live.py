"""What ``surgecast run`` and the live ``surgecast dry-run`` share: Prometheus and
Kubernetes options, and building the source, the pod reader and the spec from them."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from autoscaler.commands.forecast import UsageError

if TYPE_CHECKING:
    from autoscaler.adapters.prometheus import PrometheusSource
    from autoscaler.config import PredictiveAutoscalerSpec
    from autoscaler.core.signals import PodCounts

__all__ = [
    "StaticPods",
    "add_kube_arguments",
    "add_prometheus_arguments",
    "make_source",
    "prometheus_url",
]

PROMETHEUS_ENV = "SURGECAST_PROMETHEUS_URL"


def add_prometheus_arguments(parser: argparse._ActionsContainer, *, hidden: bool = False) -> None:
    """``--prometheus`` and its auth/TLS options."""

    def h(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    parser.add_argument("--prometheus", default=None,
                        help=h(f"Prometheus base URL (default: ${PROMETHEUS_ENV})"))
    parser.add_argument("--prometheus-token-file", default=None,
                        help=h("bearer token file, re-read on every query"))
    parser.add_argument("--prometheus-ca-file", default=None, help=h("CA bundle for TLS"))
    parser.add_argument("--prometheus-basic-auth-env", default=None, metavar="PREFIX",
                        help=h("read basic auth from $PREFIX_USER and $PREFIX_PASSWORD"))
    parser.add_argument("--prometheus-timeout", type=float, default=5.0,
                        help=h("per-query timeout, seconds (default 5)"))
    parser.add_argument("--insecure-skip-verify", action="store_true",
                        help=h("do not verify Prometheus' TLS certificate"))


def add_kube_arguments(parser: argparse._ActionsContainer, *, hidden: bool = False) -> None:
    """``--kubeconfig``, ``--context``, ``--in-cluster``."""

    def h(text: str) -> str:
        return argparse.SUPPRESS if hidden else text

    parser.add_argument("--kubeconfig", default=None,
                        help=h("kubeconfig file (default: in-cluster, else $KUBECONFIG or "
                               "~/.kube/config)"))
    parser.add_argument("--context", default=None, help=h("kubeconfig context"))


def prometheus_url(args: argparse.Namespace) -> str:
    """``--prometheus`` or ``$SURGECAST_PROMETHEUS_URL``; a usage error without either."""
    url = args.prometheus or os.environ.get(PROMETHEUS_ENV)
    if not url:
        raise UsageError(f"give --prometheus URL (or set ${PROMETHEUS_ENV})")
    return str(url)


def make_source(args: argparse.Namespace, spec: PredictiveAutoscalerSpec) -> PrometheusSource:
    """A ``PrometheusSource`` for ``spec`` with the command line's URL, auth and TLS."""
    from autoscaler.adapters.prometheus import PrometheusSource
    from autoscaler.config import source_kwargs

    auth = None
    if args.prometheus_basic_auth_env:
        p = args.prometheus_basic_auth_env
        user, pw = os.environ.get(f"{p}_USER"), os.environ.get(f"{p}_PASSWORD")
        if user is None or pw is None:
            raise UsageError(f"--prometheus-basic-auth-env {p}: set ${p}_USER and ${p}_PASSWORD")
        auth = (user, pw)
    return PrometheusSource(
        prometheus_url(args), **source_kwargs(spec), timeout_s=args.prometheus_timeout,
        bearer_token_file=args.prometheus_token_file, basic_auth=auth,
        ca_file=args.prometheus_ca_file, insecure_skip_verify=args.insecure_skip_verify,
    )


class StaticPods:
    """A pod reader for runs with no cluster: the given count of ready active pods.

    Writes are refused (it is only used read-only)."""

    def __init__(self, replicas: int) -> None:
        from autoscaler.core.signals import PodCounts

        self.counts = PodCounts(active=replicas, desired=replicas)

    def observe(self) -> tuple[PodCounts, list[Any]]:
        """The assumed counts; no lead-time samples."""
        return self.counts, []

    def apply(self, active: int, warm: int, *, reason: str = "", message: str = "",
              reuse_observation: bool = False) -> None:
        """Never called in read-only runs."""
        raise RuntimeError("StaticPods cannot write")

    def event(self, reason: str, message: str, *, type_: str = "Normal") -> None:
        """Never called in read-only runs."""
        raise RuntimeError("StaticPods cannot write")
