"""Runtime knobs of the worker over real HTTP: the dedicated /metrics port, the decode
thread's priority and the GIL switch interval."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from offload_cycle import check_offload_cycle


def test_metrics_port_serves_the_same_registry_off_the_event_loop(make_server: Any) -> None:
    srv = make_server(
        metrics_port=0, host="127.0.0.1", decode_nice=3, switch_interval_ms=2, torch_threads=1
    )
    mport = httpx.get(srv.url + "/status").json()["metrics_port"]
    assert isinstance(mport, int) and mport not in (0, srv.port)
    body = {"model": "tiny", "prompt": "metrics port", "max_tokens": 3}
    assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 200

    side = httpx.get(f"http://127.0.0.1:{mport}/metrics")
    assert side.status_code == 200
    assert side.headers["content-type"].startswith("text/plain; version=0.0.4")
    line = (
        'surgecast_worker_requests_total{endpoint="/v1/completions",model_name="tiny",status="200"}'
    )
    main = httpx.get(srv.url + "/metrics").text
    assert line + " 1.0" in side.text and line + " 1.0" in main
    assert httpx.get(f"http://127.0.0.1:{mport}/v1/models").status_code == 404

    # the knobs took effect: a process-wide switch interval and a lower-priority decode thread
    assert sys.getswitchinterval() == pytest.approx(0.002)
    decode = [t for t in threading.enumerate() if t.name.startswith("decode")]
    assert decode, "no decode thread"
    if sys.platform == "linux":
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        nices = {os.getpriority(os.PRIO_PROCESS, t.native_id or 0) for t in decode}
        assert nices == {min(base + 3, 19)}

    import torch

    decode_pool = srv.app.state.worker.serving.scheduler._decode
    assert decode_pool.submit(torch.get_num_threads).result() == 1

    srv.stop()  # the side port closes with the app
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", mport)) != 0


def test_metrics_port_in_use_fails_loudly(tiny_model_dir: Path) -> None:
    from model_worker.api import create_app
    from model_worker.config import WorkerConfig

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = WorkerConfig(model_path=tiny_model_dir, host="127.0.0.1", metrics_port=port)
        app = create_app(cfg)

        async def start() -> None:
            async with app.router.lifespan_context(app):
                pass

        with pytest.raises(OSError):
            asyncio.run(start())


def test_int8_worker_loads_and_serves_over_http(make_server: Any, tiny_model_dir: Path) -> None:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    from model_worker.engine import TransformersEngine

    srv = make_server(quantization="int8")
    model = srv.app.state.worker.serving.engine.model
    kinds = {type(m) for m in model.modules()}
    assert DynamicQuantizedLinear in kinds and torch.nn.Linear not in kinds

    r = httpx.post(
        srv.url + "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "fox"}],
            "max_tokens": 6,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1

    status = httpx.get(srv.url + "/status").json()
    fp32 = TransformersEngine.load(tiny_model_dir, "tiny").weight_bytes
    assert status["quantization"] == "int8"
    # the linears hold 1 byte per weight instead of 4; the embedding stays fp32
    assert 0.3 * fp32 < status["weight_bytes"] < 0.6 * fp32
    text = httpx.get(srv.url + "/metrics").text
    assert (
        f'surgecast_worker_model_weight_bytes{{model_name="tiny"}} {status["weight_bytes"]:.1f}'
        in (text)
    )


def test_int8_is_refused_where_it_cannot_run(tmp_path: Path) -> None:
    from model_worker.config import ConfigError, load_config
    from model_worker.weights import check_quantization

    env = {"SURGECAST_WORKER_MODEL_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match="CPU only"):
        load_config(["--quantization", "int8", "--device", "cuda"], env)
    with pytest.raises(ConfigError, match="dtype auto or fp32"):
        load_config(["--quantization", "int8", "--dtype", "bf16"], env)
    with pytest.raises(ConfigError, match="quantization"):
        load_config(["--quantization", "int4"], env)
    assert load_config(["--quantization", "int8"], env).quantization == "int8"
    # device auto resolved to a GPU at load time: refused with the same clear error
    with pytest.raises(ConfigError, match="CPU only"):
        check_quantization("int8", "cuda:0", "auto")
    check_quantization("int8", "cpu", "auto")


def test_offload_when_warm_queues_requests_while_waking(
    make_server: Any, tiny_model_dir: Path
) -> None:
    from model_worker.engine import TransformersEngine

    gate = threading.Event()

    class GatedRestore(TransformersEngine):
        """The real engine; its wake-up waits for the test, so the waking window is visible."""

        def restore(self) -> float:
            if self.offloaded:
                gate.wait(20)
            return super().restore()

    def factory(cfg: Any) -> TransformersEngine:
        return GatedRestore.load(cfg.model_path, cfg.served_name)

    srv = make_server(
        engine_factory=factory, offload_when_warm=True, start_role="warm", admin_token="adm"
    )
    check_offload_cycle(srv.url, "adm", gate.set)


def test_without_offload_the_weights_stay(make_server: Any) -> None:
    srv = make_server(start_role="warm")
    time.sleep(0.3)  # give a (wrong) offload the chance to happen
    assert httpx.get(srv.url + "/status").json()["weights"] == "device"


def test_gc_freeze_takes_the_startup_heap_out_of_full_collections(make_server: Any) -> None:
    """After warmup the worker freezes what is alive (torch, transformers, the model), so the
    full collections that allocation under load triggers no longer walk it (a 0.36 s pause
    of the whole worker each, before); with ``gc_freeze`` off nothing is frozen."""
    import gc

    gc.unfreeze()
    try:
        make_server(gc_freeze=False)
        assert gc.get_freeze_count() == 0
        srv = make_server(gc_freeze=True)
        frozen = gc.get_freeze_count()
        assert frozen > 50_000, frozen  # the libraries' and the model's objects
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 3, "temperature": 0}
        r = httpx.post(srv.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        gc.unfreeze()  # pytest's own heap must stay collectable
