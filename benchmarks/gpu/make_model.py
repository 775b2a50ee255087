"""A random Llama and its tokenizer, saved with ``save_pretrained`` (no model hub needed).

    python benchmarks/gpu/make_model.py --size tiny|small --dest DIR

``tiny`` is the test suite's shape (2 layers, hidden 64); ``small`` is about 85 M parameters
(12 layers, hidden 768, like GPT-2 small without its vocabulary), enough to load a GPU's
decode path for the worker benchmark. Both come from :mod:`model_worker.random_model`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model_worker.random_model import SIZES, build_random_llama


def main() -> int:
    """Build the model named by ``--size`` into ``--dest``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dest", required=True)
    args = ap.parse_args()
    n = build_random_llama(Path(args.dest), args.size)
    print(f"{args.size}: {n / 1e6:.1f} M parameters in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
