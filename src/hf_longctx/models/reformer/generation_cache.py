"""The Reformer's generation cache: per layer, the keys, values and LSH buckets of the tokens seen, written in
place into buffers whose capacity doubles, and the bucket index an LSH layer reads a new token's neighbours from.
"""

from __future__ import annotations

import math

import torch

from .local_attention import local_chunked_attention
from .longctx_glue import LongctxCache
from .lsh_attention import (
    bucket_index_insert,
    lsh_attention,
    lsh_buckets,
    lsh_decode_attention,
    unit_keys,
)


class ReformerGenerationCache(LongctxCache):
    """What a causal Reformer keeps between ``generate()`` steps, per layer.

    Local layers keep the keys and values of their own position chunk and the ``num_chunks_before`` chunks before it:
    a new token attends to exactly what the uncached model lets it see, so a model of local layers only generates the
    same tokens cached and uncached. LSH layers keep every token's unit key, value and buckets (one per round, from
    fixed rotations and a bucket count fixed when the cache is made) plus a bucket index (the positions each bucket
    holds, :func:`bucket_index_insert`); a new token attends to the earlier keys that share a bucket with it in any
    round (the latest ``chunk_length`` per round, read from the index), plus those of its own and the previous
    position chunk (:func:`lsh_decode_attention` states the rule). Tensors are written in place into buffers whose
    capacity doubles (never a concatenation per step), so the time per token stays flat as the text grows.
    ``generate()`` passes the object back through the ``cache`` argument; beam search calls :meth:`reorder_cache`.
    """

    def __init__(self, num_layers: int, rotations: torch.Tensor | None, num_buckets):
        self.layers: list[_Timeline | None] = [None] * num_layers
        self.rotations, self.num_buckets = rotations, num_buckets
        self.seen = 0  # positions processed so far, padding included
        self.real_seen: torch.Tensor | None = None  # (B,) real tokens processed so far per row: their positions
        self.step_positions: torch.Tensor | None = None

    def layer(self, idx: int) -> "_LayerCacheView":
        return _LayerCacheView(self, idx)

    def begin_step(self, T: int, device) -> None:
        self.step_positions = torch.arange(self.seen, self.seen + T, device=device)

    def end_step(self, real: torch.Tensor) -> None:
        """``real`` ``(B, T)``: which of the step's tokens are real (they take positions)."""
        self.seen += self.step_positions.numel()
        self.step_positions = None
        count = real.sum(-1)
        self.real_seen = count if self.real_seen is None else self.real_seen + count

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.real_seen is not None:
            self.real_seen = self.real_seen.index_select(0, beam_idx.to(self.real_seen.device))
        for state in self.layers:
            if state is not None:
                state.select_rows(beam_idx)


