"""Our batched decode loop vs transformers' continuous batching, engine level, no HTTP.

``worker_load.py --compare-transformers-cb`` runs :func:`compare`. Three sides decode the same
``n`` greedy prompts, eos disabled so every side generates ``n x max_tokens`` tokens:

* ``own batched loop``: ``TransformersEngine.generate`` (one left-padded prefill, then one
  forward per step over the batch; :mod:`model_worker.decode`);
* ``cb generate_batch``: ``model.generate_batch(..., persistent_manager=True)``, the call the
  issue names; it starts the manager's generation thread and stops it on every call;
* ``cb running manager``: ``model.init_continuous_batching(...)`` started once;
  ``add_requests`` + ``get_result`` per run, as a server would hold the manager.

Each side gets one warm-up call, not counted, then ``runs`` measured calls, interleaved and
with the order rotated every round, so a noisy neighbour hits every side alike. The
warm-up outputs are compared token for token. transformers' sides share a second copy of
the model, so its attention switches never touch ours.

transformers' paged cache is sized for the workload (:func:`cb_settings`), not left to its
auto-sizing: on CPU that takes 60 % of free RAM (``max_memory_percent``) with
``max_batch_tokens`` 8,192, and its attention-mask buffer is ``max_batch_tokens x (cache
tokens + max_batch_tokens)`` floats (14 GB on a 23 GiB machine), so the first call spent
41 s on allocation and warm calls were 2.5x slower than with these settings.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

Ids = Callable[[], list[list[int]]]

#: tokens per page of transformers' paged cache (16 to 256 measured the same on the tiny model)
PAGE_SIZE = 32


def cb_settings(prompt_lens: Sequence[int], max_tokens: int) -> dict[str, Any]:
    """``ContinuousBatchingConfig`` keyword arguments sized for this workload: room for
    every request at once (twice the pages they need), every prompt prefilled in one
    forward (as ours does), one batch for all requests, no prefix sharing (our loop has no
    prefix cache, and a warm-up call must not make the measured prefills cheaper)."""
    pages = sum(ceil((p + max_tokens) / PAGE_SIZE) for p in prompt_lens)
    prefill = sum(prompt_lens)
    return {
        "page_size": PAGE_SIZE,
        "num_blocks": 2 * pages,
        "max_batch_tokens": max(256, 1 << (prefill - 1).bit_length()),
        "max_requests_per_batch": len(prompt_lens),
        "allow_block_sharing": False,
    }


@dataclass(frozen=True)
class Spread:
    """Throughput of one side over its measured runs."""

    median: float
    low: float
    high: float


def spread(xs: Sequence[float]) -> Spread:
    return Spread(statistics.median(xs), min(xs), max(xs))


def identity(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> tuple[int, list[int]]:
    """Sequences equal token for token, and the first differing index of each other pair."""
    same, first = 0, []
    for x, y in zip(a, b, strict=True):
        if list(x) == list(y):
            same += 1
        else:
            first.append(
                next(
                    (i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                    min(len(x), len(y)),
                )
            )
    return same, first


def rotated(sides: list[str], rnd: int) -> list[str]:
    """The side order of round ``rnd``: each side leads one round in turn."""
    k = rnd % len(sides)
    return sides[k:] + sides[:k]


def _ours(eng: Any, prompts: list[list[int]], max_tokens: int) -> tuple[Callable[[], int], Ids]:
    """Our side: a timed call (returns the tokens generated) and an untimed one that returns
    the token ids of every sequence."""
    from model_worker.engine import EngineRequest, SamplingParams

    def reqs(counts: dict[int, int]) -> list[EngineRequest]:
        return [
            EngineRequest(
                p, SamplingParams(max_tokens, 0.0), lambda d, k, f, i=i: counts.__setitem__(i, k)
            )
            for i, p in enumerate(prompts)
        ]

    def timed() -> int:
        counts: dict[int, int] = {}
        eng.generate(reqs(counts))
        return sum(counts.values())

    def with_ids() -> list[list[int]]:
        # generate() is admit + step until empty; the same loop, keeping the rows for their ids
        run = eng.new_batch()
        run.admit(reqs({}))
        rows = list(run._rows)
        while len(run):
            run.step()
        return [list(r.detok.ids) for r in rows]

    return timed, with_ids


def compare(path: str, n: int, max_tokens: int, threads: int, runs: int) -> None:
    """Warm-up per side, then ``runs`` interleaved rounds; prints the table and the
    token-identity of the greedy outputs."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    if threads > 0:
        torch.set_num_threads(threads)  # the manager's thread inherits it
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.ERROR)  # per-call warnings
    torch.set_grad_enabled(False)

    from model_worker.engine import TransformersEngine

    eng = TransformersEngine.load(Path(path), "bench")
    eng.eos_ids = frozenset()  # every row runs to max_tokens, as on transformers' side
    prompts = [eng.encode_prompt(f"Request {i}: tell me about autoscaling") for i in range(n)]
    ours_timed, ours_ids = _ours(eng, prompts, max_tokens)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=eng.model.dtype).eval()
    settings = cb_settings([len(p) for p in prompts], max_tokens)
    cb_cfg = ContinuousBatchingConfig(**settings)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=eng.pad_id
    )
    live = model.init_continuous_batching(
        generation_config=gen_cfg, continuous_batching_config=cb_cfg
    )
    live.start()

    def batch_ids() -> list[list[int]]:
        res = model.generate_batch(
            prompts,
            generation_config=gen_cfg,
            continuous_batching_config=cb_cfg,
            persistent_manager=True,
        )
        if len(res) != n or any(r.error for r in res.values()):
            raise RuntimeError(f"generate_batch returned {len(res)} of {n} results or errors")
        return [list(r.generated_tokens) for r in res.values()]

    def live_ids() -> list[list[int]]:
        ids = live.add_requests(prompts, max_new_tokens=max_tokens)
        got: dict[str, Any] = {}
        while len(got) < len(ids):
            out = live.get_result(timeout=600)
            if out is None or out.error:
                raise RuntimeError(f"running manager: {out.error if out else 'no result in 600 s'}")
            if out.is_finished():
                got[out.request_id] = out
        return [list(got[i].generated_tokens) for i in ids]

    timed: dict[str, Callable[[], int]] = {
        "own batched loop": ours_timed,
        "cb generate_batch": lambda: sum(map(len, batch_ids())),
        "cb running manager": lambda: sum(map(len, live_ids())),
    }
    sides = list(timed)
    t0 = time.perf_counter()
    warm = {sides[0]: ours_ids(), sides[1]: batch_ids(), sides[2]: live_ids()}
    warm_s = time.perf_counter() - t0
    tok_s: dict[str, list[float]] = {s: [] for s in sides}
    tokens: dict[str, set[int]] = {s: set() for s in sides}
    for rnd in range(runs):
        for side in rotated(sides, rnd):
            t = time.perf_counter()
            k = timed[side]()
            wall = time.perf_counter() - t
            tokens[side].add(k)
            tok_s[side].append(k / wall)
    live.stop(block=True)
    model.destroy_cached_continuous_batching_manager()

    print(
        f"\n{n} greedy prompts x {max_tokens} tokens, eos disabled, {eng.device} "
        f"({eng.model.dtype}), torch threads {torch.get_num_threads()}, transformers "
        f"{transformers.__version__}, attention {model.config._attn_implementation}; "
        f"cb settings {settings}; warm-up (not counted) {warm_s:.1f} s; "
        f"{runs} measured rounds, order rotated each round\n"
    )
    base = tok_s[sides[0]]
    print("| engine | tokens per run | tok/s median | min | max | median ratio to own loop |")
    print("|---|---|---|---|---|---|")
    for side in sides:
        sp = spread(tok_s[side])
        ratio = statistics.median(x / b for x, b in zip(tok_s[side], base, strict=True))
        counts = ", ".join(str(k) for k in sorted(tokens[side]))
        print(
            f"| {side} | {counts} | {sp.median:,.1f} | {sp.low:,.1f} | {sp.high:,.1f} | "
            f"{ratio:.2f} |"
        )
    expect = n * max_tokens
    if any(tokens[s] != {expect} for s in sides):
        print(f"\nWARNING: a side did not generate {expect} tokens in every run")
    print()
    ref = warm[sides[0]]
    for side in sides[1:]:
        same, first = identity(ref, warm[side])
        tail = f"; first difference at token {sorted(first)}" if first else ""
        print(f"greedy tokens, own loop vs {side}: {same}/{n} sequences identical{tail}")
    same, first = identity(warm[sides[1]], warm[sides[2]])
    print(f"greedy tokens, generate_batch vs running manager: {same}/{n} identical")
