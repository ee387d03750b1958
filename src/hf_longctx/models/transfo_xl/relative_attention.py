"""Transformer-XL relative multi-head attention (Dai et al. 2019, section 3.3) as pure torch functions.

Layout everywhere: ``(B, H, T, D)`` = (batch, heads, positions, head size). Queries are the ``T`` positions of the
current segment; keys and values are the ``K = M + T`` positions of the memory (``M`` earlier positions) followed
by the current segment, so query ``i`` sits at key position ``M + i``.

Score of query ``i`` and key ``j`` at distance ``d = M + i - j`` (section 3.3, terms (a)+(c) and (b)+(d)):

    score(i, j) = (q_i + u) . k_j  +  (q_i + v) . r_d,     r_d = W_r R(d)

with ``u = r_w_bias`` and ``v = r_r_bias`` per head, ``R`` the sinusoid of the (possibly clamped) distance, and
``W_r`` already applied by the caller: ``r`` holds the projected embeddings, one row per distance **in descending
order** (row ``c`` is distance ``K - 1 - c``), which is the order of the paper's code and of transformers 4.49
(``modeling_transfo_xl.py`` 941-946). Keys with ``d < 0`` are in the future and masked (causal).

:func:`relative_attention` computes the second term for all (i, c) with one matmul and realigns it with
:func:`rel_shift` (no gathers); :func:`naive_relative_attention` gathers ``r_d`` for every (i, j) explicitly: the
plain statement of the formula, used by the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _masked_value(dtype: torch.dtype) -> float:
    # Half the most negative finite value: exp() underflows to exactly 0 next to any real key (as 4.49's finfo.min in
    # ``RelPartialLearnableMultiHeadAttn.forward``), the content term can still be added without overflowing to -inf,
    # and a query whose keys are all masked (a padding position) gets a finite row instead of NaN, so no NaN reaches
    # the gradients.
    return torch.finfo(dtype).min / 2


def _skewed(x: torch.Tensor) -> torch.Tensor:
    """The rel-shift as a view: ``y[..., i, j] = x[..., i, j + T - 1 - i]`` read in place.

    ``x`` is ``(B, H, T, K)`` with every ``T x K`` block contiguous (outer strides free). Row ``i`` of ``y`` starts
    ``T - 1 - i`` entries into row ``i`` of ``x`` and runs on with row stride ``K - 1``: the valid entries
    (``j <= i + K - T``) lie inside row ``i``; later ones (future keys) read the start of row ``i + 1``, which the
    caller masks. The last read is the block's last element, so nothing outside a block is touched.
    """
    B, H, T, K = x.shape
    assert x.stride(-1) == 1 and (T == 1 or x.stride(-2) == K), "each (T, K) block must be contiguous"
    return x.as_strided((B, H, T, K), (x.stride(0), x.stride(1), K - 1, 1), x.storage_offset() + T - 1)


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Realign scores against descending distances so that column ``j`` holds key ``j``'s distance.

    ``x`` is ``(B, H, T, K)`` with ``x[..., i, c]`` the score of query ``i`` against distance ``K - 1 - c``
    (``T <= K``). Returns ``y`` of the same shape with ``y[..., i, j] = x[..., i, j + T - 1 - i]``, i.e. the score
    for distance ``(K - T) + i - j``, for every ``j <= i + K - T``; entries with ``j > i + K - T`` (future keys)
    hold unrelated values and must be masked by the caller.

    The paper's code (appendix B; 4.49's ``RelPartialLearnableMultiHeadAttn._rel_shift``) pads a zero column and
    reshapes, two copies of the score matrix; reading ``x`` with row stride ``K - 1`` instead (:func:`_skewed`) gives
    the same entries with one. Inside :func:`relative_attention` the shift, the mask and their backward are one pass
    each (:class:`_ShiftAndMask`).
    """
    return _skewed(x.contiguous()).contiguous()