class _Timeline:
    """One layer's cached tensors along time, written in place.

    ``tensors`` maps a name to ``(buffer, time_dim)``; the buffers hold positions ``base .. end - 1``. When a write
    does not fit, positions before ``keep_from`` are dropped (local layers; LSH layers keep everything) and the
    capacity doubles if still needed: one copy now and then, amortised O(1) per token."""

    def __init__(self):
        self.tensors: dict[str, tuple[torch.Tensor, int]] = {}
        self.base = self.end = 0
        self.extra: dict[str, torch.Tensor] = {}  # batch-first tensors that are not along time (the bucket index)

    def write(self, new: dict[str, tuple[torch.Tensor, int]], keep_from: int = 0) -> None:
        n = next(iter(new.values()))[0].shape[next(iter(new.values()))[1]]
        cap = next(iter(self.tensors.values()))[0].shape[next(iter(self.tensors.values()))[1]] if self.tensors else 0
        if self.end + n - self.base > cap:
            if keep_from > self.base:  # shift the positions still needed to the front
                kept = self.end - keep_from
                for name, (buf, dim) in self.tensors.items():
                    buf.narrow(dim, 0, kept).copy_(buf.narrow(dim, keep_from - self.base, kept).clone())
                self.base = keep_from
            need = self.end + n - self.base
            if need > cap:
                new_cap = max(64, 1 << (need - 1).bit_length())
                for name, (t, dim) in new.items():
                    shape = list(t.shape)
                    shape[dim] = new_cap
                    grown = t.new_zeros(shape)
                    if name in self.tensors:
                        old, _ = self.tensors[name]
                        grown.narrow(dim, 0, self.end - self.base).copy_(old.narrow(dim, 0, self.end - self.base))
                    self.tensors[name] = (grown, dim)
        for name, (t, dim) in new.items():
            self.tensors[name][0].narrow(dim, self.end - self.base, n).copy_(t)
        self.end += n

    def view(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Positions ``start .. stop - 1`` (default: all held) of one tensor, a view."""
        buf, dim = self.tensors[name]
        start = self.base if start is None else start
        stop = self.end if stop is None else stop
        return buf.narrow(dim, start - self.base, stop - start)

    def buffer(self, name: str) -> torch.Tensor:
        """The whole buffer of one tensor (rows past ``end`` unused); row ``p - base`` is position ``p``."""
        return self.tensors[name][0]

    def select_rows(self, index: torch.Tensor) -> None:
        for name, (buf, dim) in self.tensors.items():
            self.tensors[name] = (buf.index_select(0, index.to(buf.device)), dim)
        for name, t in self.extra.items():
            self.extra[name] = t.index_select(0, index.to(t.device))


class _LayerCacheView:
    def __init__(self, cache: ReformerGenerationCache, idx: int):
        self.cache, self.idx = cache, idx

    def attend_local(self, q, k, v, real, chunk_length, before):
        cache, pos = self.cache, self.cache.step_positions
        state = cache.layers[self.idx]
        B, H, T, D = q.shape
        t0, t1 = int(pos[0]), int(pos[-1])
        lo = max(0, (t0 // chunk_length - before) * chunk_length)  # the first position any new token sees
        if state is None:  # prefill: the chunked op over the prompt
            out = local_chunked_attention(q, k, v, chunk_length, before, 0, causal=True, attention_mask=real)
            state = cache.layers[self.idx] = _Timeline()
            state.write({"k": (k, 2), "v": (v, 2), "real": (real, 1)})
        else:  # new tokens: a dense pass over the kept chunks (a slice of at most (before + 1) chunks + T)
            state.write({"k": (k, 2), "v": (v, 2), "real": (real, 1)}, keep_from=lo)
            kpos = torch.arange(lo, t1 + 1, device=q.device)
            visible = (kpos[None, :] <= pos[:, None]) & (kpos[None, :] >= (pos[:, None] // chunk_length - before) * chunk_length)
            visible = visible[None, None] & state.view("real", lo, t1 + 1)[:, None, None, :]
            scores = (q @ state.view("k", lo, t1 + 1).transpose(-1, -2) / math.sqrt(D)).float()
            scores = scores.masked_fill(~visible, -1e9)  # transformers' local mask value
            out = torch.softmax(scores, dim=-1).to(v.dtype) @ state.view("v", lo, t1 + 1)
        return out.transpose(1, 2).reshape(B, T, -1)

    def attend_lsh(self, qk, v, real, chunk_length, before):
        cache, pos = self.cache, self.cache.step_positions
        state = cache.layers[self.idx]
        B, H, T, D = qk.shape
        buckets = lsh_buckets(qk, cache.rotations, cache.num_buckets)  # (B, H, R, T)
        keys = unit_keys(qk)
        new = {"k": (keys, 2), "v": (v, 2), "real": (real, 1), "buckets": (buckets, 3)}
        if state is None:  # prefill: the chunked op over the prompt, with the cache's rotations
            attn_buckets = buckets if T > chunk_length else torch.zeros_like(buckets[:, :, :1])
            out = lsh_attention(qk, v, attn_buckets, chunk_length, before, 0, causal=True,
                                attention_mask=real)
            state = cache.layers[self.idx] = _Timeline()
            state.write(new)
            num_buckets = math.prod([cache.num_buckets] if isinstance(cache.num_buckets, int) else cache.num_buckets)
            index_shape = (B, H, buckets.shape[2], num_buckets + 1)  # + 1: padding's bucket, which no query reads
            state.extra["counts"] = torch.zeros(index_shape, dtype=torch.long, device=qk.device)
            state.extra["slots"], _ = bucket_index_insert(
                torch.full((*index_shape, 4), -1, dtype=torch.long, device=qk.device), state.extra["counts"],
                buckets, pos, real)
        else:
            state.write(new)
            state.extra["slots"], ends = bucket_index_insert(state.extra["slots"], state.extra["counts"], buckets,
                                                             pos, real)
            out = lsh_decode_attention(qk, pos, buckets, ends, state.buffer("k"), state.buffer("v"),
                                       state.buffer("real"), state.extra["slots"], chunk_length)
        return out.transpose(1, 2).reshape(B, T, -1)
