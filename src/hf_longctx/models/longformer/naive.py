"""Dense twins of the Longformer attention ops: they build the full ``T x T`` mask (and the same counter-based
dropout mask as the fast paths), so the tests compare forward and every gradient exactly. The model also runs the
dense op under ``torch.jit.trace``, which cannot record the fast paths' blocking.
"""

from __future__ import annotations

import torch

from .counter_dropout import dropout_keep, dropout_keys
from .scores import _MASKED_SCORE, _softmax_dtype
from .sliding_window_attention import global_token_index


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
