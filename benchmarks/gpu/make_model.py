"""A random Llama and its tokenizer, saved with ``save_pretrained`` (no model hub needed).

    python benchmarks/gpu/make_model.py --size tiny|small --dest DIR

``tiny`` is the test suite's shape (2 layers, hidden 64); ``small`` is about 85 M parameters
(12 layers, hidden 768, like GPT-2 small without its vocabulary), enough to load a GPU's
decode path for the worker benchmark. The tokenizer is a byte-level BPE trained on a few
sentences (vocabulary 400), with a chat template.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Autoscaling keeps GPU workers ready before the peak arrives.",
    "Hello world, this is a small language model for benchmarks.",
    "Warm pods are loaded and idle; active pods serve traffic.",
] * 20
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 256},
    "small": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "num_key_value_heads": 12,
              "max_position_embeddings": 2048},
}


def build(size: str, dest: Path) -> int:
    """Save the ``size`` model and tokenizer into ``dest``; its parameter count."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), **SIZES[size], bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(dest)
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    """Build the model named by ``--size`` into ``--dest``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dest", required=True)
    args = ap.parse_args()
    n = build(args.size, Path(args.dest))
    print(f"{args.size}: {n / 1e6:.1f} M parameters in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
