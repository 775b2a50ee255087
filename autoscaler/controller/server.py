"""``/healthz``, ``/readyz`` and ``/metrics`` on a small HTTP server of its own.

The server runs on its own thread (stdlib :class:`~http.server.ThreadingHTTPServer`, one
daemon thread per connection), so a probe or a scrape never waits on the control loop and a
slow scrape never delays a tick.

- ``GET /healthz``: 200 ``ok`` while ``healthy()`` says so, else 503 with its reason
  (liveness: the kubelet restarts the pod after repeated failures);
- ``GET /readyz``: the same from ``ready()`` (readiness);
- ``GET /metrics``: :meth:`ControllerMetrics.render`;
- any other path: 404; any other method: 405 (with ``Allow: GET``).

A callback that raises answers 503 with the exception's text; the server thread survives.
Access logs go to the ``autoscaler.controller.server`` logger at DEBUG.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from autoscaler.controller.metrics import ControllerMetrics
from autoscaler.errors import ConfigError

__all__ = ["ControllerServer", "Probe"]

log = logging.getLogger(__name__)

#: A probe callback: ``(ok, reason)``.
Probe = Callable[[], tuple[bool, str]]

_TEXT = "text/plain; charset=utf-8"


def _always_ok() -> tuple[bool, str]:
    return True, "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    controller: ControllerServer


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "surgecast-controller"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection frees its thread after this
    # headers and body leave in one write: without this, Nagle's algorithm holds the body
    # back until the client's delayed ACK (~40 ms per request on keep-alive connections)
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        ctl = self.server.controller
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body, ctype = ctl.metrics.render()
            except Exception as exc:  # never let a collector error kill the thread
                log.exception("rendering /metrics failed")
                self._send(500, f"rendering metrics failed: {exc}\n".encode(), _TEXT)
                return
            self._send(200, body, ctype)
        elif path in ("/healthz", "/readyz"):
            probe = ctl.healthy if path == "/healthz" else ctl.ready
            try:
                ok, reason = probe()
            except Exception as exc:  # a failing check means "not healthy", not a crash
                ok, reason = False, f"{path[1:]} check raised {type(exc).__name__}: {exc}"
            self._send(200 if ok else 503, f"{reason or ('ok' if ok else 'failed')}\n"
                       .encode(), _TEXT)
        else:
            self._send(404, f"not found: {path}; try /healthz, /readyz or /metrics\n"
                       .encode(), _TEXT)

    def _not_allowed(self) -> None:
        self._send(405, f"method {self.command} not allowed; use GET\n".encode(), _TEXT,
                   {"Allow": "GET"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _not_allowed

    def _send(self, code: int, body: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ControllerServer:
    """The controller's health and metrics endpoints.

    Args:
        metrics: rendered on ``/metrics``.
        host: address to bind (``"::"`` binds IPv6).
        port: TCP port; ``0`` picks a free one (see :attr:`port`).
        healthy: liveness check, ``() -> (ok, reason)``.
        ready: readiness check, ``() -> (ok, reason)``.
    """

    def __init__(self, metrics: ControllerMetrics, *, host: str = "0.0.0.0", port: int = 8080,
                 healthy: Probe = _always_ok, ready: Probe = _always_ok) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"controller server: port must be 0..65535, got {port}")
        self.metrics = metrics
        self.host = host
        self.healthy = healthy
        self.ready = ready
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises:
            ConfigError: the address cannot be bound (port in use, bad host, no permission).
        """
        if self._server is not None:
            return
        cls = _IPv6Server if ":" in self.host else _Server
        try:
            server = cls((self.host, self._port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"controller server: port {self._port} on {self.host} is already in use; "
                    "choose another with --port (or stop what listens there)") from exc
            raise ConfigError(f"controller server: cannot listen on {self.host}:{self._port}: "
                              f"{exc.strerror or exc}") from exc
        server.controller = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="controller-http", daemon=True)
        self._thread.start()
        log.info("serving /healthz /readyz /metrics on %s:%d", self.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with ``port=0``)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
