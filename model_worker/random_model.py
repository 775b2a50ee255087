"""Random Llama models built from a config, saved with ``save_pretrained``: what the tests,
the benchmarks and a GPU check load through the production path where no model hub is
reachable.

The tokenizer is a byte-level BPE trained on a few sentences (vocabulary 400), with a chat
template; weights are random (seed 0), so the text is nonsense but every path a real model
takes (tokenize, chat template, prefill, decode, stop) runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "CORPUS", "SIZES", "build_random_llama"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Autoscaling keeps GPU workers ready before the peak arrives.",
    "Hello world, this is a tiny language model for tests.",
    "Warm pods are loaded and idle; active pods serve traffic.",
] * 20
#: decoder shapes: ``tiny`` (2 layers, hidden 64, grouped-query attention) for tests;
#: ``small`` (about 114 M parameters: 12 layers, hidden 768, a 3072-wide gated MLP) to load
#: a GPU's decode path
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 256},
    "small": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "num_key_value_heads": 12,
              "max_position_embeddings": 2048},
}


def build_random_llama(dest: Path, size: str = "tiny") -> int:
    """Save the ``size`` (a key of :data:`SIZES`) random Llama and its tokenizer into
    ``dest``; returns the parameter count.

    Raises:
        KeyError: an unknown ``size``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dims: dict[str, Any] = dict(SIZES[size])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        **dims,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(dest)
    return sum(p.numel() for p in model.parameters())
