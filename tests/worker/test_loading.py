"""Where weights come from and what they load as: a hub id through a real Hugging Face hub
cache (offline), a missing path or id as a clear configuration error, a sharded checkpoint,
bf16 / fp16 on CPU, and safetensors memory-mapped rather than read."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_worker.config import ConfigError, WorkerConfig
from model_worker.engine import EngineRequest, SamplingParams, TransformersEngine
from model_worker.source import ModelNotFoundError, default_name, hub_id, resolve

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits, like a git commit
PROMPTS = ("The quick brown fox", "Warm pods are", "Hello")


def lay_out_hub_cache(cache: Path, repo: str, src: Path, commit: str, refs: Sequence[str]) -> Path:
    """Put ``src``'s files into ``cache`` the way ``huggingface_hub`` stores a download:
    ``models--org--name/blobs/<hash>``, ``snapshots/<commit>/<file>`` symlinked to its blob,
    and ``refs/<ref>`` holding the commit. Returns the snapshot folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    blobs, snap, ref_dir = root / "blobs", root / "snapshots" / commit, root / "refs"
    for d in (blobs, snap, ref_dir):
        d.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    for ref in refs:
        (ref_dir / ref).write_text(commit)
    return snap


def greedy(engine: TransformersEngine, prompts: Sequence[str], n: int) -> list[tuple[str, int]]:
    """Each prompt's greedy text and token count, decoded together in one batch."""
    texts = {i: "" for i in range(len(prompts))}
    counts = dict.fromkeys(range(len(prompts)), 0)

    def emitter(i: int) -> Any:
        def emit(delta: str, k: int, _finish: Any) -> None:
            texts[i] += delta
            counts[i] = k

        return emit

    reqs = [
        EngineRequest(engine.encode_prompt(p), SamplingParams(n, temperature=0.0), emitter(i))
        for i, p in enumerate(prompts)
    ]
    engine.generate(reqs)
    assert all(r.error is None for r in reqs), [r.error for r in reqs]
    return [(texts[i], counts[i]) for i in range(len(prompts))]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine.load(tiny_model_dir, "tiny", "fp32", "cpu")


# ---- hub ids -------------------------------------------------------------------------------
def test_values_are_told_apart_as_paths_or_hub_ids(tiny_model_dir: Path) -> None:
    assert hub_id("org/tiny-llama") == "org/tiny-llama"
    assert hub_id("gpt2") == "gpt2"
    for local in ("./org/tiny", "../tiny", "/models/tiny", "~/tiny", "org/tiny.gguf", "."):
        assert hub_id(local) is None, local
    assert hub_id("a/b/c") is None  # not a repo id: a (missing) relative path
    assert hub_id(str(tiny_model_dir)) is None  # an existing path is local
    assert hub_id(Path("org/tiny-llama")) is None  # a Path object is always a path
    assert default_name("org/tiny-llama") == "org/tiny-llama"
    assert default_name(str(tiny_model_dir)) == "tiny-llama"
    cfg = WorkerConfig(model_path="org/tiny-llama")
    assert cfg.served_name == "org/tiny-llama" and cfg.model_path == "org/tiny-llama"
    assert WorkerConfig(model_path=tiny_model_dir).served_name == "tiny-llama"


@pytest.mark.parametrize("spec", ["/nonexistent/model", "./no-such-model", "~/no-such", "a/b/c"])
def test_a_missing_local_path_is_a_clear_config_error(spec: str) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        resolve(spec)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, FileNotFoundError)


