"""The fused CPU path of :func:`sliding_window_attention.sliding_window_attention`: blocks of queries through
PyTorch's flash attention kernel for CPU (no dropout), forward and backward as one autograd Function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .longctx_fused_cpu import FLASH_CPU, FLASH_CPU_BWD, flash_cpu_available
from .scores import _masked_score


# PyTorch's fused CPU attention kernel (longctx_fused_cpu.py): the row log-sum-exp it returns lets the band and the
# global keys be two separate kernel calls merged exactly, with no copy of the global keys into every block.
# Without it (other devices, dropout) the blocked path runs.
_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _flash_cpu_usable(q: torch.Tensor, dropout_p: float) -> bool:
    # The kernel has no dropout; the unfused path applies it to the probabilities.
    return (
        flash_cpu_available(q) and q.dtype in _FLASH_DTYPES and dropout_p == 0.0
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
        if not torch.compiler.is_compiling() and bool(extra_mask.all()):
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
            o1, l1 = FLASH_CPU(qb, kw, vw, attn_mask=band_bias[i], scale=1.0)  # (nb, H, b, D), (nb, H, b)
            o1 = o1.transpose(0, 1).reshape(H, Tq, D)[:, :T]  # views: the kernel wrote (nb, b, H, D)
            l1 = l1.transpose(0, 1).reshape(H, Tq)[:, :T]
            if extra_k is None:
                out[i], lse[i] = o1, l1
                continue
            eb = None if extra_bias is None else extra_bias[i : i + 1]
            o2, l2 = FLASH_CPU(q[i : i + 1], extra_k[i : i + 1], extra_v[i : i + 1], attn_mask=eb, scale=1.0)
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
            dqb, dkw, dvw = FLASH_CPU_BWD(gb, qb, kw, vw, ob, lb, 0.0, False, attn_mask=band_bias[i], scale=1.0)
            dq[i] = dqb.transpose(0, 1).reshape(H, Tq, D)[:, :T]
            _fold_windows(dkw, dk_pad[i], b)
            _fold_windows(dvw, dv_pad[i], b)
            if extra_k is not None:
                eb = None if extra_bias is None else extra_bias[i : i + 1]
                dq2, dek[i : i + 1], dev[i : i + 1] = FLASH_CPU_BWD(
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