class _ShiftAndMask(torch.autograd.Function):
    """``rel_shift(x) + bias`` in one pass forward and one backward; ``bias`` is 0 where a key is allowed and a
    large negative value where it is masked, ``keep`` is 1.0 / 0.0 likewise (both ``(B or 1, 1, T, K)``).

    The masked entries' gradients are dropped (``* keep``) as a ``masked_fill`` would, so that a query with no
    allowed key (padding) sends nothing back. ``keep=None`` when every query has an allowed key (no padding: the
    causal mask and the window always allow the query's own position): the masked entries' probabilities are then
    exactly 0, so are their gradients, and the backward is a plain copy. The backward writes through the same skewed view of a fresh buffer:
    the view minus its last column covers every entry of a block but the first ``T - 1`` (which no valid score
    reads: set to 0) and the last (written on its own), each once. autograd's generic ``as_strided`` backward would
    take a slow path instead, because the full view overlaps itself (entry ``(i, K - 1)`` is entry ``(i + 1, 0)``).
    Arithmetic with a float mask, not ``torch.where`` with a bool one: ``where`` was 3-5x slower here (CPU).
    """

    @staticmethod
    def forward(ctx, x, bias, keep):
        B, H, T, K = x.shape
        out = x.new_empty(B * H, T, K)  # batch-flat, so that the caller's in-place GEMM is not on a view
        torch.add(_skewed(x), bias, out=out.view(B, H, T, K))
        ctx.save_for_backward(keep)  # None allowed
        ctx.x_shape, ctx.x_stride = x.shape, x.stride()
        return out

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        B, H, T, K = ctx.x_shape
        grad = grad.view(B, H, T, K)
        gx = torch.empty_strided((B, H, T, K), ctx.x_stride, dtype=grad.dtype, device=grad.device)
        if keep is None:
            _skewed(gx)[..., : K - 1].copy_(grad[..., : K - 1])
            gx[..., T - 1, K - 1] = grad[..., T - 1, K - 1]
        else:
            torch.mul(grad[..., : K - 1], keep[..., : K - 1], out=_skewed(gx)[..., : K - 1])
            gx[..., T - 1, K - 1] = grad[..., T - 1, K - 1] * keep[..., T - 1, K - 1]
        gx[..., 0, : T - 1] = 0.0
        return gx, None, None


def relative_attention_mask(
    T: int, K: int, key_mask: torch.Tensor | None = None, window: int | None = None, device=None
) -> torch.Tensor:
    """Which keys each query may attend to: ``(B or 1, 1, T, K)`` bool, True = allowed.

    Causal over memory + segment (``0 <= d``, ``d = (K - T) + i - j``); with ``window`` (Transformer-XL's
    ``same_length``, 4.49's ``TransfoXLModel.forward``) also ``d < window``, so every query sees the same number of positions;
    ``key_mask`` ``(B, K)`` (True = real token) removes padding.
    """
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(K, device=device)[None, :]
    d = (K - T) + i - j  # (T, K) distance of key j from query i
    allowed = d >= 0
    if window is not None:
        allowed = allowed & (d < window)
    allowed = allowed[None, None]  # (1, 1, T, K)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()  # (B, 1, T, K)
    return allowed


