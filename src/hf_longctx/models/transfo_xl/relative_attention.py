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
    # Half the most negative finite value: exp() underflows to exactly 0 next to any real key (as 4.49's finfo.min,
    # M 325-335), the content term can still be added without overflowing to -inf, and a query whose keys are all
    # masked (a padding position) gets a finite row instead of NaN, so no NaN reaches the gradients.
    return torch.finfo(dtype).min / 2


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Realign scores against descending distances so that column ``j`` holds key ``j``'s distance.

    ``x`` is ``(B, H, T, K)`` with ``x[..., i, c]`` the score of query ``i`` against distance ``K - 1 - c``
    (``T <= K``). Returns ``y`` of the same shape with ``y[..., i, j] = x[..., i, j + T - 1 - i]``, i.e. the score
    for distance ``(K - T) + i - j``, for every ``j <= i + K - T``; entries with ``j > i + K - T`` (future keys)
    hold unrelated values and must be masked by the caller.

    The trick of the paper's code (appendix B; 4.49 ``_rel_shift``, M 271-281): prepend a zero column, read the
    ``T x (K + 1)`` buffer as ``(K + 1) x T``, drop its first row and read the rest as ``T x K``. Each row ``i``
    then starts ``T - 1 - i`` entries further into ``x``'s row ``i``.
    """
    B, H, T, K = x.shape
    padded = F.pad(x, (1, 0))  # (B, H, T, K + 1), contiguous
    return padded.view(B, H, K + 1, T)[:, :, 1:].reshape(B, H, T, K)  # (B, H, T, K)


def relative_attention_mask(
    T: int, K: int, key_mask: torch.Tensor | None = None, window: int | None = None, device=None
) -> torch.Tensor:
    """Which keys each query may attend to: ``(B or 1, 1, T, K)`` bool, True = allowed.

    Causal over memory + segment (``0 <= d``, ``d = (K - T) + i - j``); with ``window`` (Transformer-XL's
    ``same_length``, 4.49 M 923-936) also ``d < window``, so every query sees the same number of positions;
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

    Returns:
        ``(B, H, T, D)``. Rows of queries with no allowed key (padding) are finite but meaningless.
    """
    B, H, T, D = q.shape
    K = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    # The scale is folded into the (B, H, T, D) queries and biases, not applied to the (B, H, T, K) scores.
    q = q * scale
    # (b)+(d): position term against every distance, realigned per query row by rel_shift.
    # r is shared by the batch: (H, B*T, D) @ (H, D, K) in one bmm, without copying r once per row.
    qr = (q + (r_r_bias * scale)[None, :, None, :]).transpose(0, 1).reshape(H, B * T, D)
    position = rel_shift((qr @ r.transpose(-1, -2)).view(H, B, T, K).transpose(0, 1))  # (B, H, T, K)
    allowed = relative_attention_mask(T, K, key_mask, window, device=q.device)
    # An additive mask, in place on rel_shift's fresh buffer: its backward is the identity (masked_fill's is a
    # second pass over the scores).
    bias = torch.zeros(allowed.shape, dtype=position.dtype, device=q.device).masked_fill_(
        ~allowed, _masked_value(position.dtype))
    position = position.add_(bias)
    # (a)+(c): content term with the global content bias u, added by the GEMM itself (baddbmm: one pass less).
    scores = torch.baddbmm(
        position.reshape(B * H, T, K),
        (q + (r_w_bias * scale)[None, :, None, :]).reshape(B * H, T, D),
        k.reshape(B * H, K, D).transpose(1, 2),
    ).view(B, H, T, K)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
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
    ``w_k = 1 / 10000^(2k / d_model)`` (Vaswani et al. 2017; the sin-then-cos halves as in 4.49 M 180-190)."""
    # Computed in the model's dtype, as 4.49 does in fp32, so that converted checkpoints match to rounding.
    inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0, device=distances.device, dtype=dtype) / d_model))
    angles = torch.outer(distances.to(dtype), inv_freq)  # (N, d_model / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


__all__ = ["rel_shift", "relative_attention", "relative_attention_mask", "naive_relative_attention", "sinusoid_positions"]
