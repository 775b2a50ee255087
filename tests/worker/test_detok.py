"""The incremental detokenizer: what it emits, token by token, adds up to the tokenizer's own
decode of the whole sequence (byte-level BPE and SmolLM2's tokenizer; multi-byte characters
split across tokens; special tokens skipped), and stop strings still cut where they begin."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from model_worker.decode import Detok
from model_worker.engine import EngineRequest, SamplingParams

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Autoscaling keeps GPU workers ready before the peak arrives!",
    "naïve café — 東京 🚀🎉 ok",
    "  leading spaces,\ttabs\nand newlines\n\n end",
    "def f(x):\n    return x ** 2  # squares",
]


def tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def stream(tok: Any, ids: list[int], stop: tuple[str, ...] = (), eos_at_end: bool = False) -> Any:
    out: list[str] = []
    finish: list[Any] = []

    def emit(delta: str, n: int, f: Any) -> None:
        out.append(delta)
        finish.append(f)

    req = EngineRequest([], SamplingParams(len(ids) + 1, 0.0, stop=stop), emit)
    d = Detok(tok, req)
    for t in ids:
        d.push(t, False)
        if d.done:
            break
    if not d.done:
        d.push(tok.eos_token_id, True)
    return "".join(out), finish[-1] if finish else None


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir: Path, smollm2_dir: Path) -> dict[str, Any]:
    return {"tiny BPE": tokenizer(tiny_model_dir), "SmolLM2": tokenizer(smollm2_dir)}


@pytest.mark.parametrize("name", ["tiny BPE", "SmolLM2"])
def test_streamed_text_equals_the_whole_decode(tokenizers: dict[str, Any], name: str) -> None:
    tok = tokenizers[name]
    rng = random.Random(0)
    cases = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    vocab = len(tok)
    cases += [[rng.randrange(vocab) for _ in range(rng.randrange(1, 80))] for _ in range(40)]
    for ids in cases:
        text, finish = stream(tok, ids)
        assert finish == "stop"
        assert text == tok.decode(ids, skip_special_tokens=True), ids


def test_a_character_split_across_tokens_is_emitted_whole(tokenizers: dict[str, Any]) -> None:
    tok = tokenizers["tiny BPE"]  # 400 tokens: an emoji is several byte tokens
    ids = tok.encode("go 🚀 now", add_special_tokens=False)
    seen: list[str] = []
    req = EngineRequest([], SamplingParams(64, 0.0), lambda d, n, f: seen.append(d))
    d = Detok(tok, req)
    for t in ids:
        d.push(t, False)
    d.push(tok.eos_token_id, True)
    assert "".join(seen) == "go 🚀 now"
    assert all("\ufffd" not in s for s in seen), seen


@pytest.mark.parametrize("name", ["tiny BPE", "SmolLM2"])
def test_stop_strings_cut_where_they_begin(tokenizers: dict[str, Any], name: str) -> None:
    tok = tokenizers[name]
    ids = tok.encode("alpha beta STOP gamma delta", add_special_tokens=False)
    text, finish = stream(tok, ids, stop=("STOP", "zzz"))
    assert (text, finish) == ("alpha beta ", "stop")
    ids = tok.encode("one two three", add_special_tokens=False)
    assert stream(tok, ids, stop=("three",)) == ("one two ", "stop")
