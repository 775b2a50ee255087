"""What ``surgecast run`` and the live ``surgecast dry-run`` share: Prometheus and
Kubernetes options, and building the source, the pod reader and the spec from them."""

from __future__ import annotations

import argparse
import math
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
    "check_prometheus_arguments",
    "make_source",
    "prometheus_url",
    "read_only_cluster",
    "target_spec",
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


def check_prometheus_arguments(args: argparse.Namespace) -> None:
    """Usage errors for ``--prometheus-timeout`` (finite, > 0), for a
    ``--prometheus-ca-file`` or ``--prometheus-token-file`` that is missing, not a regular
    file or unreadable, and for a token file with nothing but whitespace, before any query
    (the token file is otherwise first read by the first query, and again by each: a FIFO
    would block it)."""
    timeout_s = args.prometheus_timeout
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise UsageError(f"--prometheus-timeout must be a finite number of seconds > 0, got "
                         f"{timeout_s:g}")
    if args.prometheus_ca_file is not None:
        _check_readable_file("--prometheus-ca-file", args.prometheus_ca_file)
    if args.prometheus_token_file is not None:
        head = _check_readable_file("--prometheus-token-file", args.prometheus_token_file, 4096)
        if not head.strip():
            raise UsageError(f"--prometheus-token-file {args.prometheus_token_file}: holds no "
                             "token (requests would go without Authorization)")


def _check_readable_file(flag: str, path: str, size: int = 1) -> bytes:
    """A usage error naming ``flag`` and ``path`` unless ``path`` is a regular file that
    opens for reading; returns its first ``size`` bytes."""
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "not found"
        raise UsageError(f"{flag} {path}: {what}")
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None


def make_source(args: argparse.Namespace, spec: PredictiveAutoscalerSpec) -> PrometheusSource:
    """A ``PrometheusSource`` for ``spec`` with the command line's URL, auth and TLS."""
    from autoscaler.adapters.prometheus import PrometheusSource
    from autoscaler.config import source_kwargs

    check_prometheus_arguments(args)
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


def read_only_cluster(args: argparse.Namespace) -> tuple[Any | None, str]:
    """A read-only API client (``--kubeconfig``/``--context``, in-cluster), or ``None`` with
    the reason (``--no-cluster``, no configuration found); a usage error when an explicit
    ``--kubeconfig`` does not load."""
    if getattr(args, "no_cluster", False):
        return None, "--no-cluster"
    from autoscaler.adapters.kubernetes import load_api_client
    from autoscaler.errors import ConfigError

    try:
        return load_api_client(args.kubeconfig, context=args.context, read_only=True), ""
    except ConfigError as exc:
        if args.kubeconfig is not None:
            raise UsageError(str(exc)) from None
        return None, str(exc)


def target_spec(args: argparse.Namespace, api: Any | None, ns: str, name: str
                ) -> PredictiveAutoscalerSpec:
    """The ``--config`` spec, else the ``PredictiveAutoscaler`` ``ns/name`` read through
    ``api``; usage errors name what to give instead."""
    from autoscaler.config import load_config, validate_resource
    from autoscaler.errors import ConfigError

    if args.config is not None:
        try:
            return load_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    if api is None:
        raise UsageError("no cluster to read the PredictiveAutoscaler from: give --config FILE")
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from autoscaler.controller.status import GROUP, PLURAL, VERSION

    try:
        obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        raise UsageError(f"cannot read PredictiveAutoscaler {ns}/{name} ({exc.status} "
                         f"{exc.reason}); give --config FILE") from None
    except Exception as exc:  # unreachable API server
        raise UsageError(f"cannot read PredictiveAutoscaler {ns}/{name}: {exc}; "
                         "give --config FILE") from None
    try:
        return validate_resource(obj).spec
    except ConfigError as exc:
        raise UsageError(f"PredictiveAutoscaler {ns}/{name} is invalid: {exc}") from None
