"""Prometheus as a :class:`autoscaler.ports.MetricsSource` (on ``prometheus-api-client``).

Each tick runs one instant query, evaluated *at* ``now_s``, that answers every signal: the
signals' queries joined with ``or``, each tagged by ``label_replace`` with a
``surgecast_signal`` label naming it (:mod:`._promql`). Should Prometheus refuse it (a
template that is bad PromQL or returns a scalar; an error status during a rollout), or fail
it in transport while single queries answer (a timeout on a loaded server), that tick and
those of the next ``combine_retry_s`` send one query per signal, which isolates the bad
one; then a tick tries the combined query again (``combine_queries=False`` never
combines). History for fitting comes from range queries cut into chunks of at most
``max_points`` (Prometheus refuses more than 11,000 points per series). PromQL comes from
:class:`QuerySet` templates: ``$selector`` is replaced by the target's label matchers,
``$gpu_selector`` by the GPU exporter's, and ``$window`` by the rate window. Presets:
:data:`PRESETS` (``surgecast``, ``vllm``, ``tgi``) and :data:`GPU_PRESETS` (``worker``,
``dcgm``).

Missing is never zero: a query that matches nothing, returns NaN, a negative value or fails
leaves its signal ``None`` with the reason in ``Signals.errors`` (the KEDA #3065 lesson).
Only an unreachable or wholly failing server raises :class:`~autoscaler.errors.MetricsUnavailable`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from autoscaler.adapters._promql import (
    SIGNAL_LABEL,
    Readings,
    by_signal,
    combined,
    drop_negative,
    is_vector,
    one_sample,
    unclosed,
)
from autoscaler.core.signals import Signals
from autoscaler.errors import ConfigError, MetricsUnavailable
from forecasting.errors import SeriesError
from forecasting.series import Series

__all__ = [
    "GPU_PRESETS",
    "MAX_POINTS",
    "PRESETS",
    "PrometheusSource",
    "QuerySet",
    "preset",
]

log = logging.getLogger(__name__)

#: Prometheus' hard limit on points per series in one range query.
MAX_POINTS = 11_000


@dataclass(frozen=True)
class QuerySet:
    """PromQL templates, one per signal; ``None`` disables a signal (it stays ``None``).

    Every query must return one series (aggregate with ``sum``/``avg``).

    Attributes:
        demand_rps: request rate, req/s (also the history signal unless ``history`` is set).
        tokens_per_s: prompt + generated tokens per second.
        queue_depth: requests waiting, summed over the pods.
        running: requests in progress, summed over the pods.
        gpu_util_ratio: mean GPU utilisation in [0, 1].
        throughput_rps: requests served (completed successfully) per second, summed over
            the pods: what refines the per-replica capacity while the pods are saturated
            (a queue per pod). Missing, it only means no refinement.
        freshness: Unix time of the newest raw demand sample (``timestamp(...)``), for
            staleness detection; without it staleness cannot be told.
        history: the demand signal for range queries, if it differs from ``demand_rps``.
    """

    demand_rps: str | None = None
    tokens_per_s: str | None = None
    queue_depth: str | None = None
    running: str | None = None
    gpu_util_ratio: str | None = None
    throughput_rps: str | None = None
    freshness: str | None = None
    history: str | None = None

    def render(self, **params: str) -> dict[str, str]:
        """The non-empty templates with ``$selector``, ``$gpu_selector``, ``$window`` filled."""
        out: dict[str, str] = {}
        for f in fields(self):
            tpl = getattr(self, f.name)
            if tpl is None:
                continue
            try:
                out[f.name] = Template(tpl).substitute(params)
            except (KeyError, ValueError) as exc:
                raise ConfigError(
                    f"PromQL template for {f.name!r} has an unknown or bad placeholder "
                    f"({exc}); allowed: $selector, $gpu_selector, $window. Template: {tpl!r}"
                ) from None
        return out


def _plus_queue_growth(finished: str, waiting: str) -> str:
    """Demand as arrivals: the rate of finished requests plus the waiting queue's growth.

    Our worker and vLLM count a request when it *finishes*, so a saturated fleet's finished
    rate is capped at its throughput while the queue grows; what arrived is what finished plus
    what the queue gained (``deriv``, per second, over the same window; a queue that is
    not exported adds 0). Clamped at 0: a fitted slope can undershoot a draining queue."""
    return (
        f"clamp_min({finished} + (sum(deriv({waiting}{{$selector}}[$window])) or vector(0)), 0)"
    )


#: Our model worker (model_worker/metrics.py). Names follow vLLM's meanings. Demand is what
#: the fleet must serve, by the ``status`` label: 2xx, 5xx, 429 (refused for want of
#: capacity: unmet demand, the very reason to scale up) and 499 (the client left
#: mid-request); the other 4xx (400, 401, 404, 413, ...) are the client's mistake, which
#: more pods would not serve. The worker counts them as they finish, so the queue's growth
#: is added (:func:`_plus_queue_growth`). Throughput is what the pods served: the 2xx only.
#: The comma before ``$selector`` keeps the matchers valid PromQL when it is empty
#: (``{status=~"...",}``).
_SURGECAST = QuerySet(
    demand_rps=_plus_queue_growth(
        "sum(rate(surgecast_worker_requests_total"
        '{status=~"2..|5..|429|499",$selector}[$window]))',
        "surgecast_worker_num_requests_waiting",
    ),
    tokens_per_s=(
        "sum(rate(surgecast_worker_prompt_tokens_total{$selector}[$window]))"
        " + sum(rate(surgecast_worker_generation_tokens_total{$selector}[$window]))"
    ),
    queue_depth="sum(surgecast_worker_num_requests_waiting{$selector})",
    running="sum(surgecast_worker_num_requests_running{$selector})",
    throughput_rps=(
        'sum(rate(surgecast_worker_requests_total{status=~"2..",$selector}[$window]))'
    ),
    freshness="max(timestamp(surgecast_worker_requests_total{$selector}))",
)

#: vLLM: it has no arrivals counter, so demand is the completion rate plus the queue's
#: growth; throughput is the completion rate.
_VLLM = QuerySet(
    demand_rps=_plus_queue_growth(
        "sum(rate(vllm:request_success_total{$selector}[$window]))", "vllm:num_requests_waiting"
    ),
    tokens_per_s=(
        "sum(rate(vllm:prompt_tokens_total{$selector}[$window]))"
        " + sum(rate(vllm:generation_tokens_total{$selector}[$window]))"
    ),
    queue_depth="sum(vllm:num_requests_waiting{$selector})",
    running="sum(vllm:num_requests_running{$selector})",
    throughput_rps="sum(rate(vllm:request_success_total{$selector}[$window]))",
    freshness="max(timestamp(vllm:num_requests_running{$selector}))",
)

#: Hugging Face TGI: ``tgi_request_count`` is counted as a request arrives (at the top of
#: each handler), so its rate is arrivals already, with no queue growth to add. No
#: prompt-token counter, so tokens are the generated ones only. Its
#: counters carry no ``_total`` suffix (the Rust ``metrics`` exporter adds none).
_TGI = QuerySet(
    demand_rps="sum(rate(tgi_request_count{$selector}[$window]))",
    tokens_per_s="sum(rate(tgi_request_generated_tokens_sum{$selector}[$window]))",
    queue_depth="sum(tgi_queue_size{$selector})",
    running="sum(tgi_batch_current_size{$selector})",
    throughput_rps="sum(rate(tgi_request_success{$selector}[$window]))",
    freshness="max(timestamp(tgi_queue_size{$selector}))",
)

#: Engine presets by name; edit here when the worker's metric names change.
PRESETS: dict[str, QuerySet] = {"surgecast": _SURGECAST, "vllm": _VLLM, "tgi": _TGI}

#: GPU utilisation sources: the worker's own NVML gauge or NVIDIA DCGM exporter (percent).
GPU_PRESETS: dict[str, str] = {
    "worker": "avg(surgecast_worker_gpu_utilization_ratio{$gpu_selector})",
    "dcgm": "avg(DCGM_FI_DEV_GPU_UTIL{$gpu_selector}) / 100",
}


def preset(engine: str = "surgecast", gpu: str | None = "dcgm", **overrides: str) -> QuerySet:
    """A preset's :class:`QuerySet`, with a GPU source and per-signal overrides.

    Raises:
        ConfigError: unknown engine, GPU source or signal name.
    """
    if engine not in PRESETS:
        raise ConfigError(f"unknown engine preset {engine!r}; one of {sorted(PRESETS)}")
    q = PRESETS[engine]
    if gpu is not None:
        if gpu not in GPU_PRESETS:
            raise ConfigError(f"unknown GPU preset {gpu!r}; one of {sorted(GPU_PRESETS)}")
        q = replace(q, gpu_util_ratio=GPU_PRESETS[gpu])
    names = {f.name for f in fields(QuerySet)}
    bad = set(overrides) - names
    if bad:
        raise ConfigError(f"unknown signal(s) {sorted(bad)}; one of {sorted(names)}")
    return replace(q, **overrides)


_SIGNAL_FIELDS = (
    "demand_rps", "tokens_per_s", "queue_depth", "running", "gpu_util_ratio", "throughput_rps",
)


class PrometheusSource:
    """Signals and history from a Prometheus HTTP API.

    Args:
        base_url: e.g. ``http://prometheus.monitoring:9090``.
        queries: a :class:`QuerySet` (default: ``preset("surgecast")``).
        selector: label matchers for the target's pods, e.g. ``namespace="llm",app="w"``.
        gpu_selector: label matchers for the GPU exporter (default: ``selector``).
        window: rate window, e.g. ``"1m"`` (at least 4 scrape intervals).
        timeout_s: per-request timeout.
        max_staleness_s: the newest demand sample may be at most this old.
        stale_as_missing: when stale, report demand as missing (``None``) too.
        max_points: points per range query (≤ 11,000).
        bearer_token / bearer_token_file: ``Authorization: Bearer``; the file is re-read on
            every call, so projected service-account tokens can rotate.
        basic_auth: ``(user, password)``.
        ca_file: CA bundle for TLS; ``insecure_skip_verify`` turns verification off.
        retries: connection retries per request (urllib3).
        combine_queries: answer all signals with one instant query per tick (default);
            ``False`` sends one per signal. Either way the :class:`Signals` are the same.
            If Prometheus refuses the combined query (or answers it without the signal
            label, or fails it in transport while single queries answer: too heavy for a
            loaded Prometheus), that tick and the following ones send one query per
            signal, and a warning names the signal(s) to blame. When single queries fail
            too, Prometheus is down: the tick raises and nothing changes.
        combine_retry_s: after such a fallback, the first tick whose ``now_s`` is at least
            this many seconds later tries the combined query again (default 600 s; ``0``
            or less: never), so a refusal during a Prometheus rollout does not cost one
            query per signal for good. Refused again, that tick falls back at once
            (``1 + N`` queries, logged at DEBUG, not WARNING) and the wait starts again;
            answered, every tick combines again (logged at INFO). Templates that are
            never combined (``combine_queries=False``, fewer than two signals, unclosed
            brackets or strings) are never tried.

    Attributes:
        combined_active: ``True``: the next tick sends the combined query. ``False``: it
            sends one query per signal (``combine_queries=False``, fewer than two signals,
            unclosed brackets, or a fallback), unless its ``now_s`` is at or after
            ``combine_retry_at_s``: then it tries the combined query first.
        combine_retry_at_s: after a fallback, the ``now_s`` from which a tick tries the
            combined query again; ``None`` while combining, or when it is never retried.
        queries_last_tick: instant queries the last :meth:`signals` call sent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        queries: QuerySet | None = None,
        selector: str = "",
        gpu_selector: str | None = None,
        window: str = "1m",
        timeout_s: float = 5.0,
        max_staleness_s: float = 60.0,
        stale_as_missing: bool = True,
        max_points: int = MAX_POINTS,
        bearer_token: str | None = None,
        bearer_token_file: str | Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca_file: str | Path | None = None,
        insecure_skip_verify: bool = False,
        retries: int = 1,
        combine_queries: bool = True,
        combine_retry_s: float = 600.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"Prometheus URL must start with http:// or https://: {base_url!r}")
        if not 2 <= max_points <= MAX_POINTS:
            raise ConfigError(f"max_points must be in [2, {MAX_POINTS}], got {max_points}")
        if timeout_s <= 0 or max_staleness_s <= 0:
            raise ConfigError("timeout_s and max_staleness_s must be positive")
        if bearer_token and bearer_token_file:
            raise ConfigError("give bearer_token or bearer_token_file, not both")
        if (bearer_token or bearer_token_file) and basic_auth:
            raise ConfigError("give a bearer token or basic auth, not both")
        if math.isnan(combine_retry_s):
            raise ConfigError("combine_retry_s must be a number of seconds (≤ 0: never)")
        self.base_url = base_url.rstrip("/")
        self.queries = queries if queries is not None else preset("surgecast")
        self.rendered = self.queries.render(
            selector=selector,
            gpu_selector=selector if gpu_selector is None else gpu_selector,
            window=window,
        )
        self.timeout_s = timeout_s
        self.max_staleness_s = max_staleness_s
        self.stale_as_missing = stale_as_missing
        self.max_points = max_points
        self.insecure_skip_verify = insecure_skip_verify
        if insecure_skip_verify:
            log.warning("TLS verification of %s is off (insecure_skip_verify)", self.base_url)
        self._token = bearer_token
        self._token_file = Path(bearer_token_file) if bearer_token_file else None
        session = requests.Session()
        session.verify = False if insecure_skip_verify else (str(ca_file) if ca_file else True)
        retry = Retry(total=retries, connect=retries, read=0, backoff_factor=0.1,
                      status_forcelist=(502, 503, 504), allowed_methods=("GET", "POST"))
        self._prom = PrometheusConnect(
            url=self.base_url, retry=retry, session=session, auth=basic_auth,
            timeout=timeout_s,  # requests accepts float seconds
        )
        self._wanted = {n: self.rendered[n] for n in (*_SIGNAL_FIELDS, "freshness")
                        if n in self.rendered}
        self.combine_queries = combine_queries
        self.combine_retry_s = combine_retry_s
        self._combined = combined(self._wanted) if combine_queries else None
        if combine_queries and len(self._wanted) > 1 and self._combined is None:
            log.warning("PromQL for %s has unclosed brackets or strings; querying each signal "
                        "separately", ", ".join(unclosed(self._wanted)))
        self._fell_back_at_s: float | None = None  # now_s of the latest fallback
        # Prometheus failed the last tick in transport, combined and single queries alike:
        # each tick then sends one query, combined and single in turn (a hung server costs
        # one timeout per tick, not two), until one answers
        self._down = False
        self._probe_each = False
        self.queries_last_tick = 0

    @property
    def combined_active(self) -> bool:
        """Whether the next :meth:`signals` call sends the combined query, whatever its
        ``now_s`` (see :attr:`combine_retry_at_s` for a retry after a fallback)."""
        return self._combined is not None and self._fell_back_at_s is None

    @property
    def combine_retry_at_s(self) -> float | None:
        """After a fallback, the ``now_s`` from which a tick tries the combined query again."""
        if self._combined is None or self._fell_back_at_s is None or self.combine_retry_s <= 0:
            return None
        return self._fell_back_at_s + self.combine_retry_s

    # ------------------------------------------------------------------ helpers
    def _refresh_headers(self) -> None:
        token = self._token
        if self._token_file is not None:
            try:
                token = self._token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise MetricsUnavailable(
                    f"cannot read bearer token file {self._token_file}: {exc}"
                ) from exc
        self._prom.headers = {"Authorization": f"Bearer {token}"} if token else None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; map transport failures to :class:`MetricsUnavailable`."""
        try:
            with warnings.catch_warnings():
                if self.insecure_skip_verify:  # asked for explicitly; warned once at start
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return fn(*args, **kwargs)
        except requests.Timeout as exc:
            raise MetricsUnavailable(
                f"Prometheus at {self.base_url} did not answer within {self.timeout_s:g} s"
            ) from exc
        except requests.ConnectionError as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            exc_mod = urllib3.exceptions
            timed_out = isinstance(reason, exc_mod.ReadTimeoutError) or (
                isinstance(reason, exc_mod.ConnectTimeoutError)
                and not isinstance(reason, exc_mod.NewConnectionError)  # refused: a subclass
            )
            if timed_out:  # a read timeout that went through urllib3's retry
                raise MetricsUnavailable(
                    f"Prometheus at {self.base_url} did not answer within {self.timeout_s:g} s"
                ) from exc
            raise MetricsUnavailable(
                f"Prometheus at {self.base_url} is unreachable: {_short(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"request to Prometheus at {self.base_url} failed: {_short(exc)}"
            ) from exc
        except (KeyError, TypeError, ValueError) as exc:
            # the client indexes response.json()["data"]["result"]: a 200 from something
            # that is not Prometheus' API (Grafana, a proxy's page, other JSON)
            raise MetricsUnavailable(
                f"{self.base_url} answered without a Prometheus query result "
                f"({type(exc).__name__}: {_short(exc)}): is it Prometheus' base URL?"
            ) from exc

    # ------------------------------------------------------------------ instant
    def _instant(self, promql: str, now_s: float) -> Any:
        self._refresh_headers()
        self.queries_last_tick += 1
        return self._call(self._prom.custom_query, promql, params={"time": f"{now_s:.3f}"})

    def query_at(self, promql: str, now_s: float) -> tuple[float, float]:
        """Evaluate ``promql`` at ``now_s``: ``(value, sample_time_s)``.

        Raises:
            MetricsUnavailable: the server is unreachable or timed out.
            LookupError: the result is empty, NaN, or not exactly one series (missing).
            PrometheusApiClientException: the server refused the query (e.g. bad PromQL).
        """
        return one_sample(self._instant(promql, now_s))

    def signals(self, now_s: float) -> Signals:
        """One tick's observations, each query evaluated at ``now_s``.

        A tick whose combined query and first single query both fail in transport finds
        Prometheus down. Until a query answers, each later tick sends one query, combined
        and single in turn: a hung server costs one timeout per tick, and whichever kind it
        answers first ends the outage (the following tick combines again).

        Raises:
            MetricsUnavailable: the server is unreachable, or every query failed.
        """
        self.queries_last_tick = 0
        retry_at = self.combine_retry_at_s
        due = self._fell_back_at_s is None or (retry_at is not None and now_s >= retry_at)
        combining = self._combined is not None and due
        try:
            if combining and self._down and self._probe_each:
                got = self._read_each(now_s)  # the next tick combines again
            elif combining:
                assert self._combined is not None
                got = self._read_combined(self._combined, now_s)
            else:
                got = self._read_each(now_s)
        except MetricsUnavailable:
            if combining:
                self._probe_each = self._down and not self._probe_each
                self._down = True
            raise
        self._down = False
        if got.refused and len(got.refused) == len(self._wanted):
            raise MetricsUnavailable(
                f"every query to Prometheus at {self.base_url} failed; first: "
                f"{next(iter(got.errors.values()))}"
            )
        drop_negative(got, _SIGNAL_FIELDS, self._wanted)
        values, errors = got.values, got.errors
        observed = values.get("freshness")
        demand = values.get("demand_rps")
        if observed is None and "freshness" not in self.rendered and demand is not None:
            observed = now_s  # without a freshness query, age cannot be told
        if observed is not None and now_s - observed > self.max_staleness_s:
            errors["staleness"] = (
                f"newest demand sample is {now_s - observed:.0f} s old "
                f"(> {self.max_staleness_s:g} s)"
            )
            if self.stale_as_missing and demand is not None:
                demand = None
                errors["demand_rps"] = "stale: " + errors["staleness"]
            if self.stale_as_missing and values.pop("throughput_rps", None) is not None:
                # a stale fleet measures no capacity either
                errors["throughput_rps"] = "stale: " + errors["staleness"]
        return Signals(
            now_s=now_s, demand_rps=demand, tokens_per_s=values.get("tokens_per_s"),
            queue_depth=values.get("queue_depth"), running=values.get("running"),
            gpu_util_ratio=values.get("gpu_util_ratio"), observed_at_s=observed, errors=errors,
            throughput_rps=values.get("throughput_rps"),
        )

    def _read_each(self, now_s: float) -> Readings:
        """One instant query per signal."""
        got = Readings()
        for name, promql in self._wanted.items():
            try:
                result = self._instant(promql, now_s)
            except PrometheusApiClientException as exc:
                got.refused.append(name)
                got.errors[name] = f"query failed ({_short(exc)}): {promql}"
                continue
            if not is_vector(result):
                got.not_vectors.append(name)
            try:
                got.values[name], _t = one_sample(result)
            except LookupError as exc:
                got.errors[name] = f"{exc}: {promql}"
        return got

    def _read_combined(self, promql: str, now_s: float) -> Readings:
        """All signals from the combined ``promql``; if refused, per signal for a while.

        When the combined query fails in transport (:class:`MetricsUnavailable`: a timeout,
        a 503 after the client's retry, a refused connection), the same tick asks per
        signal: if those answer, the combined query was the trouble (too slow for
        Prometheus while single ones are not) and the source falls back as for a refusal;
        if they fail too, Prometheus is down, the state stays as it was and the error
        propagates. While it stays down, a tick sends one query only (see :meth:`signals`).
        """
        retrying = self._fell_back_at_s is not None
        try:
            result = self._instant(promql, now_s)
        except PrometheusApiClientException as exc:
            why = f"refused the combined signal query ({_short(exc)})"
        except MetricsUnavailable as exc:
            if self._down:  # and still: this tick's probe failed, leave the next one to try
                raise
            why = f"failed the combined signal query ({exc}) but answers single ones"
        else:
            groups = by_signal(result, self._wanted)
            if groups is not None:
                if retrying:
                    self._fell_back_at_s = None
                    log.info("Prometheus at %s answered the combined signal query again; "
                             "one query per tick from now on", self.base_url)
                got = Readings()
                for name, query in self._wanted.items():
                    try:
                        got.values[name], _t = one_sample(groups[name])
                    except LookupError as exc:
                        got.errors[name] = f"{exc}: {query}"
                return got
            why = f"answered the combined signal query without a {SIGNAL_LABEL} label"
        each = self._read_each(now_s)
        self._fell_back_at_s = now_s  # a first fallback, or a retry refused: wait afresh
        blamed = [f"{n} (refused)" for n in each.refused]
        blamed += [f"{n} (not an instant vector)" for n in each.not_vectors]
        log.log(
            logging.DEBUG if retrying else logging.WARNING,
            "Prometheus at %s %s; querying each signal separately %s (%s)",
            self.base_url, why,
            f"for {self.combine_retry_s:g} s, then trying it again" if self.combine_retry_s > 0
            else "from now on",
            "cannot be combined: " + ", ".join(blamed) if blamed
            else "no signal's own query is at fault",
        )
        return each

    # ------------------------------------------------------------------ history
    def history(self, start_s: float, end_s: float, step_s: float) -> Series:
        """The demand signal on the grid ``ceil(start_s/step_s)*step_s + k*step_s < end_s``.

        Range queries are chunked so none exceeds ``max_points`` points. Steps with no data
        are ``NaN`` (missing, never zero).

        Raises:
            ConfigError: no demand/history query, or a bad range/step.
            MetricsUnavailable: the server is unreachable or refused a query.
        """
        promql = self.rendered.get("history") or self.rendered.get("demand_rps")
        if promql is None:
            raise ConfigError("no demand_rps/history query configured: nothing to fetch")
        return self.range_series(promql, start_s, end_s, step_s)

    def range_series(
        self, promql: str, start_s: float, end_s: float, step_s: float, *, kind: str = "rate"
    ) -> Series:
        """Any single-series ``promql`` over ``[start_s, end_s)`` as a :class:`Series`."""
        if not (step_s >= 1 and float(step_s).is_integer()):
            raise ConfigError(f"step_s must be a whole number of seconds ≥ 1, got {step_s!r}")
        t0 = math.ceil(start_s / step_s) * step_s
        n = math.ceil((end_s - t0) / step_s)
        if n <= 0:
            raise ConfigError(f"empty range: start {start_s:g} ≥ end {end_s:g}")
        self._refresh_headers()
        merged: dict[tuple[tuple[str, str], ...], list[Sequence[Any]]] = {}
        for i0 in range(0, n, self.max_points):
            cnt = min(self.max_points, n - i0)
            a = t0 + i0 * step_s
            b = a + (cnt - 1) * step_s
            try:
                part = self._call(
                    self._prom.custom_query_range, promql,
                    start_time=datetime.fromtimestamp(a, tz=UTC),
                    end_time=datetime.fromtimestamp(b, tz=UTC),
                    step=f"{step_s:g}",
                )
            except PrometheusApiClientException as exc:
                raise MetricsUnavailable(
                    f"range query refused by {self.base_url} ({_short(exc)}): {promql}"
                ) from exc
            for r in part:
                key = tuple(sorted(r.get("metric", {}).items()))
                merged.setdefault(key, []).extend(r.get("values", []))
        out = np.full(n, np.nan)
        if merged:
            result = [{"metric": dict(k), "values": v} for k, v in merged.items()]
            try:
                got = Series.from_prometheus(result, step_s=step_s, kind="rate", aggregate="sum")
            except SeriesError as exc:
                raise MetricsUnavailable(f"unusable range result for {promql}: {exc}") from exc
            off = round((got.start_s - t0) / step_s)
            out[off: off + len(got)] = got.values
        return Series(start_s=t0, step_s=float(step_s), values=out, kind=kind,  # type: ignore[arg-type]
                      absolute=True, name=promql)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."