def test_revision_is_refused_for_a_local_path(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--revision v1 applies to a hub model id"):
        resolve(str(tiny_model_dir), "v1")


def test_hub_id_resolves_refs_and_revisions_in_the_cache_only(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    snap = lay_out_hub_cache(tmp_path, "org/tiny-llama", tiny_model_dir, COMMIT, ["main", "v1"])
    for rev in (None, "v1", COMMIT):
        files = resolve("org/tiny-llama", rev, cache_dir=tmp_path, local_files_only=True)
        assert files.folder == snap and files.hub_id == "org/tiny-llama" and files.kwargs == {}
    with pytest.raises(ModelNotFoundError, match=r"'org/tiny-llama' \(revision v9\) is not in"):
        resolve("org/tiny-llama", "v9", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(ModelNotFoundError, match=r"'org/other' \(revision main\) is not in"):
        resolve("org/other", cache_dir=tmp_path, local_files_only=True)
    # a snapshot with pickled weights only is refused: the worker loads safetensors
    no_st = tmp_path / "src"
    no_st.mkdir()
    (no_st / "config.json").write_text("{}")
    (no_st / "pytorch_model.bin").write_bytes(b"pickle")
    lay_out_hub_cache(tmp_path, "org/pickled", no_st, COMMIT, ["main"])
    with pytest.raises(ModelNotFoundError, match="no safetensors weights"):
        resolve("org/pickled", cache_dir=tmp_path, local_files_only=True)


class Worker:
    """``python -m model_worker`` in a subprocess with the hub environment of ``env``."""

    def __init__(self, tmp: Path, env: dict[str, str], *args: str) -> None:
        with socket.socket() as s:  # a free loopback port
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / "worker.log"
        self._log = self.log_path.open("w")
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "model_worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
                "--gc-freeze",
                "false",
                *args,
            ],
            env={**os.environ, "PYTHONPATH": pythonpath, **env},
            cwd=tmp,  # so that "org/name" is no relative path here
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def readyz(self, timeout_s: float = 120.0) -> httpx.Response:
        """The first /readyz answer that is ready or carries a load error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                r = httpx.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200 or r.json().get("error"):
                    return r
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("worker neither ready nor failed: " + self.log_path.read_text())

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.log_path.read_text()


@pytest.fixture
def hub_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An offline hub environment with an empty cache of its own (no token, no config)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    yield {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def test_worker_serves_a_hub_id_from_the_offline_cache(
    tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path, hub_env: dict[str, str]
) -> None:
    lay_out_hub_cache(
        Path(hub_env["HF_HUB_CACHE"]), "org/tiny-llama", tiny_model_dir, COMMIT, ["main"]
    )
    w = Worker(tmp_path, hub_env, "--model-path", "org/tiny-llama", "--device", "cpu")
    try:
        r = w.readyz()
        assert r.status_code == 200, (r.text, w.log_path.read_text())
        assert httpx.get(w.url + "/v1/models").json()["data"][0]["id"] == "org/tiny-llama"
        body = {"model": "org/tiny-llama", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0}
        c = httpx.post(w.url + "/v1/completions", json=body, timeout=60)
        assert c.status_code == 200, c.text
        out = c.json()
    finally:
        log = w.stop()
    # the same weights as the local folder: the same greedy text
    assert (out["choices"][0]["text"], out["usage"]["completion_tokens"]) == greedy(
        tiny_engine, PROMPTS[:1], 6
    )[0]
    assert "Traceback" not in log


def test_an_uncached_hub_id_offline_is_a_config_error_without_traceback(
    tmp_path: Path, hub_env: dict[str, str]
) -> None:
    w = Worker(tmp_path, hub_env, "--model-path", "org/absent-model", "--device", "cpu")
    try:
        r = w.readyz()
        assert httpx.get(w.url + "/healthz").status_code == 200  # alive, not ready
    finally:
        log = w.stop()
    assert r.status_code == 503
    error = r.json()["error"]
    assert error.startswith("ModelNotFoundError: model 'org/absent-model' (revision main)")
    assert "not in the Hugging Face hub cache" in error and "HF_HUB_OFFLINE is set" in error
    assert hub_env["HF_HUB_CACHE"] in error
    assert "model load failed: model 'org/absent-model'" in log and "Traceback" not in log


# ---- checkpoints and dtypes ----------------------------------------------------------------
def test_a_sharded_checkpoint_loads_and_decodes_like_the_single_file(
    tiny_model_dir: Path, tiny_engine: TransformersEngine, tmp_path: Path
) -> None:
    import json
    import shutil

    import torch

    dest = tmp_path / "sharded"
    tiny_engine.model.save_pretrained(dest, max_shard_size="100KB")
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, dest / f.name)
    shards = sorted(dest.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and not (dest / "model.safetensors").exists()
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}

    sharded = TransformersEngine.load(dest, "tiny", "fp32", "cpu")
    mine, theirs = sharded.model.state_dict(), tiny_engine.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert greedy(sharded, PROMPTS, 8) == greedy(tiny_engine, PROMPTS, 8)
    assert all(n == 8 for _, n in greedy(sharded, PROMPTS, 8))


@pytest.mark.parametrize(("dtype", "torch_name"), [("bf16", "bfloat16"), ("fp16", "float16")])
def test_half_precision_loads_as_that_dtype_and_decodes_on_cpu(
    tiny_model_dir: Path, tiny_engine: TransformersEngine, dtype: Any, torch_name: str
) -> None:
    import torch

    from model_worker.engine_core import load_engine

    engine = load_engine(WorkerConfig(model_path=tiny_model_dir, dtype=dtype, device="cpu"))
    assert engine.device == "cpu"
    assert {p.dtype for p in engine.model.parameters()} == {getattr(torch, torch_name)}
    assert engine.weight_bytes < 0.55 * tiny_engine.weight_bytes  # 2 bytes a weight, not 4
    ((text, n),) = greedy(engine, PROMPTS[:1], 6)
    assert n == 6 and text
    # a sampled row too (its softmax runs in fp32 on the half-precision logits)
    got: list[int] = []
    req = EngineRequest(
        engine.encode_prompt(PROMPTS[1]),
        SamplingParams(6, temperature=0.8, seed=3),
        lambda _d, k, _f: got.append(k),
    )
    engine.generate([req])
    assert req.error is None and got[-1] == 6


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_safetensors_weights_stay_memory_mapped_on_cpu(
    tiny_model_dir: Path, tiny_engine: TransformersEngine
) -> None:
    """fp32 on CPU: the parameters are views of the checkpoint's mapping, not copies."""
    target = str((tiny_model_dir / "model.safetensors").resolve())
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(target):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((lo, hi))
    assert spans, "model.safetensors is not mapped"
    weights = list(tiny_engine.model.parameters())
    inside = [any(lo <= p.data_ptr() < hi for lo, hi in spans) for p in weights]
    assert all(inside), f"{inside.count(False)} of {len(weights)} parameters were copied"
