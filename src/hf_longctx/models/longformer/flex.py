"""Longformer attention as a FlexAttention block mask (``attn_implementation="flex_attention"``).

PyTorch's ``torch.nn.attention.flex_attention`` skips every ``128 x 128`` tile of the score matrix that its block
mask marks empty and applies a ``mask_mod`` inside the rest, in one compiled kernel. The local rows map onto it
directly: a query block reads the key blocks its band touches plus the key blocks that hold a global token, and
``mask_mod`` keeps, inside those, the band's real non-global keys and every global key (causal: the ones at or
before the query) - the semantics of :func:`~.sliding_window_attention.longformer_attention`, tested against the
dense twin in ``naive.py``. The few global rows (bidirectional) attend to every key with their own projections and
replace their local result, as in the graph op.

What PyTorch 2.13 allows, and this path therefore refuses by name: no backward on the CPU (training runs on a GPU
here), float32 / float16 / bfloat16 only on the CPU, and no attention dropout (``mask_mod`` and ``score_mod`` act
before the softmax). On the CPU the compiled forward is about half as fast as the default fused path, so it is the
GPU path; the CPU runs it for tests and for users who ask for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .banded_graph import global_rows_replace
from .longctx_flex import check_flex_usable, flex_attention_call

BLOCK = 128  # FlexAttention's default tile; the block mask is built at this size


def longformer_block_mask(left: int, right: int, dilation: int, real: torch.Tensor, glob: torch.Tensor | None,
                          causal: bool, length: int):
    """The :class:`BlockMask` of the local rows over ``length`` (a multiple of :data:`BLOCK`) positions.

    ``real``, ``glob``: ``(B, length)`` bool, padded with False; ``glob`` already excludes padding.
    """
    from torch.nn.attention.flex_attention import BlockMask

    B = real.shape[0]
    n = length // BLOCK
    device = real.device
    block = torch.arange(n, device=device)
    first = block[:, None] * BLOCK  # each query block's first row; its last is first + BLOCK - 1
    key_first = block[None, :] * BLOCK
    touches_band = ((key_first <= first + BLOCK - 1 + right * dilation)
                    & (key_first + BLOCK - 1 >= first - left * dilation))
    blocks = touches_band[None].expand(B, n, n)
    if glob is not None:
        holds_global = glob.view(B, n, BLOCK).any(-1)[:, None, :]  # (B, 1, n)
        if causal:
            holds_global = holds_global & (block[None, :] <= block[:, None])[None]
        blocks = blocks | holds_global
    # Key blocks of each query block, the readable ones first (stable, so in position order).
    count = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)

    low, high, step = -left * dilation, right * dilation, dilation
    if not torch.compiler.is_compiling():
        # Handed to the separately compiled op, the band goes as tensors: that op would specialise on Python
        # ints and, after two values, make them symbolic, which Inductor's CPU template fails on ("'Mul' object
        # has no attribute 'get_name'", torch 2.13). Inside a compiled model they are the graph's constants.
        low, high, step = (torch.tensor(x, device=device) for x in (low, high, step))

    def mask_mod(b, h, q_idx, kv_idx):
        offset = kv_idx - q_idx
        in_band = (offset >= low) & (offset <= high)
        if dilation > 1:
            in_band = in_band & (offset % step == 0)
        if glob is None:
            return in_band & real[b, kv_idx]
        is_global = glob[b, kv_idx]
        reach_global = is_global & (kv_idx <= q_idx) if causal else is_global
        return (in_band & real[b, kv_idx] & ~is_global) | reach_global

    return BlockMask.from_kv_blocks(count[:, None], order[:, None], BLOCK_SIZE=BLOCK, mask_mod=mask_mod,
                                    seq_lengths=(length, length))


def _local_rows(q, k, v, real, glob, left, right, dilation, causal):
    """FlexAttention over the band and global keys, ``(B, H, T, D)``; the inputs padded to whole tiles."""
    T = q.shape[2]
    length = -(-T // BLOCK) * BLOCK
    pad = length - T
    block_mask = longformer_block_mask(
        left, right, dilation, F.pad(real, (0, pad), value=False),
        None if glob is None else F.pad(glob, (0, pad), value=False), causal, length,
    )
    q_p, k_p, v_p = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    return flex_attention_call(q_p, k_p, v_p, block_mask=block_mask, scale=1.0)[:, :, :T]


# Inside a model compiled on the CPU, Inductor's CPU FlexAttention template fails on what surrounds the op in the
# graph (torch 2.13: "Unsupported for `epilogue_nodes` in CppFlexAttentionTemplate" for the slice after it, and
# "NoValidChoicesError" for a remainder in mask_mod), so there the op runs in its own compiled function, one graph
# break per layer.
_local_rows_outside_graph = torch.compiler.disable(_local_rows)


def longformer_attention_flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    left: int,
    right: int,
    attention_mask: torch.Tensor,
    global_mask: torch.Tensor | None = None,
    q_global: torch.Tensor | None = None,
    k_global: torch.Tensor | None = None,
    v_global: torch.Tensor | None = None,
    causal: bool = False,
    dilation: int = 1,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """:func:`~.sliding_window_attention.longformer_attention` through FlexAttention (arguments as there; no
    dropout). Returns ``(B, H, T, D)``, padding rows 0."""
    check_flex_usable(q, dropout_p, "attention_probs_dropout_prob")
    real = attention_mask.bool()
    glob = None if global_mask is None else global_mask.bool() & real
    local = _local_rows
    if torch.compiler.is_compiling() and q.device.type == "cpu":
        local = _local_rows_outside_graph
    out = local(q, k, v, real, glob, left, right, dilation, causal)
    if glob is not None and not causal:
        out = global_rows_replace(out, q_global, k_global, v_global, real, glob)
    return out * real[:, None, :, None].to(out.dtype)


__all__ = ["longformer_attention_flex", "longformer_block_mask"]
