"""The worker's Prometheus signals, on a registry of its own (one per worker instance).

Names follow Prometheus conventions (``surgecast_worker_`` prefix, base units, ``_total`` on
counters) and keep the meaning of vLLM's metrics; the table in docs/model-worker.md lists the
vLLM and TGI equivalent of each. GPU gauges come from NVML and exist only when a GPU is
present: absent, not zero, without one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

P = "surgecast_worker_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The exposition format :meth:`WorkerMetrics.render` writes (Prometheus text 0.0.4)."""
STATES = ("loading", "warm", "active", "draining")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

#: our name -> (vLLM equivalent, TGI equivalent); the documented mapping.
EQUIVALENTS: dict[str, tuple[str, str]] = {
    P + "requests_total": ("vllm:request_success_total (2xx only)", "tgi_request_count"),
    P + "e2e_request_latency_seconds": ("vllm:e2e_request_latency_seconds", "tgi_request_duration"),
    P + "request_queue_time_seconds": (
        "vllm:request_queue_time_seconds",
        "tgi_request_queue_duration",
    ),
    P + "time_to_first_token_seconds": ("vllm:time_to_first_token_seconds", "-"),
    # one observation per request (its mean), like vLLM's request_* histogram; not the
    # per-token vllm:inter_token_latency_seconds (formerly vllm:time_per_output_token_seconds)
    P + "time_per_output_token_seconds": (
        "vllm:request_time_per_output_token_seconds",
        "tgi_request_mean_time_per_token_duration",
    ),
    P + "prompt_tokens_total": ("vllm:prompt_tokens_total", "tgi_request_input_length (hist)"),
    P + "generation_tokens_total": (
        "vllm:generation_tokens_total",
        "tgi_request_generated_tokens (hist)",
    ),
    P + "num_requests_running": ("vllm:num_requests_running", "-"),
    P + "num_requests_waiting": ("vllm:num_requests_waiting", "tgi_queue_size"),
    P + "batch_size": ("- (vllm:num_requests_running per step)", "tgi_batch_current_size"),
    P + "cache_hits_total": ("- (vllm:prefix_cache_hits is per token)", "-"),
    P + "cache_misses_total": ("-", "-"),
    P + "model_load_seconds": ("-", "-"),
    P + "weights_offloaded": ("- (vLLM sleep mode: /is_sleeping)", "-"),
    P + "weight_restore_seconds": ("- (vLLM: time of POST /wake_up)", "-"),
    P + "model_weight_bytes": ("- (vLLM logs the weights' memory at start-up)", "-"),
    P + "state": ("- (vLLM sleep mode: /is_sleeping)", "-"),
    P + "gpu_utilization_ratio": ("DCGM_FI_DEV_GPU_UTIL / 100", "-"),
    P + "gpu_memory_used_bytes": ("DCGM_FI_DEV_FB_USED * 2^20", "-"),
}


class _NvmlCollector(Collector):
    """GPU utilization and memory per device, read from NVML at scrape time."""

    def __init__(self, nvml: Any, count: int) -> None:
        self.nvml = nvml
        self.count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily(
            P + "gpu_utilization_ratio", "GPU busy ratio (NVML)", labels=["gpu"]
        )
        mem = GaugeMetricFamily(
            P + "gpu_memory_used_bytes", "GPU memory used (NVML)", labels=["gpu"]
        )
        for i in range(self.count):
            h = self.nvml.nvmlDeviceGetHandleByIndex(i)
            util.add_metric([str(i)], self.nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
            mem.add_metric([str(i)], float(self.nvml.nvmlDeviceGetMemoryInfo(h).used))
        yield util
        yield mem


def _nvml_collector() -> _NvmlCollector | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception:  # no driver, no library, no device: the GPU metrics stay absent
        return None
    return _NvmlCollector(pynvml, count) if count > 0 else None


class WorkerMetrics:
    """All metrics of one worker; ``render()`` gives the exposition text."""

    def __init__(self, model_name: str, gpu: bool | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, m = self.registry, ["model_name"]
        self.model_name = model_name
        self.requests = Counter(
            P + "requests",
            "Finished HTTP requests by endpoint and status code",
            ["model_name", "endpoint", "status"],
            registry=r,
        )
        self.e2e = Histogram(
            P + "e2e_request_latency_seconds",
            "Arrival to last byte",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.queue_time = Histogram(
            P + "request_queue_time_seconds",
            "Arrival to batch start",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.ttft = Histogram(
            P + "time_to_first_token_seconds",
            "Arrival to first token",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.tpot = Histogram(
            P + "time_per_output_token_seconds",
            "Per-request mean time per output token after the first: (last token - first "
            "token) / (tokens - 1), one observation per request of 2+ tokens",
            m,
            buckets=TOKEN_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.prompt_tokens = Counter(
            P + "prompt_tokens", "Prefilled prompt tokens", m, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            P + "generation_tokens", "Generated tokens", m, registry=r
        ).labels(model_name)
        self.running = Gauge(
            P + "num_requests_running", "Requests in the decoding batch", m, registry=r
        ).labels(model_name)
        self.waiting = Gauge(
            P + "num_requests_waiting", "Requests queued for a batch", m, registry=r
        ).labels(model_name)
        self.batch_size = Histogram(
            P + "batch_size",
            "Sequences per decode step (per batch with --admission batch)",
            m,
            buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.cache_hits = Counter(
            P + "cache_hits", "Deterministic requests answered from cache", m, registry=r
        ).labels(model_name)
        self.cache_misses = Counter(
            P + "cache_misses", "Cacheable requests not in cache", m, registry=r
        ).labels(model_name)
        self.load_seconds = Gauge(
            P + "model_load_seconds", "Time to load weights", m, registry=r
        ).labels(model_name)
        self.weight_bytes = Gauge(
            P + "model_weight_bytes",
            "Bytes of the loaded weights (int8 linears counted at 1 byte per weight)",
            m,
            registry=r,
        ).labels(model_name)
        self.weights_offloaded = Gauge(
            P + "weights_offloaded",
            "1 while the weights are in host memory (warm standby offload), else 0",
            m,
            registry=r,
        ).labels(model_name)
        self.weight_restore = Histogram(
            P + "weight_restore_seconds",
            "Moving the weights back to the serving device on wake-up",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self._state = Gauge(
            P + "state",
            "1 for the worker's current state, else 0",
            ["model_name", "state"],
            registry=r,
        )
        self.set_state("loading")
        nv = _nvml_collector() if gpu is not False else None
        if nv is not None:
            r.register(nv)
        self.gpu = nv is not None

    def set_state(self, state: str) -> None:
        """Mark ``state`` (one of :data:`STATES`) as current."""
        if state not in STATES:
            raise ValueError(f"unknown worker state {state!r}; expected one of {STATES}")
        for s in STATES:
            self._state.labels(self.model_name, s).set(1.0 if s == state else 0.0)

    def count_request(self, endpoint: str, status: int) -> None:
        """Count one finished HTTP request."""
        self.requests.labels(self.model_name, endpoint, str(status)).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` on a port of its own, answered by one plain thread (no event loop, no
    per-request thread): a scrape never queues behind the token streams the event loop writes,
    only for the GIL, which the switch interval bounds. One connection at a time (HTTP/1.0,
    closed after each answer) is plenty for a few scrapers."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                body = render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = HTTPServer((host, port), Handler)
        self.port = int(self._httpd.server_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
