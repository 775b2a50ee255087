"""Step-wise batched decoding over one running KV cache (token-level admission).

A :class:`DecodeBatch` holds the live sequences of a batch and their transformers
``DynamicCache``. :meth:`DecodeBatch.admit` prefills new requests (left-padded among
themselves), samples their first token and merges their cache rows into the running cache;
:meth:`DecodeBatch.step` decodes one token for every live row; a row that finishes (eos, a
stop string, ``max_tokens``) or is cancelled leaves the batch and its cache row is dropped.

Layout of the running state (all rows right-aligned at the newest column):

* each cache layer holds ``keys``/``values`` of shape ``[rows, kv_heads, width, head_dim]``
  (``transformers.cache_utils.DynamicLayer``); a row's real history is the last
  ``prompt + generated - 1`` columns, the columns before it are zero padding;
* ``mask`` ``[rows, width]`` is 1 on real columns, 0 on padding, and is the 2-D
  ``attention_mask`` of the next forward (plus one column for the new token);
* ``pos`` ``[rows, 1]`` is the position id of each row's newest cached token, so padding
  never shifts the rotary positions: a row decodes exactly as it would alone.

Merging pads the narrower side on the left so the widths line up; when rows leave, columns
that are padding in every remaining row are cut from the left, so the width stays the
longest live history. Merging needs plain ``DynamicLayer`` caches (full attention); for
sliding-window or other layer kinds :attr:`DecodeBatch.can_merge` is False and the batch
only admits while empty (batch-level admission), removing finished rows all the same.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_worker.engine import EngineRequest, FinishReason, TransformersEngine


class Detok:
    """Incremental detokenizer with stop strings: emits only text that can no longer change.

    Each token decodes a short window, not the whole sequence: the text of
    ``ids[prefix:]`` minus that of ``ids[prefix:read]``, where ``read`` is where the emitted
    text ends and ``prefix`` a few tokens before it, so a tokenizer that drops the leading
    space of the first decoded token (SentencePiece) drops it on both sides (vLLM's scheme).
    Decoding the whole sequence per token cost O(n) each, 0.28 ms at 512 tokens on
    SmolLM2's tokenizer. A window whose text ends in U+FFFD (an incomplete UTF-8 sequence)
    waits for the next token."""

    #: tokens kept before ``read`` as context for the window
    CONTEXT = 5

    def __init__(self, tokenizer: Any, req: EngineRequest) -> None:
        self.tok = tokenizer
        self.req = req
        self.ids: list[int] = []
        self.text = ""  # decoded text of ids[:read]
        self.prefix = 0
        self.read = 0
        self.sent = 0
        self.hold = max((len(s) for s in req.params.stop), default=1) - 1
        self.done = False

    def _advance(self, final: bool) -> None:
        """Append the text of the tokens after ``read`` to :attr:`text` once it is complete
        (or, when ``final``, as it is)."""
        if self.read >= len(self.ids):
            return
        dec = self.tok.decode
        before = dec(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = dec(self.ids[self.prefix :], skip_special_tokens=True)
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
            return  # nothing new yet, or an incomplete character: wait for more tokens
        if after.startswith(before):
            self.text += after[len(before) :]
        else:  # the window's text changed its past (rare normalizations): take it all again
            self.text = dec(self.ids, skip_special_tokens=True)
        self.read = len(self.ids)
        self.prefix = max(0, self.read - self.CONTEXT)

    def push(self, token_id: int, is_eos: bool) -> None:
        """Take one sampled token; emit the text that became final, and the finish reason."""
        if self.done:
            return
        if self.req.cancelled.is_set():
            self.done = True
            return
        if not is_eos:
            self.ids.append(token_id)
        length_done = len(self.ids) >= self.req.params.max_tokens
        seen = len(self.text)
        self._advance(final=is_eos or length_done)
        text = self.text
        finish: FinishReason | None = None
        start = max(0, seen - self.hold)  # a new stop string ends in the new text
        hits = (text.find(s, start) for s in self.req.params.stop)
        cut = min((i for i in hits if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        elif is_eos:
            finish = "stop"
        elif length_done:
            finish = "length"
        if finish is None:
            safe = len(text) - self.hold
            while safe > self.sent and text[safe - 1] == "\ufffd":
                safe -= 1  # an incomplete UTF-8 sequence: wait for the next token
            if safe > self.sent:
                self.req.emit(text[self.sent : safe], len(self.ids), None)
                self.sent = safe
            return
        self.done = True
        self.req.emit(text[self.sent :] if len(text) > self.sent else "", len(self.ids), finish)


def sample(logits: Any, reqs: list[EngineRequest], gens: list[Any]) -> list[int | Exception]:
    """One token per row of ``logits`` ``[rows, vocab]`` (on the model's device): argmax for
    greedy rows, else temperature + top-p sampling on the host with the row's own (CPU)
    generator. The argmax runs where the logits are, so a greedy batch copies one integer per
    row to the host, not its logits. A row whose distribution cannot be sampled (NaN or inf
    probabilities) gets the exception in its place: only that row fails, never the batch."""
    import torch

    out: list[int | Exception] = list(logits.argmax(dim=-1).tolist())  # greedy: vectorized
    hot = [i for i, req in enumerate(reqs) if req.params.temperature > 0]
    if not hot:
        return out
    rows = logits[hot].float().cpu()
    for j, i in enumerate(hot):
        p = reqs[i].params
        try:
            probs = torch.softmax(rows[j] / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_p, idx = torch.sort(probs, descending=True)
                keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < p.top_p
                keep[0] = True
                probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
            out[i] = int(torch.multinomial(probs, 1, generator=gens[i]))
        except RuntimeError as exc:  # torch: "probability tensor contains inf, nan or < 0"
            out[i] = exc
    return out


def mergeable_cache(model: Any) -> bool:
    """Whether ``model``'s KV cache is made of plain ``DynamicLayer``s (full attention), the
    layout :meth:`DecodeBatch.admit` knows how to pad and merge."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache(config=model.config)
    if not cache.layers:  # lazily replicated layers
        return getattr(cache, "layer_class_to_replicate", None) is DynamicLayer
    return all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass
class _Row:
    req: EngineRequest
    detok: Detok
    gen: Any  # torch.Generator
    token: int = 0  # the last sampled token: the row's next input


def _lpad(t: Any, width: int, dim: int) -> Any:
    """Zero-pad ``t`` on the left of ``dim`` (-1 or -2) up to ``width`` columns."""
    import torch.nn.functional as F

    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    return F.pad(t, (missing, 0) if dim == -1 else (0, 0, missing, 0))


class DecodeBatch:
    """The live rows of one running batch and their KV cache; see the module docstring.
    Not thread-safe: one decode thread drives it."""

    def __init__(self, engine: TransformersEngine) -> None:
        self._eng = engine
        self.can_merge: bool = engine.mergeable
        self._rows: list[_Row] = []
        self._cache: Any = None
        self._mask: Any = None
        self._pos: Any = None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def requests(self) -> list[EngineRequest]:
        """The live requests, in row order."""
        return [r.req for r in self._rows]

    @property
    def width(self) -> int:
        """Columns of the running cache (the longest live history, after trimming)."""
        return 0 if self._mask is None else int(self._mask.shape[1])

    @property
    def can_admit(self) -> bool:
        """Whether :meth:`admit` may be called now (always, unless the cache cannot merge
        and rows are live)."""
        return self.can_merge or not self._rows

    def admit(self, reqs: list[EngineRequest]) -> list[EngineRequest]:
        """Prefill ``reqs``, emit their first token and merge their rows into the batch.
        Returns the requests that already left (finished at their first token, or
        cancelled). On an exception the running batch is left as it was."""
        import torch

        if not reqs:
            return []
        if not self.can_admit:
            raise RuntimeError("this model's cache cannot merge rows into a running batch")
        eng = self._eng
        with torch.inference_mode():
            dev = eng.model.device
            rows = []
            for r in reqs:
                g = torch.Generator(device="cpu")
                # not torch.seed(): it also reseeds CUDA, formatting a stack trace each call
                g.manual_seed(r.params.seed if r.params.seed is not None else secrets.randbits(63))
                rows.append(_Row(r, Detok(eng.tokenizer, r), g))
            width = max(len(r.prompt_ids) for r in reqs)
            ids = torch.full((len(reqs), width), eng.pad_id, dtype=torch.long)
            mask = torch.zeros((len(reqs), width), dtype=torch.long)
            for i, r in enumerate(reqs):
                ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids, dtype=torch.long)
                mask[i, width - len(r.prompt_ids) :] = 1
            ids, mask = ids.to(dev), mask.to(dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = eng.forward(ids, mask, pos, None)
            self._push(rows, out.logits[:, -1, :])
            keep = [i for i, row in enumerate(rows) if not row.detok.done]
            left = [row.req for row in rows if row.detok.done]
            if keep:
                cache = getattr(out, eng.cache_kw)
                sel = torch.tensor(keep, device=dev)
                if len(keep) < len(rows):
                    cache.batch_select_indices(sel)
                    mask, pos = mask[sel], pos[sel]
                self._merge([rows[i] for i in keep], cache, mask, pos[:, -1:])
        return left

    def step(self) -> list[EngineRequest]:
        """Decode one token for every live row; returns the requests that left the batch
        (finished now, or cancelled since the last call)."""
        import torch

        left = [r.req for r in self._rows if r.req.cancelled.is_set()]
        if left:
            self._keep([i for i, r in enumerate(self._rows) if not r.req.cancelled.is_set()])
        if not self._rows:
            return left
        eng = self._eng
        with torch.inference_mode():
            dev = self._mask.device
            col = torch.tensor([r.token for r in self._rows], dtype=torch.long, device=dev)
            mask = torch.cat([self._mask, torch.ones_like(self._pos)], dim=-1)
            pos = self._pos + 1
            out = eng.forward(col.unsqueeze(-1), mask, pos, self._cache)
            self._mask, self._pos = mask, pos
            self._push(self._rows, out.logits[:, -1, :])
            keep = [i for i, r in enumerate(self._rows) if not r.detok.done]
            left += [r.req for r in self._rows if r.detok.done]
            if len(keep) < len(self._rows):
                self._keep(keep)
        return left

    def _push(self, rows: list[_Row], logits: Any) -> None:
        toks = sample(logits, [r.req for r in rows], [r.gen for r in rows])
        eos = self._eng.eos_ids
        for row, tok in zip(rows, toks, strict=True):
            if isinstance(tok, Exception):  # this row alone failed: it leaves the batch
                row.req.error = tok
                row.detok.done = True
                continue
            row.token = tok
            row.detok.push(tok, tok in eos)

    def _merge(self, rows: list[_Row], cache: Any, mask: Any, pos: Any) -> None:
        import torch

        if not self._rows:
            self._rows, self._cache, self._mask, self._pos = rows, cache, mask, pos
            return
        width = max(self.width, int(mask.shape[1]))
        merged = []
        for mine, new in zip(self._cache.layers, cache.layers, strict=True):
            merged.append(
                (
                    torch.cat([_lpad(mine.keys, width, -2), _lpad(new.keys, width, -2)]),
                    torch.cat([_lpad(mine.values, width, -2), _lpad(new.values, width, -2)]),
                )
            )
        for layer, (k, v) in zip(self._cache.layers, merged, strict=True):
            layer.keys, layer.values = k, v
        self._mask = torch.cat([_lpad(self._mask, width, -1), _lpad(mask, width, -1)])
        self._pos = torch.cat([self._pos, pos])
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (cache rows too) and trim all-padding columns."""
        import torch

        if not keep:
            self._rows, self._cache, self._mask, self._pos = [], None, None, None
            return
        sel = torch.tensor(keep, device=self._mask.device)
        self._cache.batch_select_indices(sel)
        self._mask, self._pos = self._mask[sel], self._pos[sel]
        self._rows = [self._rows[i] for i in keep]
        if not self.can_merge:
            return
        lead = int(self._mask.any(dim=0).long().argmax())  # first column any row attends to
        if lead > 0:
            self._mask = self._mask[:, lead:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, lead:, :]
                layer.values = layer.values[:, :, lead:, :]
