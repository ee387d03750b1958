"""Sliding-window attention with global tokens: the Longformer attention op.

Pure torch functions, no config and no transformers import. Every tensor with
heads uses one layout, ``(B, H, T, D)``: batch, heads, time, head dim. Masks
are boolean with ``True`` meaning "may attend / is real".

Public ops and their dense twins (the twins build the full ``T x T`` mask and
exist for tests only):

* :func:`sliding_window_attention` / :func:`naive_sliding_window_attention` -
  every query attends to keys at offsets ``-left .. +right`` (optionally
  dilated) plus an optional extra key segment (global tokens).
* :func:`longformer_attention` / :func:`naive_longformer_attention` - the full
  Longformer layer attention (Beltagy et al. 2020, section 3.1): local window,
  every token attends to the global tokens, global tokens attend everywhere
  with their own projections.

The fast paths never build a ``T x T`` tensor: queries are cut into blocks of
``block_size`` rows and each block attends to one contiguous key span of
``block_size + left + right`` keys (plus the global keys), so time is
``O(T * (block_size + left + right + G))``, and neither keeps anything of that
size for the backward. On CPU without dropout the blocks go through PyTorch's
fused attention kernel (:class:`_BandedFlashAttention`). With attention dropout
(training with the checkpoints' 0.1), and on other devices, the blocked path
(:class:`_BlockedAttention`) runs: groups of blocks as batched matmuls, the
probabilities recomputed in the backward from the row log-sum-exp, and a
counter-based dropout mask (:func:`dropout_keep`) regenerated there rather
than stored. Memory is ``O(T * D)`` per head on both. Both run the dense
twins' tests (the twins build the same dropout mask); hf_longctx/benchmarks/
longformer.py measures them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Scores of forbidden keys. Finite on purpose: a row whose keys are all
# forbidden (a padding query) then softmaxes to a harmless uniform row that the
# caller zeroes, instead of NaN that would leak into gradients.
_MASKED_SCORE = -1e30


def _softmax_dtype(scores: torch.Tensor) -> torch.Tensor:
    # Softmax in at least float32 (transformers' Longformer does the same);
    # float64 stays float64 so that the tests can compare exactly.
    return scores if scores.dtype == torch.float64 else scores.float()


def _default_block_size(left: int, right: int) -> int:
    # Block size of the blocked path (dropout, other devices). A block of b queries computes b + left + right
    # scores per row for left + right + 1 useful ones, and every score costs the same elementwise passes (exp,
    # the dropout mask), so small blocks win until the matmuls get too small: an eighth of the window (32 for
    # window 256: 12% more scores than useful). The fused CPU path has its own: _fused_block_sizes.
    return max(8, min(32, (left + right) // 8))


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    left: int,
    right: int,
    *,
    key_mask: torch.Tensor | None = None,
    extra_k: torch.Tensor | None = None,
    extra_v: torch.Tensor | None = None,
    extra_mask: torch.Tensor | None = None,
    dilation: int = 1,
    block_size: int | None = None,
    dropout_p: float = 0.0,
    dropout_seed: int | None = None,
    extra_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Banded attention: query ``i`` sees keys ``i + dilation * m`` for ``-left <= m <= right``.

    Args:
        q, k, v: ``(B, H, T, D)``. ``q`` must already carry the softmax scale.
        left, right: how many (dilated) neighbours each query sees before and
            after itself. ``left=w, right=0`` is a causal sliding window.
        key_mask: ``(B, T)`` bool, keys that may be attended inside the band
            (``False`` for padding, and for global tokens that are reached
            through ``extra_k`` instead, so they are not counted twice).
        extra_k, extra_v: ``(B, H, G, D)`` keys and values every query may
            attend to in addition to its band (Longformer's global tokens).
        extra_mask: ``(B, G)`` or ``(B, T, G)`` bool: which extra keys each
            query may attend to (per query when causal).
        dilation: gap between attended neighbours (Longformer section 3.1).
        block_size: query rows per block, forward and backward. By default the
            fused CPU path uses 32 forward and 128 backward (window 256; see
            ``_fused_block_sizes``), the unfused path half the window.
        dropout_p: dropout on the attention probabilities (inverted: kept ones are scaled by ``1 / (1 - p)``).
        dropout_seed: seed of the counter-based mask (:func:`dropout_keep`); drawn from torch's RNG when None.
        extra_positions: ``(B, G)`` long, the positions that key the dropout mask of the extra keys (default
            ``T, T + 1, ...``); :func:`longformer_attention` passes the global tokens' own positions.

    Returns:
        ``(B, H, T, D)``. Softmax runs in float32 whatever the input dtype.
        Rows with no attendable key are not defined (the caller masks them).
    """
    if left < 0 or right < 0:
        raise ValueError(f"left and right must be >= 0, got left={left}, right={right}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if (extra_k is None) != (extra_v is None):
        raise ValueError("extra_k and extra_v must be given together")
    B, H, T, D = q.shape
    if key_mask is None:
        key_mask = torch.ones(B, T, dtype=torch.bool, device=q.device)
    if extra_k is not None and extra_mask is None:
        extra_mask = torch.ones(B, extra_k.shape[2], dtype=torch.bool, device=q.device)
    rk = ck = eck = None
    if dropout_p > 0.0:
        if not dropout_p < 1.0:
            raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
        seed = _draw_seed() if dropout_seed is None else dropout_seed
        G = 0 if extra_k is None else extra_k.shape[2]
        if extra_positions is None:
            extra_positions = torch.arange(T, T + G, device=q.device).expand(B, G)
        length = max(T, int(extra_positions.max()) + 1 if G else 0)
        rk, ck = dropout_keys(seed, B, H, length, q.device)
        rk = rk[:, :, :T]
        eck = ck.gather(1, extra_positions) if G else None
        ck = ck[:, :T]
    if dilation == 1:
        return _banded_attention(
            q, k, v, left, right, key_mask, extra_k, extra_v, extra_mask, block_size, dropout_p, rk, ck, eck
        )

    # Dilation d splits the sequence into d interleaved sub-sequences (positions
    # congruent mod d); inside each one the dilated band is an ordinary band.
    d = dilation
    pad = (-T) % d
    Td = (T + pad) // d

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (B*d, H, T/d, D)
        x = F.pad(x, (0, 0, 0, pad)).view(B, H, Td, d, x.shape[-1])
        return x.permute(0, 3, 1, 2, 4).reshape(B * d, H, Td, x.shape[-1])

    def split_rows(x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B*d, T/d)
        return F.pad(x, (0, pad)).view(B, Td, d).transpose(1, 2).reshape(B * d, Td)

    km = split_rows(key_mask)
    if rk is not None:  # the mask's keys follow their positions into the sub-sequences
        rk, ck = split(rk[..., None])[..., 0], split_rows(ck)
        eck = None if eck is None else eck.repeat_interleave(d, dim=0)
    ek = ev = em = None
    if extra_k is not None:
        ek = extra_k.repeat_interleave(d, dim=0)
        ev = extra_v.repeat_interleave(d, dim=0)
        if extra_mask.dim() == 2:
            em = extra_mask.repeat_interleave(d, dim=0)
        else:  # (B, T, G) -> (B*d, T/d, G)
            G = extra_mask.shape[-1]
            em = F.pad(extra_mask, (0, 0, 0, pad), value=False).view(B, Td, d, G)
            em = em.transpose(1, 2).reshape(B * d, Td, G)
    out = _banded_attention(
        split(q), split(k), split(v), left, right, km, ek, ev, em, block_size, dropout_p, rk, ck, eck
    )
    out = out.view(B, d, H, Td, D).permute(0, 2, 3, 1, 4).reshape(B, H, Td * d, D)  # (B, H, T+pad, D)
    return out[:, :, :T]


def _banded_attention(q, k, v, left, right, key_mask, extra_k, extra_v, extra_mask, block_size, dropout_p,
                      row_keys, col_keys, extra_col_keys):
    T = q.shape[2]
    extra_bias = None if extra_k is None else _extra_bias(extra_mask, T, q.dtype)
    if _flash_cpu_usable(q, dropout_p):
        b_fwd = min(block_size or _fused_block_sizes(left, right)[0], T)
        b_bwd = min(block_size or _fused_block_sizes(left, right)[1], T)
        return _BandedFlashAttention.apply(q, k, v, extra_k, extra_v, key_mask, extra_bias, left, right, b_fwd, b_bwd)
    b = min(block_size or _default_block_size(left, right), T)
    return _BlockedAttention.apply(
        q, k, v, extra_k, extra_v, key_mask, extra_bias, row_keys, col_keys, extra_col_keys, left, right, b, dropout_p
    )


# PyTorch's fused CPU attention kernel (aten/src/ATen/native/cpu/FlashAttentionKernel.cpp). Its entry points
# are private but stable since torch 2.3; they return the row log-sum-exp that the public
# `F.scaled_dot_product_attention` hides, and that is what lets the band and the global keys be two separate
# kernel calls merged exactly (the split-softmax trick of flash-decoding and ring attention), with no copy of
# the global keys into every block. Without them (other devices, dropout) the unfused path runs.
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_CPU_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _flash_cpu_usable(q: torch.Tensor, dropout_p: float) -> bool:
    # The kernel has no dropout; the unfused path applies it to the probabilities.
    return (
        _FLASH_CPU is not None and _FLASH_CPU_BWD is not None and q.device.type == "cpu"
        and q.dtype in _FLASH_DTYPES and dropout_p == 0.0
    )


def _fused_block_sizes(left: int, right: int) -> tuple[int, int]:
    # Forward and backward block sizes of the fused path, chosen apart because the kernel's costs differ.
    # A block of b queries computes b + left + right scores per row for left + right + 1 useful ones, so small
    # blocks waste less. The forward kernel runs near its best from b = 32 (its smallest query tile). The
    # backward accumulates the key/value gradients with GEMMs whose inner size is the query tile, 32 rows
    # below 192 queries, so it is overhead-bound at small b and its best is b = 128 (window 256: 38% more
    # scores than useful, but 5% faster than b = 64 and 40% faster than b = 32). Measured with
    # python -m hf_longctx.benchmarks.longformer --sweep-blocks (hidden 256, 4 heads, window 256, one thread).
    w = left + right
    return max(8, min(32, w // 4)), max(8, min(128, w // 2))


def _masked_score(dtype: torch.dtype) -> torch.Tensor:
    # -1e30 where the dtype holds it (float16 does not: its most negative finite value instead).
    return torch.tensor(max(_MASKED_SCORE, torch.finfo(dtype).min), dtype=dtype)


def _band_bias(key_mask: torch.Tensor, left: int, right: int, b: int, nb: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``(B, nb, 1, b, span)``: 0 where query ``t`` of block ``j`` may see window column ``c``.

    Column ``c`` of block ``j`` is key ``j*b - left + c``; query ``t`` sits at column ``t + left``.
    """
    T = key_mask.shape[1]
    span = b + left + right
    zero, masked = torch.zeros((), dtype=dtype, device=key_mask.device), _masked_score(dtype).to(key_mask.device)
    t = torch.arange(b, device=key_mask.device)[:, None]
    c = torch.arange(span, device=key_mask.device)[None, :]
    band = torch.where((c >= t) & (c <= t + left + right), zero, masked)  # (b, span)
    km = F.pad(key_mask, (left, max(0, nb * b - T + right)), value=False).unfold(1, span, b)[:, :nb]
    keys = torch.where(km, zero, masked)  # (B, nb, span)
    return torch.minimum(band, keys[:, :, None, :])[:, :, None]  # one pass writes the (B, nb, b, span) mask


def _extra_bias(extra_mask: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive mask of the extra keys, ``(B, 1, T, G)`` (stride 0 over queries when shared), or ``None``."""
    if extra_mask.dim() == 2:
        if bool(extra_mask.all()):
            return None  # every query sees every extra key: no mask at all
        bias = torch.where(extra_mask, torch.zeros((), dtype=dtype), _masked_score(dtype))
        return bias[:, None, None, :].expand(-1, 1, T, -1)
    return torch.where(extra_mask, torch.zeros((), dtype=dtype), _masked_score(dtype))[:, None]


class _BandedFlashAttention(torch.autograd.Function):
    """Banded attention (+ optional extra keys) through PyTorch's fused CPU attention kernel.

    Each block of ``b`` queries attends to a strided, overlapping view of the padded keys (no copy); the extra
    keys are a second kernel call over all queries, merged with the first through the row log-sum-exp. Only
    the inputs, the output and the log-sum-exp are saved; the backward kernel recomputes the probabilities, so
    memory stays ``O(T * D)`` per head instead of ``O(T * (b + left + right + G))``.

    The output (and ``dq``) is ``(B, H, T, D)`` laid out in memory as ``(B, T, H, D)``: the layout the kernel
    writes, the one the model's ``(B, T, C)`` reshape wants, and the one the backward kernel wants its
    incoming gradient in (it copies any other layout).
    """

    @staticmethod
    def forward(ctx, q, k, v, extra_k, extra_v, key_mask, extra_bias, left, right, b_fwd, b_bwd):
        B, H, T, D = q.shape
        nb = math.ceil(T / b_fwd)
        Tq, span = nb * b_fwd, b_fwd + left + right
        # Room for the windows of both blockings, so the backward reuses these padded copies.
        tail = max(Tq, math.ceil(T / b_bwd) * b_bwd) - T + right
        k_pad = F.pad(k, (0, 0, left, tail))  # (B, H, left + T + tail, D)
        v_pad = F.pad(v, (0, 0, left, tail))
        q_pad = F.pad(q, (0, 0, 0, Tq - T)) if Tq != T else q
        band_bias = _band_bias(key_mask, left, right, b_fwd, nb, q.dtype)  # (B, nb, 1, b, span)
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        out = _bthd_empty(q, B, H, T, D)
        lse = torch.empty(B, T, H, dtype=acc, device=q.device).transpose(1, 2)  # (B, H, T), the kernel's layout
        for i in range(B):
            qb, kw, vw = _blocks(q_pad[i], k_pad[i], v_pad[i], b_fwd, span)
            o1, l1 = _FLASH_CPU(qb, kw, vw, attn_mask=band_bias[i], scale=1.0)  # (nb, H, b, D), (nb, H, b)
            o1 = o1.transpose(0, 1).reshape(H, Tq, D)[:, :T]  # views: the kernel wrote (nb, b, H, D)
            l1 = l1.transpose(0, 1).reshape(H, Tq)[:, :T]
            if extra_k is None:
                out[i], lse[i] = o1, l1
                continue
            eb = None if extra_bias is None else extra_bias[i : i + 1]
            o2, l2 = _FLASH_CPU(q[i : i + 1], extra_k[i : i + 1], extra_v[i : i + 1], attn_mask=eb, scale=1.0)
            o2, l2 = o2[0], l2[0].to(acc)  # (H, T, D), (H, T)
            torch.logaddexp(l1, l2, out=lse[i])
            w1 = torch.exp(l1 - lse[i])[..., None]
            w2 = torch.exp(l2 - lse[i])[..., None]
            if q.dtype == acc:  # two passes, in place
                torch.mul(o1, w1, out=out[i])
                out[i].addcmul_(o2, w2)
            else:  # one rounding to the low precision, at the end
                out[i] = (o1.to(acc) * w1 + o2.to(acc) * w2).to(q.dtype)
        ctx.save_for_backward(q, k_pad, v_pad, extra_k, extra_v, key_mask, extra_bias, out, lse)
        ctx.sizes = (left, right, b_bwd)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k_pad, v_pad, extra_k, extra_v, key_mask, extra_bias, out, lse = ctx.saved_tensors
        left, right, b = ctx.sizes
        B, H, T, D = q.shape
        nb = math.ceil(T / b)
        Tq, span = nb * b, b + left + right
        band_bias = _band_bias(key_mask, left, right, b, nb, q.dtype)
        # Padding query rows: zero query, output and gradient, log-sum-exp 0 - they add nothing to any gradient.
        pad = lambda x: F.pad(x, (0, 0, 0, Tq - T)) if Tq != T else x  # noqa: E731
        q_pad, g_pad, o_pad = pad(q), pad(grad_out), pad(out)
        l_pad = F.pad(lse, (0, Tq - T)) if Tq != T else lse
        dq = _bthd_empty(q, B, H, T, D)
        dk_pad = _bthd_empty(k_pad, *k_pad.shape)
        dv_pad = _bthd_empty(v_pad, *v_pad.shape)
        dek = dev = None
        if extra_k is not None:
            dek, dev = torch.empty_like(extra_k), torch.empty_like(extra_v)
        for i in range(B):
            qb, kw, vw = _blocks(q_pad[i], k_pad[i], v_pad[i], b, span)
            gb = g_pad[i].view(H, nb, b, D).transpose(0, 1)
            ob = o_pad[i].view(H, nb, b, D).transpose(0, 1)
            lb = l_pad[i].view(H, nb, b).transpose(0, 1)
            dqb, dkw, dvw = _FLASH_CPU_BWD(gb, qb, kw, vw, ob, lb, 0.0, False, attn_mask=band_bias[i], scale=1.0)
            dq[i] = dqb.transpose(0, 1).reshape(H, Tq, D)[:, :T]
            _fold_windows(dkw, dk_pad[i], b)
            _fold_windows(dvw, dv_pad[i], b)
            if extra_k is not None:
                eb = None if extra_bias is None else extra_bias[i : i + 1]
                dq2, dek[i : i + 1], dev[i : i + 1] = _FLASH_CPU_BWD(
                    grad_out[i : i + 1], q[i : i + 1], extra_k[i : i + 1], extra_v[i : i + 1],
                    out[i : i + 1], lse[i : i + 1], 0.0, False, attn_mask=eb, scale=1.0,
                )
                dq[i] += dq2[0]
        dk = dk_pad[:, :, left : left + T]
        dv = dv_pad[:, :, left : left + T]
        return dq, dk, dv, dek, dev, None, None, None, None, None, None


def _bthd_empty(like: torch.Tensor, B: int, H: int, T: int, D: int) -> torch.Tensor:
    """An empty ``(B, H, T, D)`` tensor laid out as ``(B, T, H, D)``."""
    return like.new_empty(B, T, H, D).transpose(1, 2)


def _fold_windows(windows: torch.Tensor, out: torch.Tensor, b: int) -> None:
    """Inverse of the overlapping windows of :func:`_blocks`: ``out`` ``(H, Tk, D)`` gets each row's summed gradient.

    ``windows`` ``(nb, H, span, D)``: window ``j`` covers rows ``j*b .. j*b + span`` of ``out``; rows no window
    reaches get 0. When the window is a whole number of blocks this is a copy and a few block-aligned adds,
    several times faster than ``unfold_backward``, which scatters row by row.
    """
    nb, H, span, D = windows.shape
    Tk = out.shape[1]
    if span % b:
        n = (nb - 1) * b + span
        out[:, :n] = torch.ops.aten.unfold_backward(windows.permute(1, 0, 3, 2), (H, n, D), 1, span, b)
        out[:, n:] = 0
        return
    m = span // b
    n = (nb + m - 1) * b
    blocks = out[:, :n].unflatten(1, (nb + m - 1, b))  # (H, nb + m - 1, b, D)
    pieces = windows.unflatten(2, (m, b)).transpose(0, 1)  # (H, nb, m, b, D); piece i of window j is block j + i
    blocks[:, :nb] = pieces[:, :, 0]
    blocks[:, nb:] = 0
    for i in range(1, m):
        blocks[:, i : i + nb] += pieces[:, :, i]
    out[:, n:] = 0


def _blocks(q, k_pad, v_pad, b, span):
    """One batch row ``(H, T, D)`` as kernel batches: query blocks ``(nb, H, b, D)``, key/value windows ``(nb, H, span, D)``.

    Views only: window ``j`` starts ``b * j`` rows into the padded keys and overlaps its neighbours.
    """
    H, Tq, D = q.shape
    nb = Tq // b
    qb = q.view(H, nb, b, D).transpose(0, 1)
    kw = k_pad.unfold(1, span, b)[:, :nb].permute(1, 0, 3, 2)
    vw = v_pad.unfold(1, span, b)[:, :nb].permute(1, 0, 3, 2)
    return qb, kw, vw


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

_M32 = 0xFFFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


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


@torch.compiler.disable  # eagerly from torch's RNG also in a compiled model: the same masks as eager
def _draw_seed() -> int:
    # From torch's (CPU) RNG, once per call: torch.manual_seed reproduces it, checkpointing replays it.
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


# --------------------------------------------------------------------------------------------------------------------
# The blocked path: any device, any dropout; probabilities recomputed in the backward
# --------------------------------------------------------------------------------------------------------------------

# Elements of one block group's score matrix: large enough that the per-call overhead vanishes, small enough that the
# scores, the probabilities and the mask of one head stay in the L2 cache.
_GROUP_SCORES = 1 << 17

# exp() of arguments below about -87 (float32's smallest normal is e^-87.3) takes a slow path in PyTorch's CPU kernel:
# 100x the time of ordinary arguments, and every masked score (-1e30) is one. Arguments are clamped here first; a
# weight of e^-80 = 2e-35 instead of 0 changes no result at float32 or float64 precision (the dense twins agree to
# 1e-15).
_EXP_FLOOR = -80.0


class _BlockedAttention(torch.autograd.Function):
    """Banded attention (+ extra keys), with dropout, in blocks of ``b`` queries; the backward recomputes.

    Block ``j`` holds queries ``j*b .. j*b + b`` and attends the band keys ``j*b - left .. j*b + b + right`` (a
    strided, overlapping view of the padded keys: no copy; no band when ``k`` is None) plus the extra keys. A
    group of blocks of one head is a few batched matmuls; its scores, probabilities and dropout mask live only
    while the group is computed. Saved for the backward: the (padded) inputs, the output and the row
    log-sum-exp, so memory is ``O(T * D)`` per head whatever the window or the dropout. The backward recomputes
    each group's probabilities from the log-sum-exp and regenerates its dropout mask from the keys; with ``P``
    the probabilities, ``M`` the mask over ``1 - p``, ``g`` the output gradient and ``delta_i = g_i . out_i``:
    ``dV = (P M)^T g``, ``dS = P (M (g V^T) - delta)``, ``dQ = dS K``, ``dK = dS^T Q`` (as flash-attention's
    backward, with the mask in the two products that see it).

    float64 stays float64; other dtypes compute in float32 and return their own dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, extra_k, extra_v, key_mask, extra_bias, row_keys, col_keys, extra_col_keys,
                left, right, b, p):
        with torch.autocast(q.device.type, enabled=False):
            x = _Blocks(q, k, v, extra_k, extra_v, key_mask, extra_bias, row_keys, col_keys, extra_col_keys,
                        left, right, b, p)
            out, lse = _blocked_forward(x)
        ctx.save_for_backward(x.q, x.k, x.v, x.ek, x.ev, x.key_bias, x.extra_bias, x.rk, x.ck, x.eck, out, lse)
        ctx.blocks = x.sizes()
        ctx.dtypes = (q.dtype, None if k is None else k.dtype, None if extra_k is None else extra_k.dtype)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors  # once: checkpointing unpacks each saved tensor a single time
        x = _Blocks.from_saved(saved[:10], ctx.blocks)
        out, lse = saved[10:]
        with torch.autocast(grad_out.device.type, enabled=False):
            dq, dk, dv, dek, dev = _blocked_backward(x, grad_out, out, lse)
        q_dt, k_dt, e_dt = ctx.dtypes
        cast = lambda t, dt: None if t is None else t.to(dt)  # noqa: E731
        return (cast(dq, q_dt), cast(dk, k_dt), cast(dv, k_dt), cast(dek, e_dt), cast(dev, e_dt),
                None, None, None, None, None, None, None, None, None)


class _Blocks:
    """The padded, compute-dtype tensors of :class:`_BlockedAttention` and the views of one block group."""

    def __init__(self, q, k, v, ek, ev, key_mask, extra_bias, rk, ck, eck, left, right, b, p):
        B, H, T, D = q.shape
        cd = torch.float64 if q.dtype == torch.float64 else torch.float32
        nb = math.ceil(T / b)
        Tq = nb * b
        self.q = F.pad(q.to(cd), (0, 0, 0, Tq - T))  # (B, H, Tq, D)
        self.rk = None if p == 0 else F.pad(rk, (0, Tq - T))
        self.k = self.v = self.key_bias = self.ck = None
        if k is not None:
            tail = Tq - T + right
            self.k = F.pad(k.to(cd), (0, 0, left, tail))  # (B, H, left + Tq + right, D)
            self.v = F.pad(v.to(cd), (0, 0, left, tail))
            self.key_bias = torch.where(F.pad(key_mask, (left, tail), value=False), 0.0, _masked_score(cd)).to(cd)
            self.ck = None if p == 0 else F.pad(ck, (left, tail))
        self.ek = self.ev = self.eck = self.extra_bias = None
        if ek is not None:
            self.ek, self.ev, self.eck = ek.to(cd), ev.to(cd), eck
            if extra_bias is not None:
                self.extra_bias = F.pad(extra_bias.to(cd), (0, 0, 0, Tq - T))
        self._setup((T, left, right, b, p))

    @classmethod
    def from_saved(cls, saved, sizes):
        x = cls.__new__(cls)
        x.q, x.k, x.v, x.ek, x.ev, x.key_bias, x.extra_bias, x.rk, x.ck, x.eck = saved
        x._setup(sizes)
        return x

    def sizes(self):
        return (self.T, self.left, self.right, self.b, self.p)

    def _setup(self, sizes):
        self.T, self.left, self.right, self.b, self.p = sizes
        self.B, self.H, self.Tq, self.D = self.q.shape
        self.nb = self.Tq // self.b
        self.band = self.k is not None
        self.span = self.b + self.left + self.right
        self.G = 0 if self.ek is None else self.ek.shape[2]
        if self.band:
            t = torch.arange(self.b, device=self.q.device)[:, None]
            c = torch.arange(self.span, device=self.q.device)[None, :]
            allowed = (c >= t) & (c <= t + self.left + self.right)
            self.band_bias = torch.where(allowed, 0.0, _masked_score(self.q.dtype)).to(self.q.dtype)  # (b, span)
        width = (self.span if self.band else 0) + self.G
        self.group = max(1, _GROUP_SCORES // (self.b * max(width, 1)))  # blocks per group

    def groups(self):
        """``(head, j0, j1, bias)`` for every group of blocks: ``head`` holds one (batch row, head)'s views, made
        once per head (indexing costs more in dispatch than in arithmetic at this grain); ``bias`` ``(n, b, span)``
        is the band's shape plus the keys' padding, made once per batch row and shared by the heads."""
        spans = [(j0, min(self.nb, j0 + self.group)) for j0 in range(0, self.nb, self.group)]
        for i in range(self.B):
            biases = [None] * len(spans)
            if self.band:
                key_windows = self.key_bias[i].unfold(0, self.span, self.b)  # (nb + ..., span)
                biases = [self.band_bias + key_windows[j0:j1, None, :] for j0, j1 in spans]
            for h in range(self.H):
                head = _HeadViews(self, i, h)
                for (j0, j1), bias in zip(spans, biases):
                    yield head, j0, j1, bias

    def scores(self, head, j0, j1, bias):
        """Scores of one group: band ``(n, b, span)`` (or None) and extra ``(n*b, G)`` (or None)."""
        r0, r1 = j0 * self.b, j1 * self.b
        qg = head.q[r0:r1]  # (n*b, D)
        s = se = None
        if self.band:
            s = torch.baddbmm(bias, qg.view(j1 - j0, self.b, self.D), head.kT[j0:j1])
        if self.G:
            se = torch.mm(qg, head.ekT) if head.eb is None else torch.addmm(head.eb[r0:r1], qg, head.ekT)
        return s, se

    def keep(self, head, j0, j1):
        """Dropout masks of one group (:func:`dropout_keep`), shaped as :meth:`scores`; None without dropout."""
        if not self.p:
            return None, None
        rows = head.rk[j0 * self.b : j1 * self.b]
        m = me = None
        if self.band:
            m = dropout_keep(rows.view(j1 - j0, self.b, 1), head.ck[j0:j1, None, :], self.p)
        if self.G:
            me = dropout_keep(rows[:, None], head.eck, self.p)
        return m, me


class _HeadViews:
    """The views of one (batch row ``i``, head ``h``) that every group of :class:`_Blocks` slices."""

    def __init__(self, x: _Blocks, i: int, h: int):
        self.i, self.h = i, h
        self.q = x.q[i, h]  # (Tq, D)
        if x.band:
            self.kT = x.k[i, h].unfold(0, x.span, x.b)  # (nb + ..., D, span): window j is keys j*b .. j*b + span
            self.vT = x.v[i, h].unfold(0, x.span, x.b)
        if x.G:
            self.ek, self.ev = x.ek[i, h], x.ev[i, h]  # (G, D)
            self.ekT = self.ek.transpose(0, 1)
            self.eb = None if x.extra_bias is None else x.extra_bias[i, 0]  # (Tq, G)
        if x.p:
            self.rk = x.rk[i, h]
            self.ck = x.ck[i].unfold(0, x.span, x.b) if x.band else None  # (nb + ..., span)
            self.eck = x.eck[i][None, :] if x.G else None


def _blocked_forward(x: _Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D, b = x.B, x.H, x.T, x.D, x.b
    out = x.q.new_empty(B, x.Tq, H, D).transpose(1, 2)  # (B, H, Tq, D) laid out as (B, Tq, H, D)
    lse = x.q.new_empty(B, H, x.Tq)
    scale = 1.0 / (1.0 - x.p)
    for head, j0, j1, bias in x.groups():
        n, r0, r1 = j1 - j0, j0 * b, j1 * b
        s, se = x.scores(head, j0, j1, bias)
        keep, keep_e = x.keep(head, j0, j1)
        m = s.amax(-1).view(-1) if s is not None else se.amax(-1)
        if s is not None and se is not None:
            m = torch.maximum(m, se.amax(-1))
        o = total = None
        if s is not None:
            s.sub_(m.view(n, b, 1)).clamp_min_(_EXP_FLOOR).exp_()
            total = s.sum(-1).view(-1)
            if keep is not None:
                _apply_keep(s, keep)
            o = torch.bmm(s, head.vT[j0:j1].transpose(1, 2)).view(n * b, D)
        if se is not None:
            se.sub_(m[:, None]).clamp_min_(_EXP_FLOOR).exp_()
            total = se.sum(-1) if total is None else total.add_(se.sum(-1))
            if keep_e is not None:
                _apply_keep(se, keep_e)
            o = torch.mm(se, head.ev) if o is None else o.addmm_(se, head.ev)
        torch.mul(o, (scale / total)[:, None], out=out[head.i, head.h, r0:r1])
        torch.add(m, total.log_(), out=lse[head.i, head.h, r0:r1])
    return out[:, :, :T], lse


def _blocked_backward(x: _Blocks, grad_out, out, lse):
    B, H, T, D, b, p = x.B, x.H, x.T, x.D, x.b, x.p
    pad = lambda t: F.pad(t.to(x.q.dtype), (0, 0, 0, x.Tq - T))  # noqa: E731  padding rows: zero gradient
    g_all = pad(grad_out)
    delta = (g_all * pad(out)).sum(-1)  # (B, H, Tq): g . out
    if p:
        g_all.mul_(1.0 / (1.0 - p))  # the kept probabilities' scale, folded into g
    dq = x.q.new_empty(B, x.Tq, H, D).transpose(1, 2)  # every row is written
    dk = dv = dek = dev = None
    if x.band:
        dk, dv = torch.zeros_like(x.k), torch.zeros_like(x.v)
    if x.G:
        dek, dev = torch.zeros_like(x.ek), torch.zeros_like(x.ev)
    for head, j0, j1, bias in x.groups():
        i, h = head.i, head.h
        n, r0, r1 = j1 - j0, j0 * b, j1 * b
        s, se = x.scores(head, j0, j1, bias)
        keep, keep_e = x.keep(head, j0, j1)
        g, qg, lse_g, delta_g = g_all[i, h, r0:r1], head.q[r0:r1], lse[i, h, r0:r1], delta[i, h, r0:r1]
        dq_g = dq[i, h, r0:r1]
        if s is not None:
            gb = g.view(n, b, D)
            P = s.sub_(lse_g.view(n, b, 1)).clamp_min_(_EXP_FLOOR).exp_()  # (n, b, span)
            dS = torch.bmm(gb, head.vT[j0:j1])  # g V^T
            if keep is not None:
                _apply_keep(dS, keep)
            Pk = P if keep is None else _apply_keep(P, keep, "new")
            _fold_add(torch.bmm(Pk.transpose(1, 2), gb), dv[i, h], j0, b)  # dV of the windows
            dS.sub_(delta_g.view(n, b, 1)).mul_(P)
            torch.bmm(dS, head.kT[j0:j1].transpose(1, 2), out=dq_g.view(n, b, D))
            _fold_add(torch.bmm(dS.transpose(1, 2), qg.view(n, b, D)), dk[i, h], j0, b)
        if se is not None:
            Pe = se.sub_(lse_g[:, None]).clamp_min_(_EXP_FLOOR).exp_()  # (n*b, G)
            dSe = torch.mm(g, head.ev.transpose(0, 1))  # g V^T
            if keep_e is not None:
                _apply_keep(dSe, keep_e)
            dev[i, h].addmm_((Pe if keep_e is None else _apply_keep(Pe, keep_e, "new")).transpose(0, 1), g)
            dSe.sub_(delta_g[:, None]).mul_(Pe)
            if s is None:
                torch.mm(dSe, head.ek, out=dq_g)
            else:
                dq_g.addmm_(dSe, head.ek)
            dek[i, h].addmm_(dSe.transpose(0, 1), qg)
    dq = dq[:, :, :T]
    if x.band:
        dk, dv = dk[:, :, x.left : x.left + T], dv[:, :, x.left : x.left + T]
    return dq, dk, dv, dek, dev


def _fold_add(windows: torch.Tensor, out: torch.Tensor, j0: int, b: int) -> None:
    """``out[(j0 + j) * b + c] += windows[j, c]``: the overlapping windows of blocks ``j0 ..`` summed into rows.

    ``windows`` ``(n, span, D)``, contiguous. One ``index_add_`` (a C++ loop over rows of D values) instead of one
    Python-level add per ``b`` columns of the window, which cost more in dispatch than in arithmetic.
    """
    n, span, D = windows.shape
    rows = out[j0 * b : j0 * b + (n - 1) * b + span]
    rows.index_add_(0, _window_rows(n, span, b, out.device), windows.view(n * span, D))


_WINDOW_ROWS: dict = {}


def _window_rows(n: int, span: int, b: int, device) -> torch.Tensor:
    """``(n * span,)`` long: the row of window ``j``, column ``c`` (``j * b + c``), cached per shape."""
    key = (n, span, b, str(device))
    if key not in _WINDOW_ROWS:
        j = torch.arange(n, device=device)[:, None] * b
        _WINDOW_ROWS[key] = (j + torch.arange(span, device=device)[None, :]).reshape(-1)
    return _WINDOW_ROWS[key]


def naive_sliding_window_attention(
    q, k, v, left, right, *, key_mask=None, extra_k=None, extra_v=None, extra_mask=None, dilation=1,
    dropout_p=0.0, dropout_seed=None, extra_positions=None,
):
    """Dense reference for :func:`sliding_window_attention` (builds ``T x T``; tests only).

    With ``dropout_p`` it needs ``dropout_seed`` and builds the op's very mask over the whole matrix.
    """
    B, H, T, D = q.shape
    if key_mask is None:
        key_mask = torch.ones(B, T, dtype=torch.bool, device=q.device)
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    offset = j - i
    band = (offset % dilation == 0) & (offset >= -left * dilation) & (offset <= right * dilation)
    allowed = band[None] & key_mask[:, None, :]  # (B, T, T)
    keys, values = k, v
    if extra_k is not None:
        G = extra_k.shape[2]
        if extra_mask is None:
            extra_mask = torch.ones(B, G, dtype=torch.bool, device=q.device)
        em = extra_mask[:, None, :].expand(B, T, G) if extra_mask.dim() == 2 else extra_mask
        allowed = torch.cat([allowed, em], dim=-1)
        keys = torch.cat([k, extra_k], dim=2)
        values = torch.cat([v, extra_v], dim=2)
    scores = _softmax_dtype(q @ keys.transpose(-1, -2)).masked_fill(~allowed[:, None], _MASKED_SCORE)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        G = keys.shape[2] - T
        positions = torch.arange(T, device=q.device).expand(B, T)
        positions = torch.cat([positions, extra_positions if extra_positions is not None else T + positions[:, :G]], 1)
        probs = probs * _dense_keep(dropout_seed, q.shape[1], positions, T, dropout_p) / (1.0 - dropout_p)
    return probs.to(v.dtype) @ values


def _dense_keep(seed, H, key_positions, T, p):
    """The dropout mask ``(B, H, T, K)`` of queries ``0 .. T`` and the keys at ``key_positions`` ``(B, K)``."""
    if seed is None:
        raise ValueError("the dense twin needs the dropout_seed the op was given")
    B = key_positions.shape[0]
    rows, cols = dropout_keys(seed, B, H, max(T, int(key_positions.max()) + 1), key_positions.device)
    keep = dropout_keep(rows[:, :, :T, None], cols.gather(1, key_positions)[:, None, None, :], p)
    return keep.neg().float()  # 1 kept, 0 dropped


def global_token_index(global_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of global tokens, padded to the row with the most.

    Args:
        global_mask: ``(B, T)`` bool.

    Returns:
        ``index`` ``(B, G)`` long (padding slots point at position 0) and
        ``valid`` ``(B, G)`` bool, where ``G`` is the largest count in the batch.
    """
    counts = global_mask.sum(dim=1)
    G = int(counts.max()) if global_mask.numel() else 0
    # A stable sort puts the global positions first, in order.
    order = torch.sort((~global_mask).to(torch.int8), dim=1, stable=True).indices[:, :G]
    valid = torch.arange(G, device=global_mask.device)[None, :] < counts[:, None]
    return order.masked_fill(~valid, 0), valid


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, :, index[b, g]]`` for ``x`` of shape ``(B, H, T, D)`` and ``index`` ``(B, G)`` -> ``(B, H, G, D)``."""
    B, H, _, D = x.shape
    return x.gather(2, index[:, None, :, None].expand(B, H, index.shape[1], D))


def longformer_attention(
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
    block_size: int | None = None,
    dropout_p: float = 0.0,
    dropout_seed: int | None = None,
) -> torch.Tensor:
    """Longformer self-attention, with the semantics of transformers' ``LongformerSelfAttention``.

    * A local query attends to its (dilated) band, minus padding and minus
      global tokens, plus every global token (through the local ``k``/``v``).
    * Bidirectional only: a global query attends to every real token through
      ``q_global``/``k_global``/``v_global`` and that result replaces its row.
    * Causal (``right`` must be 0): global tokens are "sinks" - later queries
      attend to them wherever they are - and their own rows stay local.
    * Padding queries output 0.

    Args:
        q, k, v: ``(B, H, T, D)``, ``q`` pre-scaled.
        attention_mask: ``(B, T)`` bool, real tokens.
        global_mask: ``(B, T)`` bool, global tokens (ignored where padding).
        q_global: ``(B, H, G, D)`` global queries, already gathered at
            :func:`global_token_index` positions and pre-scaled.
        k_global, v_global: ``(B, H, T, D)`` global keys and values.
        dropout_p, dropout_seed: attention dropout; the mask of probability ``(b, h, i, j)`` is a function of
            the seed (drawn from torch's RNG when None) and those four counters, global rows and columns included
            (see :func:`dropout_keep`).

    Returns:
        ``(B, H, T, D)``.
    """
    B, H, T, D = q.shape
    attention_mask = attention_mask.bool()
    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = _draw_seed()  # one seed for the band, the global columns and the global rows
    # Global marks on padding count for nothing; with only those there are no global keys at all (and PyTorch's
    # fused kernel dies of SIGFPE on zero keys: found by tests/test_fuzz_ops.py).
    global_mask = None if global_mask is None else global_mask.bool() & attention_mask
    if global_mask is None or not bool(global_mask.any()):
        out = sliding_window_attention(
            q, k, v, left, right, key_mask=attention_mask,
            dilation=dilation, block_size=block_size, dropout_p=dropout_p, dropout_seed=dropout_seed,
        )
        return _zero_padding_rows(out, attention_mask)

    index, valid = global_token_index(global_mask)
    extra_mask = valid
    if causal:
        if right != 0:
            raise ValueError(f"causal attention needs right=0, got right={right}")
        positions = torch.arange(T, device=q.device)
        extra_mask = valid[:, None, :] & (index[:, None, :] <= positions[None, :, None])  # (B, T, G)
    out = sliding_window_attention(
        q, k, v, left, right,
        key_mask=attention_mask & ~global_mask,
        extra_k=gather_positions(k, index),
        extra_v=gather_positions(v, index),
        extra_mask=extra_mask, extra_positions=index,
        dilation=dilation, block_size=block_size, dropout_p=dropout_p, dropout_seed=dropout_seed,
    )
    if not causal:
        if q_global is None or k_global is None or v_global is None:
            raise ValueError("bidirectional global attention needs q_global, k_global and v_global")
        g_out = global_query_attention(  # (B, H, G, D)
            q_global, k_global, v_global, attention_mask, dropout_p, dropout_seed, index, block_size
        )
        # Write each global row back to its position (padding slots of `index` are skipped). Indexing the
        # (B, T, H, D) view keeps the layout the fast op writes, so the model's (B, T, C) reshape is free.
        rows, slots = valid.nonzero(as_tuple=True)
        out = out.transpose(1, 2).index_put((rows, index[rows, slots]), g_out.transpose(1, 2)[rows, slots].to(out.dtype))
        out = out.transpose(1, 2)
    return _zero_padding_rows(out, attention_mask)


def _zero_padding_rows(out: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    if bool(attention_mask.all()):  # nothing to zero: skip a pass over the output, forward and backward
        return out
    return out * attention_mask[:, None, :, None].to(out.dtype)


# Global queries per block of the blocked path: each block is a (b, T) score matrix, so b sets the GEMMs' row count
# (16 rows ran the products at half the speed of 64; measured with the op at 8192 tokens, 164 global queries).
_GLOBAL_ROWS_BLOCK = 64


def global_query_attention(q_global, k_global, v_global, key_mask, dropout_p=0.0, dropout_seed=None, positions=None,
                           block_size=None):
    """Attention of the few global queries ``(B, H, G, D)`` over all ``T`` keys, fp32 softmax.

    ``positions`` ``(B, G)``: where the global queries sit, which keys their rows of the dropout mask.
    """
    if _flash_cpu_usable(q_global, dropout_p):
        # The fused kernel never materialises the (B, H, G, T) scores; a key mask only where there is padding.
        bias = None
        if not bool(key_mask.all()):
            zero = torch.zeros((), dtype=q_global.dtype, device=q_global.device)
            bias = torch.where(key_mask, zero, _masked_score(q_global.dtype))[:, None, None, :]
        return F.scaled_dot_product_attention(q_global, k_global, v_global, attn_mask=bias, scale=1.0)
    # Otherwise the blocked path with the keys as "extra keys" and no band: (B, H, G, T) is never stored either.
    B, H, G, _ = q_global.shape
    T = k_global.shape[2]
    rk = ck = None
    if dropout_p > 0.0:
        seed = _draw_seed() if dropout_seed is None else dropout_seed
        if positions is None:
            positions = torch.arange(G, device=q_global.device).expand(B, G)
        rows, ck = dropout_keys(seed, B, H, max(T, int(positions.max()) + 1 if G else 0), q_global.device)
        rk, ck = rows.gather(2, positions[:, None, :].expand(B, H, G)), ck[:, :T]
    bias = _extra_bias(key_mask, G, q_global.dtype)  # (B, 1, G, T) or None
    b = min(block_size or _GLOBAL_ROWS_BLOCK, G)
    return _BlockedAttention.apply(
        q_global, None, None, k_global, v_global, None, bias, rk, None, ck, 0, 0, b, dropout_p
    )


def naive_longformer_attention(
    q, k, v, *, left, right, attention_mask, global_mask=None,
    q_global=None, k_global=None, v_global=None, causal=False, dilation=1, dropout_p=0.0, dropout_seed=None,
):
    """Dense reference for :func:`longformer_attention`: one ``T x T`` mask, one softmax per row kind.

    With ``dropout_p`` it needs ``dropout_seed`` and applies the op's very dropout mask to both row kinds.
    """
    B, H, T, D = q.shape
    real = attention_mask.bool()
    glob = torch.zeros_like(real) if global_mask is None else global_mask.bool() & real
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    offset = j - i
    band = (offset % dilation == 0) & (offset >= -left * dilation) & (offset <= right * dilation)
    # Local rows: band over real non-global keys, plus every global key (causal: earlier ones).
    global_key = (glob[:, None, :] & (j <= i)[None]) if causal else glob[:, None, :]  # (tensor & bool fails in traces)
    allowed = (band[None] & (real & ~glob)[:, None, :]) | global_key  # (B, T, T)
    scores = _softmax_dtype(q @ k.transpose(-1, -2)).masked_fill(~allowed[:, None], _MASKED_SCORE)
    drop = lambda probs: probs  # noqa: E731
    if dropout_p > 0.0:
        keep = _dense_keep(dropout_seed, H, torch.arange(T, device=q.device).expand(B, T), T, dropout_p)
        drop = lambda probs: probs * keep / (1.0 - dropout_p)  # noqa: E731
    out = drop(torch.softmax(scores, dim=-1)).to(v.dtype) @ v
    if glob.any() and not causal:
        index, valid = global_token_index(glob)
        # Scatter the gathered global queries back to full length for a dense computation.
        qg_full = torch.zeros_like(q)
        for bi in range(B):
            qg_full[bi, :, index[bi, valid[bi]]] = q_global[bi, :, : int(valid[bi].sum())]
        g_scores = _softmax_dtype(qg_full @ k_global.transpose(-1, -2)).masked_fill(~real[:, None, None, :], _MASKED_SCORE)
        g_out = drop(torch.softmax(g_scores, dim=-1)).to(v.dtype) @ v_global
        out = torch.where(glob[:, None, :, None], g_out, out)
    return out * real[:, None, :, None].to(out.dtype)