def shift_and_mask(x: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """What :class:`_ShiftAndMask` computes, ``(rel_shift(x) + bias)`` as ``(B*H, T, K)``, written with views of a
    padded copy only (the paper's zero-column trick, appendix B), so that ``torch.compile`` traces it: Inductor
    cannot write through the overlapping strided view that the eager path uses. ``keep`` (or ``None``) drops the
    masked entries' gradients, as there."""
    B, H, T, K = x.shape
    shifted = F.pad(x, (1, 0)).view(B, H, K + 1, T)[:, :, 1:].reshape(B, H, T, K)  # needs T <= K
    if keep is not None:
        shifted = shifted * keep
    return (shifted + bias).reshape(B * H, T, K)


def relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    r_w_bias: torch.Tensor,
    r_r_bias: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    window: int | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    query_block: int | None = 128,
) -> torch.Tensor:
    """Relative multi-head attention of a segment over memory + segment, causal.

    Args:
        q: ``(B, H, T, D)`` queries of the current segment.
        k, v: ``(B, H, K, D)`` keys and values of the ``M = K - T`` memory positions then the segment.
        r: ``(H, K, D)`` projected relative position embeddings, row ``c`` = distance ``K - 1 - c``.
        r_w_bias, r_r_bias: ``(H, D)``, the paper's ``u`` (content bias) and ``v`` (position bias).
        key_mask: ``(B, K)`` bool, True = real key; padding keys get no attention.
        window: if set, query ``i`` only sees keys at distance ``< window`` (``same_length``).
        dropout_p: dropout on the attention probabilities (the model's ``dropatt``).
        scale: score scale, default ``1 / sqrt(D)``.
        query_block: queries are processed in blocks of this many, each against the keys up to its last query
            only: the blocks skip the future keys of the segment that a single ``T x K`` block computes and masks
            (at T = M = 256, two blocks compute 7/8 of the scores; measured 12% faster forward + backward on one
            CPU thread, blocks of 64 were slower again). ``None``: one block.

    Returns:
        ``(B, H, T, D)``. Rows of queries with no allowed key (padding) are finite but meaningless.
    """
    B, H, T, D = q.shape
    K = k.shape[2]
    if query_block is not None and T > query_block:
        outs = []
        for a in range(0, T, query_block):
            b = min(a + query_block, T)
            Kb = K - T + b  # the keys up to query b - 1
            outs.append(relative_attention(
                q[:, :, a:b], k[:, :, :Kb], v[:, :, :Kb], r[:, K - Kb:], r_w_bias, r_r_bias,
                key_mask=None if key_mask is None else key_mask[:, :Kb], window=window, dropout_p=dropout_p,
                scale=scale, query_block=None,
            ))  # r's last Kb rows are the distances Kb - 1 ... 0
        return torch.cat(outs, dim=2)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    # The biases are parameters: under autocast they stay float32 while q is bfloat16, and the in-place GEMM below
    # takes one dtype.
    r_w_bias, r_r_bias = r_w_bias.to(q.dtype), r_r_bias.to(q.dtype)
    # The scale is folded into the (B, H, T, D) queries and biases, not applied to the (B, H, T, K) scores.
    q = q * scale
    # (b)+(d): position term against every distance, realigned per query row by the rel-shift.
    # r is shared by the batch: (H, B*T, D) @ (H, D, K) in one bmm, without copying r once per row.
    qr = (q + (r_r_bias * scale)[None, :, None, :]).transpose(0, 1).reshape(H, B * T, D)
    qr = (qr @ r.transpose(-1, -2)).view(H, B, T, K).transpose(0, 1)  # (B, H, T, K), (T, K) blocks contiguous
    allowed = relative_attention_mask(T, K, key_mask, window, device=q.device)
    # Shift and mask in one pass into a fresh (B, H, T, K) buffer (the masked entries get a finite value, see
    # _masked_value), then (a)+(c), the content term with the global content bias u, accumulated in place by the
    # GEMM itself (baddbmm_: no further pass over the scores).
    keep = allowed.to(qr.dtype)  # (B or 1, 1, T, K), small
    bias = (1.0 - keep) * _masked_value(qr.dtype)
    if torch.compiler.is_compiling():
        scores = shift_and_mask(qr, bias, keep if key_mask is not None else None)  # (B*H, T, K)
    else:
        scores = _ShiftAndMask.apply(qr, bias, keep if key_mask is not None else None)  # (B*H, T, K)
    scores.baddbmm_((q + (r_w_bias * scale)[None, :, None, :]).reshape(B * H, T, D),
                    k.reshape(B * H, K, D).transpose(1, 2))
    probs = torch.softmax(scores.view(B, H, T, K), dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return probs @ v  # (B, H, T, D)


def gathered_relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    r_w_bias: torch.Tensor,
    r_r_bias: torch.Tensor,
    *,
    rows: torch.Tensor,
    allowed: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Relative attention over keys stored in any order (a ring buffer): the distance of each key is given.

    Args:
        q: ``(B, H, T, D)``; k, v: ``(B, H, K, D)`` in any order.
        r: ``(H, N, D)`` projected position embeddings, one row per distance.
        rows: ``(T, K)`` long, the row of ``r`` holding the distance from query ``i`` to key ``j``.
        allowed: ``(B or 1, 1, T, K)`` bool, True = key ``j`` may be attended by query ``i`` (the caller encodes
            causality, the window, padding and empty slots here).

    The position term is computed against all ``N`` distances, ``(T, N)`` per head, and gathered per key; for a
    decoding step (``T = 1``) over a fixed ring of ``K = N`` slots the work is the same at every step. Same result
    as :func:`relative_attention` on the keys sorted by time (tests/test_transfo_xl_ops.py).
    """
    B, H, T, D = q.shape
    K = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    r_w_bias, r_r_bias = r_w_bias.to(q.dtype), r_r_bias.to(q.dtype)  # float32 parameters under autocast
    q = q * scale
    N = r.shape[1]
    qr = (q + (r_r_bias * scale)[None, :, None, :]).transpose(0, 1).reshape(H, B * T, D)  # r is not copied per row
    position = (qr @ r.transpose(-1, -2)).view(H, B, T, N).transpose(0, 1)  # (B, H, T, N)
    position = position.gather(-1, rows[None, None].expand(B, H, T, K))  # (B, H, T, K)
    content_q = (q + (r_w_bias * scale)[None, :, None, :]).reshape(B * H, T, D)
    scores = torch.baddbmm(position.reshape(B * H, T, K), content_q, k.reshape(B * H, K, D).transpose(1, 2))
    scores = scores.view(B, H, T, K)
    probs = torch.softmax(scores.masked_fill(~allowed, _masked_value(scores.dtype)), dim=-1)
    return probs @ v  # (B, H, T, D)


def naive_relative_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    r_w_bias: torch.Tensor,
    r_r_bias: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Dense twin of :func:`relative_attention` (same arguments and layout ``(B, H, T, D)``, no dropout).

    Builds the ``T x K`` score matrix entry by entry from the formula: for each (i, j) the distance
    ``d = (K - T) + i - j`` picks ``r_d`` (row ``K - 1 - d`` of ``r``) by a gather, then
    ``score = (q_i + u) . k_j + (q_i + v) . r_d``. Future keys (``d < 0``), keys outside ``window`` and padding
    are excluded before the softmax.
    """
    B, H, T, D = q.shape
    K = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(K, device=q.device)[None, :]
    d = (K - T) + i - j  # (T, K)
    row = (K - 1 - d).clamp(0, K - 1)  # row of r holding distance d (future keys read any row; masked below)
    r_ij = r[:, row]  # (H, T, K, D): gather of r_d for every (i, j)
    content = torch.einsum("bhid,bhjd->bhij", q + r_w_bias[None, :, None, :], k)
    position = torch.einsum("bhid,hijd->bhij", q + r_r_bias[None, :, None, :], r_ij)
    scores = (content + position) * scale
    allowed = (d >= 0)[None, None].expand(B, H, T, K)
    if window is not None:
        allowed = allowed & (d < window)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, _masked_value(scores.dtype))
    return torch.softmax(scores, dim=-1) @ v


def sinusoid_positions(distances: torch.Tensor, d_model: int, dtype=torch.float32) -> torch.Tensor:
    """Sinusoid embedding ``R`` of (float) distances: ``(N,) -> (N, d_model)`` = ``[sin(d w), cos(d w)]`` with
    ``w_k = 1 / 10000^(2k / d_model)`` (Vaswani et al. 2017; the sin-then-cos halves as in 4.49's
    ``PositionalEmbedding.forward``)."""
    # Computed in the model's dtype, as 4.49 does in fp32, so that converted checkpoints match to rounding.
    inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0, device=distances.device, dtype=dtype) / d_model))
    angles = torch.outer(distances.to(dtype), inv_freq)  # (N, d_model / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


__all__ = [
    "rel_shift", "relative_attention", "gathered_relative_attention", "relative_attention_mask",
    "naive_relative_attention", "sinusoid_positions",
]
