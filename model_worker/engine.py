"""The engine seam and its transformers implementation.

:class:`Engine` is what serving needs: encode a prompt or a chat, and decode a *batch* of
requests together, reporting text deltas through each request's ``emit`` callback.
:class:`Stepwise` engines also decode step by step, so the scheduler can admit requests into
a running batch between steps. :class:`TransformersEngine` loads a local directory
(safetensors, memory-mapped, sharded or not), a ``.gguf`` file or a hub id (through the hub
cache, :mod:`model_worker.source`), and runs its own batched
decode loop (:mod:`model_worker.decode`): left-padded prefill, then one forward per step over
the batch with the KV cache, sampling each row with its own temperature, top-p and seeded
generator; new rows merge into the running cache, finished rows leave it.
(transformers' continuous-batching manager samples
every request from one RNG, so it cannot honour a per-request ``seed``, and mixes greedy and
sampled rows only through per-request ``top_k=1``; see docs/model-worker.md.)
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from model_worker.decode import DecodeBatch, mergeable_cache
from model_worker.source import ModelFiles, resolve

FinishReason = Literal["stop", "length"]
Emit = Callable[[str, int, "FinishReason | None"], None]
"""``emit(text_delta, generated_tokens_so_far, finish_reason_or_None)``."""


class EngineInputError(ValueError):
    """The request cannot be encoded for this model (e.g. no chat template); a 400."""


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding parameters. ``temperature == 0`` means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class EngineRequest:
    """One sequence to decode; ``emit`` is called from the engine thread. ``error`` is set
    when this row alone failed (e.g. its sampling distribution broke) and left the batch."""

    prompt_ids: list[int]
    params: SamplingParams
    emit: Emit
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Engine(Protocol):
    """What serving needs from a model."""

    @property
    def model_name(self) -> str: ...

    @property
    def max_context(self) -> int: ...

    @property
    def device(self) -> str: ...

    def encode_prompt(self, text: str) -> list[int]: ...

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def generate(self, batch: Sequence[EngineRequest]) -> None:
        """Decode every request of ``batch`` to completion (blocking)."""
        ...


class DecodeSession(Protocol):
    """A running batch decoded step by step (token-level admission)."""

    def __len__(self) -> int:
        """Live rows."""
        ...

    @property
    def can_admit(self) -> bool:
        """Whether :meth:`admit` may be called now."""
        ...

    def admit(self, reqs: list[EngineRequest]) -> list[EngineRequest]:
        """Prefill ``reqs`` and join them to the batch; returns those that already left."""
        ...

    def step(self) -> list[EngineRequest]:
        """Decode one token per live row; returns the requests that left the batch."""
        ...


@runtime_checkable
class Stepwise(Protocol):
    """An engine that can decode a batch step by step, admitting requests between steps."""

    def new_batch(self) -> DecodeSession: ...


@runtime_checkable
class Offloadable(Protocol):
    """An engine whose weights can leave the accelerator while the worker is warm (vLLM's
    sleep mode level 1). Both calls block and run on the decode thread, between batches."""

    @property
    def offloaded(self) -> bool: ...

    def offload(self) -> float:
        """Move the weights to host memory; returns seconds."""
        ...

    def restore(self) -> float:
        """Move the weights back to the serving device; returns seconds."""
        ...


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` -> bf16 (or fp16) on CUDA, fp32 on CPU."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype != "auto":
        return table[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_source(path: str | Path, revision: str | None = None) -> ModelFiles:
    """``path`` (a model folder, a ``.gguf`` file or a hub id) -> the folder and the
    ``from_pretrained`` keyword arguments that load from it (see :mod:`model_worker.source`;
    raises :class:`~model_worker.source.ModelNotFoundError`)."""
    return resolve(path, revision)


def load_tokenizer(path: str | Path | ModelFiles, revision: str | None = None) -> Any:
    """The tokenizer of the model at ``path`` (folder, ``.gguf`` file, hub id, or files
    already resolved)."""
    from transformers import AutoTokenizer

    files = path if isinstance(path, ModelFiles) else model_source(path, revision)
    return AutoTokenizer.from_pretrained(files.folder, **files.kwargs)


class Encoding:
    """Prompt and chat encoding with a Hugging Face tokenizer (``self.tokenizer``) for the
    model ``self.model_name``; shared by the engine and the engine process's front."""

    tokenizer: Any

    @property
    def model_name(self) -> str:
        raise NotImplementedError

    def encode_prompt(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineInputError(
                f"model {self.model_name!r} has no chat template; use /v1/completions"
            )
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids


class TransformersEngine(Encoding):
    """A causal LM from a local folder, a ``.gguf`` file or a hub id, decoded in batches."""

    def __init__(
        self, model: Any, tokenizer: Any, name: str, load_s: float, quantization: str = "none"
    ) -> None:
        from model_worker.weights import weight_bytes

        self.model = model
        self.tokenizer = tokenizer
        self._name = name
        self.load_s = load_s
        self.quantization = quantization
        self.weight_bytes = weight_bytes(model)
        self.serving_device = str(model.device)
        self._offloaded = False
        cfg = model.config
        self._max_context = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        eos: set[int] = set()
        for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(src, int):
                eos.add(src)
            elif isinstance(src, list):
                eos.update(int(x) for x in src)
        self.eos_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(eos) if eos else 0))
        # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both generations
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params
        # whether requests can join a running batch (a plain full-attention KV cache)
        self.mergeable = mergeable_cache(model)

    @classmethod
    def load(
        cls,
        path: str | Path,
        name: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        quantization: str = "none",
        revision: str | None = None,
    ) -> TransformersEngine:
        """Load weights and tokenizer; ``path`` is a model folder, a ``.gguf`` file or a hub
        id (at ``revision``); ``quantization="int8"`` quantizes every linear layer (CPU
        only, else ConfigError). A model that cannot be found raises
        :class:`~model_worker.source.ModelNotFoundError` (a ConfigError)."""
        from transformers import AutoModelForCausalLM

        from model_worker.weights import check_quantization, quantize_int8

        t0 = time.perf_counter()
        dev = pick_device(device)
        check_quantization(quantization, dev, dtype)
        torch_dtype = pick_dtype(dtype, dev)
        files = model_source(path, revision)
        tokenizer = load_tokenizer(files)
        model: Any = AutoModelForCausalLM.from_pretrained(
            files.folder, dtype=torch_dtype, **files.kwargs
        )
        model.to(dev).eval()
        if quantization == "int8":
            model = quantize_int8(model)
        local = Path(path)
        served = name or files.hub_id or (local.stem if local.is_file() else local.resolve().name)
        return cls(model, tokenizer, served, time.perf_counter() - t0, quantization)

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def max_context(self) -> int:
        return self._max_context

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def offloaded(self) -> bool:
        return self._offloaded

    def offload(self) -> float:
        """Weights to host memory (on a CPU device the move is a no-op by nature)."""
        from model_worker.weights import move_weights

        if self._offloaded:
            return 0.0
        took = move_weights(self.model, "cpu")
        self._offloaded = True
        return took

    def restore(self) -> float:
        """Weights back to the serving device."""
        from model_worker.weights import move_weights

        if not self._offloaded:
            return 0.0
        took = move_weights(self.model, self.serving_device)
        self._offloaded = False
        return took

    def new_batch(self) -> DecodeBatch:
        """An empty step-wise decode batch on this engine (see :mod:`model_worker.decode`)."""
        return DecodeBatch(self)

    def generate(self, batch: Sequence[EngineRequest]) -> None:
        """Decode ``batch`` to completion: one left-padded prefill, then steps; finished rows
        leave the running cache as they finish."""
        if not batch:
            return
        run = self.new_batch()
        run.admit(list(batch))
        while len(run):
            run.step()

    def forward(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        """One model forward with a 2-D attention mask and explicit position ids, keeping
        only the last position's logits; ``cache`` None starts a new ``DynamicCache``."""
        kwargs: dict[str, Any] = {}
        if cache is not None:
            kwargs[self.cache_kw] = cache
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **kwargs
        )
