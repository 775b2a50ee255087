"""What happens to loaded weights: INT8 dynamic quantization (CPU), their size in bytes, and
moving them between the accelerator and host memory (warm-standby offload).

INT8 uses torch's eager dynamic quantization (``torch.ao.quantization.quantize_dynamic``):
every ``nn.Linear`` gets int8 weights (per-tensor scale) and quantizes its activations on the
fly; embeddings and norms stay fp32. Its kernels (fbgemm / qnnpack / onednn) are CPU-only, so
INT8 on CUDA is refused with a :class:`~model_worker.config.ConfigError`. The API is deprecated
in favour of torchao; the deprecation warnings it raises are silenced here, and only here.
"""

from __future__ import annotations

import gc
import time
import warnings
from typing import Any

from model_worker.config import ConfigError


def check_quantization(quantization: str, device: str, dtype: str) -> None:
    """Refuse combinations that cannot work; ``device`` is the resolved torch device."""
    if quantization == "none":
        return
    if quantization != "int8":
        raise ConfigError(f"quantization must be 'none' or 'int8', not {quantization!r}")
    if not device.startswith("cpu"):
        raise ConfigError(
            f"quantization=int8 (torch dynamic quantization) runs on CPU only, but the device "
            f"is {device!r}: use --device cpu, or --dtype fp16/bf16 without --quantization on a "
            "GPU"
        )
    if dtype not in ("auto", "fp32"):
        raise ConfigError(
            f"quantization=int8 quantizes fp32 weights; --dtype must be auto or fp32, not {dtype!r}"
        )


def quantize_int8(model: Any) -> Any:
    """``model`` with every ``nn.Linear`` replaced by a dynamically quantized int8 one."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor.*deprecated", category=UserWarning
        )
        quantize: Any = quantize_dynamic  # untyped in torch
        # in place: no deep copy of the fp32 model at the peak
        model = quantize(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    _own_memory(model)
    return model


def _own_memory(model: Any) -> None:
    """Copy the tensors still backed by the memory-mapped checkpoint (embeddings, norms) into
    process memory, so the mapping of the whole fp32 file is released: without this, every
    page of it stays resident after quantization (SmolLM2: 1.23 GB RSS instead of ~0.75 GB)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
        for m in model.modules():
            for k, b in list(m._buffers.items()):
                if b is not None:
                    m._buffers[k] = b.clone()
    gc.collect()  # the replaced fp32 modules sit in reference cycles that pin the mapping


def weight_bytes(model: Any) -> int:
    """Bytes held by the model's weights: parameters and buffers (shared tensors counted
    once) plus the packed int8 weights and biases of dynamically quantized linears."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    for m in model.modules():
        if isinstance(m, DynamicQuantizedLinear):
            q: Any = m  # torch's quantized modules are untyped
            w, b = q.weight(), q.bias()
            total += w.numel() * w.element_size()
            if b is not None:
                total += b.numel() * b.element_size()
    return total


def move_weights(model: Any, device: str) -> float:
    """Move ``model`` to ``device`` (``"cpu"`` to offload, the serving device to restore);
    returns the seconds it took, synchronized so the time is real on CUDA."""
    import torch

    t0 = time.perf_counter()
    model.to(device)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        if device.startswith("cpu"):
            torch.cuda.empty_cache()  # hand the freed blocks back to the driver
    return time.perf_counter() - t0
