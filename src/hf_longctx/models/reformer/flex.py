"""The Reformer's LSH attention through FlexAttention (``attn_implementation="flex_attention"``).

After the sort (:func:`~.lsh_attention._sort_rounds`), LSH attention is block-sparse attention over the sorted
sequence of every round's tokens: with tiles of ``chunk_length``, query chunk ``i`` reads exactly the key chunks
of its neighbourhood on the cycle of real chunks (:func:`~.lsh_attention._chunk_neighbours`, each distinct chunk
once), so the block mask *is* the neighbourhood and ``mask_mod`` only forbids padding keys and, causal, later
positions; ``score_mod`` gives a token's own key its ``-1e5``. FlexAttention returns each slot's log-sum-exp, which
weights the rounds as in :func:`~.lsh_attention.lsh_attention`. Tested against the dense twin in ``naive.py``.

Local-attention layers keep their usual op. Refused by name, as PyTorch 2.13 cannot run them: a backward on the
CPU, float64 on the CPU, attention dropout.
"""

from __future__ import annotations

import torch

from .lsh_attention import (
    _SELF,
    _check_chunking,
    _chunk_neighbours,
    _dense_shared_qk,
    _pad_time,
    _real_mask,
    _sort_rounds,
    _take_rows,
    _unsort_and_combine,
    unit_keys,
)
from .longctx_flex import check_flex_usable, flex_attention_call


def _attend_sorted(q_s, k_s, v_s, pos_s, real_s, neighbours, keep, chunk, causal, need_lse, flex=None):
    """FlexAttention over the sorted sequences ``(B, H, L, D)``: returns the output and, if ``need_lse``, each
    slot's log-sum-exp ``(B, H, L)`` (else None). ``flex``: the function to call (default: compiled)."""
    from torch.nn.attention.flex_attention import BlockMask

    L = q_s.shape[2]
    # The neighbourhood's distinct chunks first (stable: in neighbourhood order), the repeats dropped.
    first = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)
    kv_indices = neighbours.gather(-1, first).to(torch.int32)[:, None]  # (B, 1, C, S): shared by the heads
    C, S = kv_indices.shape[2], kv_indices.shape[3]
    kv_indices = torch.nn.functional.pad(kv_indices, (0, max(C - S, 0)))  # BlockMask wants a slot per key chunk
    kv_count = keep.sum(-1, dtype=torch.int32)[:, None]  # (B, 1, C)

    # The neighbourhood again, per element, so that mask_mod alone states the rule (PyTorch's uncompiled
    # reference applies mask_mod to every score and ignores the block lists).
    chunk_of = torch.arange(L, device=q_s.device) // chunk  # (L,)
    adjacent = torch.zeros(keep.shape[0], C, C, dtype=torch.bool, device=q_s.device)
    # (B, C, C): query chunk -> key chunks of its neighbourhood. Every slot of `neighbours` names one (a dropped
    # repeat names a chunk already there; outside the cycle, the own chunk).
    adjacent.scatter_(2, neighbours, True)

    def mask_mod(b, h, q_idx, kv_idx):
        same = pos_s[b, h, kv_idx] == pos_s[b, h, q_idx]
        visible = adjacent[b, chunk_of[q_idx], chunk_of[kv_idx]] & real_s[b, h, kv_idx]
        if causal:
            visible = visible & (pos_s[b, h, kv_idx] <= pos_s[b, h, q_idx])
        return visible | same  # a token's own key stays, at -1e5 (score_mod): used only when nothing else is

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.where(pos_s[b, h, kv_idx] == pos_s[b, h, q_idx], score + _SELF, score)

    block_mask = BlockMask.from_kv_blocks(kv_count, kv_indices, BLOCK_SIZE=chunk, mask_mod=mask_mod,
                                          seq_lengths=(L, L))
    flex = flex or flex_attention_call
    if not need_lse:
        return flex(q_s, k_s, v_s, score_mod=score_mod, block_mask=block_mask, scale=1.0), None
    return flex(q_s, k_s, v_s, score_mod=score_mod, block_mask=block_mask, scale=1.0, return_lse=True)


# Inside a model compiled on the CPU the op runs in its own compiled function (one graph break per LSH layer):
# Inductor's CPU FlexAttention template fails on ops fused around it in a larger graph (torch 2.13).
_attend_sorted_outside_graph = torch.compiler.disable(_attend_sorted)


def lsh_attention_flex(
    qk: torch.Tensor,
    v: torch.Tensor,
    buckets: torch.Tensor,
    chunk_length: int,
    num_chunks_before: int = 1,
    num_chunks_after: int = 0,
    causal: bool = False,
    attention_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    return_logsumexp: bool = False,
    _flex=None,
):
    """:func:`~.lsh_attention.lsh_attention` (same arguments and result) with FlexAttention over the sorted
    chunks; no dropout. ``_flex`` (tests): the FlexAttention function to call instead of the compiled one - on the
    CPU, PyTorch's uncompiled reference, which materialises every score but does return the log-sum-exp."""
    _check_chunking(chunk_length, num_chunks_before, num_chunks_after)
    check_flex_usable(qk, dropout_p, "lsh_attention_probs_dropout_prob")
    B, H, T, D = qk.shape
    R = buckets.shape[2]
    need_lse = R > 1 or return_logsumexp
    if need_lse and qk.device.type == "cpu" and _flex is None and T > chunk_length:
        raise ValueError(
            f'attn_implementation="flex_attention" on the CPU serves one hashing round: PyTorch\'s compiled CPU '
            f"FlexAttention returns no log-sum-exp, which weights the rounds, and this layer hashes {R} rounds. "
            'Use num_hashes=1, attn_implementation="sdpa" (the default), or a GPU.'
        )
    real = _real_mask(attention_mask, B, T, qk.device)
    keys = unit_keys(qk)
    if T <= chunk_length:  # one chunk: plain attention, as the default op
        out, lse = _dense_shared_qk(qk, keys, v, real, causal, 0.0, None)
        return (out, lse[:, :, None].expand(B, H, R, T)) if return_logsumexp else out

    c = chunk_length
    pad = (-T) % c
    Tp, N = T + pad, (T + pad) // c
    qk, keys, v = (_pad_time(x, pad, 2) for x in (qk, keys, v))
    real = _pad_time(real, pad, 1)
    order, pos_sorted = _sort_rounds(_pad_time(buckets, pad, 3), real)
    q_s, k_s, v_s = (_take_rows(x, pos_sorted) for x in (qk, keys, v))  # (B, H, R*Tp, D)
    real_s = real.gather(1, pos_sorted.view(B, H * R * Tp)).view(B, H, R * Tp)
    real_chunks = torch.clamp((real.sum(dim=1) + c - 1) // c, min=1)  # (B,) chunks per round with a real token
    neighbours, keep = _chunk_neighbours(real_chunks, R, N, num_chunks_before, num_chunks_after)
    attend = _attend_sorted
    if torch.compiler.is_compiling() and qk.device.type == "cpu":
        attend = _attend_sorted_outside_graph
    out, lse = attend(q_s, k_s, v_s, pos_sorted, real_s, neighbours, keep, c, causal, need_lse, _flex)
    combined, lse = _unsort_and_combine(out, None if lse is None else lse.float(), order, R, T)
    return (combined, lse) if return_logsumexp else combined


__all__ = ["lsh_attention_flex"]
