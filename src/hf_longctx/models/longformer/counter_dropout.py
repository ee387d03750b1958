"""Counter-based dropout: whether element (b, h, i, j) is kept is a pure function of (seed, b, h, i, j), so the
backward regenerates a mask instead of storing it, and the dense twins build the very same mask.

Used by the attention op (:mod:`sliding_window_attention`) and by the model's hidden dropout. Pure torch.
"""

from __future__ import annotations

import torch

from .longctx_hashing import M32 as _M32
from .longctx_hashing import fmix32 as _fmix32


# --------------------------------------------------------------------------------------------------------------------
# Attention dropout: a counter-based mask, regenerated in the backward
# --------------------------------------------------------------------------------------------------------------------
#
# Whether probability (b, h, i, j) is kept is a pure function of (seed, b, h, i, j): every row (b, h, i) and every
# key position j get a 32-bit key (murmur3's fmix32 of the seed and the counter, on O(B H T) entries), and an element
# is kept when the top bits of (row key * column key) mod 2**32 clear the threshold. One multiply and three integer
# passes per element, over a block that sits in cache: no comparison (bool tensors are slow on CPU), the kept bit
# comes out as an all-ones int32 that is ANDed into the float32 probabilities. Within a row or a column the
# products are as uniform as the keys; across rows and columns tests/test_longformer_ops.py checks the kept
# fraction, neighbour correlations and the mean of the output. Nothing of size T x window is stored: the backward
# regenerates each block's mask from the keys, and the dense twins build the very same mask over the full matrix,
# so forward and gradients compare exactly; dilation, padding and global keys only re-index the keys. The seed is
# drawn from torch's RNG once per call, so torch.manual_seed makes a training run reproducible, and
# torch.utils.checkpoint (which restores the RNG state before it recomputes) draws the same mask again.



def _as_int32(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


# The mask's integer hashing runs eagerly under torch.compile (a graph break): Inductor's C++ backend typed the
# wrapping int32 products as floats and failed to compile them (torch 2.13).
@torch.compiler.disable
def dropout_keys(seed: int, batch: int, heads: int, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row keys ``(batch, heads, length)`` and column keys ``(batch, length)`` (int32) of the dropout mask.

    Position ``p`` of row ``(b, h)`` is keyed by ``row[b, h, p]`` as a query and by ``col[b, p]`` as a key.
    """
    s = int(seed) & _M32
    bh = torch.arange(batch * heads, device=device, dtype=torch.int64)
    pos = torch.arange(length, device=device, dtype=torch.int64)
    row_base = _fmix32((s + bh * 0x9E3779B1) & _M32)  # (B*H,)
    rows = _fmix32((row_base[:, None] + pos[None, :] * 0x85EBCA77) & _M32)
    col_base = int(_fmix32(torch.tensor([s ^ 0x27D4EB2F])).item())
    cols = _fmix32((col_base + pos * 0xC2B2AE3D) & _M32)
    return _as_int32(rows).view(batch, heads, length), _as_int32(cols)[None].expand(batch, length)


@torch.compiler.disable
def dropout_keep(row_keys: torch.Tensor, col_keys: torch.Tensor, p: float) -> torch.Tensor:
    """The mask for row keys ``(..., n, 1)`` and column keys ``(..., 1, m)``: int32 ``(..., n, m)``, -1 (all bits
    set) where kept, 0 where dropped. ``P(kept) = 1 - p`` to within ``2**-31``."""
    x = torch.mul(row_keys, col_keys)  # wraps mod 2**32
    x.bitwise_right_shift_(1)  # uniform on [-2**30, 2**30): the subtraction below cannot overflow
    threshold = (-(2**31) + round(p * 2**32)) // 2  # kept iff x >= threshold
    x = torch.rsub(x, threshold - 1)  # negative exactly where kept
    return x.bitwise_right_shift_(31)


def _apply_keep(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` where kept, 0 where dropped; in place unless ``out`` is the string ``"new"``."""
    # A bitwise AND with the all-ones / all-zeros mask; not under torch.compile, whose C++ backend cannot AND
    # floats through a dtype view: it multiplies by 1 / 0 (the same values).
    if x.dtype == torch.float32 and not torch.compiler.is_compiling():
        xi = x.view(torch.int32)
        return (torch.bitwise_and(xi, keep) if out == "new" else xi.bitwise_and_(keep)).view(torch.float32)
    ones = keep.to(x.dtype).neg_()  # float64 (the tests): multiply by 1 / 0
    return x * ones if out == "new" else x.mul_(ones)


def counter_dropout(x: torch.Tensor, p: float, seed: int | None = None) -> torch.Tensor:
    """Inverted dropout of ``x`` with the counter-based mask: the model's hidden-state dropout.

    Element ``(r, c)`` (``r`` the row of the flattened leading dims, ``c`` the last dim) is kept by
    :func:`dropout_keep` of row key ``r`` and column key ``c`` of :func:`dropout_keys`, and kept ones are scaled
    by ``1 / (1 - p)``. Why not ``F.dropout``: PyTorch's CPU ``bernoulli_`` draws about 30 M numbers a second,
    67 ms for one (8192, 256) hidden state, five of which a 2-layer training step drops (measured, one thread);
    this mask is four integer passes, about 10x cheaper. The backward regenerates the mask from the seed, so
    nothing is saved (``F.dropout`` keeps a float mask the size of ``x``). The seed comes from torch's RNG when
    None, as :func:`longformer_attention` draws its own: ``torch.manual_seed`` reproduces, checkpointing replays.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    if p == 0.0 or x.numel() == 0:
        return x
    return _CounterDropout.apply(x, p, _draw_seed() if seed is None else seed)


class _CounterDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p, seed):
        ctx.p, ctx.seed = p, seed
        return _counter_dropout_apply(x, p, seed)

    @staticmethod
    def backward(ctx, grad_out):
        # d(x * mask / (1 - p)) / dx = mask / (1 - p): the same mask, regenerated
        return _counter_dropout_apply(grad_out, ctx.p, ctx.seed), None, None


# Elements per chunk of counter_dropout: the mask and its temporaries stay in the L2 cache and come from the
# allocator's free lists instead of fresh pages (a fresh 8 MB temporary cost more in page faults than in arithmetic:
# 20 ms unchunked against 7 ms for a (8192, 256) hidden state); smaller chunks pay per-call dispatch (33 ms at 2**12).
_DROPOUT_CHUNK = 1 << 17


def _counter_dropout_apply(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    C = x.shape[-1]
    N = x.numel() // C
    rows, cols = dropout_keys(seed, 1, 1, max(N, C), x.device)
    rows, cols = rows[0, 0, :N, None], cols[0, None, :C]
    x2 = x.reshape(N, C)
    out = torch.empty(N, C, dtype=x.dtype, device=x.device)
    scale = 1.0 / (1.0 - p)
    step = max(1, _DROPOUT_CHUNK // C)
    for r0 in range(0, N, step):
        keep = dropout_keep(rows[r0 : r0 + step], cols, p)  # (step, C) int32, -1 kept, 0 dropped
        o = out[r0 : r0 + step]
        if x.dtype == torch.float32 and not torch.compiler.is_compiling():  # AND with the mask, then scale
            torch.bitwise_and(x2[r0 : r0 + step].view(torch.int32), keep, out=o.view(torch.int32))
            o.mul_(scale)
        else:
            torch.mul(x2[r0 : r0 + step], keep.to(x.dtype).neg_(), out=o).mul_(scale)
    return out.view(x.shape)


# --------------------------------------------------------------------------------------------------------------------
# The same masks in graph-friendly tensor ops (compiled training): a tensor seed, int64 arithmetic
# --------------------------------------------------------------------------------------------------------------------
#
# Inductor's C++ backend fails on the wrapping int32 products above, so in a compiled graph the keys stay uint32
# values held in int64 and the product's low 32 bits are taken with a mask: the very bits of the eager mask
# (tests/test_longformer_graph_op.py compares them), fused by Inductor into the ops around them, and no graph break
# for the seed, which is a tensor drawn from torch's RNG in the graph (the same draw as _draw_seed's).


def draw_seed_tensor(device=None) -> torch.Tensor:
    """A dropout seed as a 0-d int64 tensor: ``_draw_seed``'s draw from torch's RNG, without reading it out."""
    return torch.randint(0, 2**31 - 1, (1,), device=device)[0]


def row_keys_at(seed: torch.Tensor, bh: torch.Tensor | int, positions: torch.Tensor) -> torch.Tensor:
    """Row keys of query ``positions`` in rows ``bh = b * heads + h`` (broadcast), as :func:`dropout_keys`'
    ``rows``: uint32 values in int64."""
    row_base = _fmix32((seed + torch.as_tensor(bh, device=positions.device) * 0x9E3779B1) & _M32)
    return _fmix32((row_base + positions * 0x85EBCA77) & _M32)


def col_keys_at(seed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Column keys of key ``positions``, as :func:`dropout_keys`' ``cols``: uint32 values in int64."""
    col_base = _fmix32(seed ^ 0x27D4EB2F)
    return _fmix32((col_base + positions * 0xC2B2AE3D) & _M32)


def keep_at(row_keys: torch.Tensor, col_keys: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`dropout_keep` of broadcasting uint32-in-int64 keys, as a bool tensor (True: kept)."""
    product = (row_keys * col_keys) & _M32  # the low 32 bits (int64 wraps in the high bits only)
    signed = product - ((product >> 31) << 32)  # as the int32 the eager product is
    return (signed >> 1) >= (-(2**31) + round(p * 2**32)) // 2


def counter_dropout_graph(x: torch.Tensor, p: float, seed: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`counter_dropout` in plain tensor ops (compiled graphs): the same mask for the same seed."""
    if p == 0.0 or x.numel() == 0:
        return x
    seed = draw_seed_tensor(x.device) if seed is None else seed
    C = x.shape[-1]
    N = x.numel() // C
    rows = row_keys_at(seed, 0, torch.arange(N, device=x.device))
    cols = col_keys_at(seed, torch.arange(C, device=x.device))
    keep = keep_at(rows[:, None], cols[None, :], p)
    return (x.reshape(N, C) * keep.to(x.dtype) * (1.0 / (1.0 - p))).view(x.shape)


@torch.compiler.disable  # eagerly from torch's RNG also in a compiled model: the same masks as eager
def _draw_seed() -> int:
    # From torch's (CPU) RNG, once per call: torch.manual_seed reproduces it, checkpointing replays it.
    return int(torch.randint(0, 2**31 - 1, (1,)).item())
