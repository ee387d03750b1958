"""Longformer attention in static-shape tensor ops, for graphs: ``torch.export``, ONNX and compiled inference.

The fast paths (``banded_fused.py``, ``banded_blocked.py``) plan their blocks in Python, call PyTorch's fused CPU
kernel through custom autograd Functions and write into preallocated outputs: fast eagerly, but a graph
cannot hold them (``torch.export`` stopped at their data-dependent planning, and ONNX has no such kernel). This
path computes the same attention (tested against the dense twin in ``naive.py``) with ops every exporter knows:

* queries in blocks of ``b = max(left, right)``; each block reads the key chunks before, at and after it
  (``3b`` keys, fewer when one side of the band is empty) and masks what lies outside its band, so memory is
  ``O(T * 3b)`` per head and no ``T x T`` matrix is built;
* global tokens are ``G`` extra keys for every query, where ``G`` (the most global tokens in a row) is read
  from the input: a data-dependent size in the graph, so one exported graph serves any count;
* global queries attend to every real key (``O(G * T)``) and replace their rows.

Attention dropout is the fast op's counter-based mask (``counter_dropout.py``), computed from a tensor seed in
the graph (compiled training). No dilation: the model uses this path only without it, and refuses to export a
dilated model by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .counter_dropout import col_keys_at, draw_seed_tensor, keep_at, row_keys_at
from .scores import _masked_score
from .sliding_window_attention import global_token_index


def _blocks_of(x: torch.Tensor, N: int, b: int) -> torch.Tensor:
    """``(B, H, T, D)`` -> ``(B, H, N, b, D)``, zero-padded at the end to ``N * b`` rows."""
    B, H, T, D = x.shape
    return F.pad(x, (0, 0, 0, N * b - T)).view(B, H, N, b, D)


def _windows(x: torch.Tensor, N: int, b: int, before: bool, after: bool) -> torch.Tensor:
    """The chunks each query block reads, ``(B, H, N, S*b, D)`` (``S`` = 1 + before + after), from
    ``x`` ``(B, H, T, D)``: chunk ``j - 1`` (if ``before``), ``j`` and ``j + 1`` (if ``after``)."""
    chunks = F.pad(_blocks_of(x, N, b), (0, 0, 0, 0, 1, 1))  # (B, H, N + 2, b, D): a zero chunk at each end
    parts = ([chunks[:, :, :N]] if before else []) + [chunks[:, :, 1:N + 1]] + ([chunks[:, :, 2:]] if after else [])
    return torch.cat(parts, dim=3)


def longformer_attention_graph(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    left: int,
    right: int,
    attention_mask: torch.Tensor,
    global_mask: torch.Tensor | None = None,
    global_index: tuple[torch.Tensor, torch.Tensor] | None = None,
    q_global: torch.Tensor | None = None,
    k_global: torch.Tensor | None = None,
    v_global: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    dropout_seed: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`~.sliding_window_attention.longformer_attention` without dilation, as a static graph.

    Args:
        q, k, v: ``(B, H, T, D)``, ``q`` pre-scaled.
        left, right: the band (``right`` 0 when ``causal``).
        attention_mask: ``(B, T)`` bool, real tokens.
        global_mask: ``(B, T)`` bool, global tokens (bidirectional: they attend to everything; causal: sinks
            every later query attends to). ``global_index``: its :func:`global_token_index`, ``(B, G)`` twice
            (computed here when not given).
        q_global: ``(B, H, G, D)`` pre-scaled global queries at ``global_index``; k_global, v_global
            ``(B, H, T, D)`` (bidirectional with global tokens only).
        dropout_p, dropout_seed: attention dropout, the fast op's mask for the same seed (a 0-d int64 tensor;
            drawn from torch's RNG when None).

    Returns:
        ``(B, H, T, D)``, padding rows 0.
    """
    B, H, T, D = q.shape
    real = attention_mask.bool()
    glob = None if global_mask is None else global_mask.bool() & real
    b = max(left, right, 1)
    N = (T + b - 1) // b  # not -(-T // b): exported, a negative floor division became a truncation
    sdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    masked = _masked_score(sdt).to(q.device)

    # Band scores: block j's queries against chunks j-1, j, j+1 (B, H, N, b, S*b).
    before, after = left > 0, right > 0
    k_w, v_w = _windows(k, N, b, before, after), _windows(v, N, b, before, after)
    positions = torch.arange(N * b, device=q.device).view(N, b)
    offsets = torch.arange(-b if before else 0, (2 * b) if after else b, device=q.device)  # window column -> key
    key_pos = positions[:, :1] + offsets[None, :]  # (N, S*b)
    distance = key_pos[:, None, :] - positions[:, :, None]  # (N, b, S*b)
    in_band = (distance >= -left) & (distance <= right)
    band_keys = real if glob is None else real & ~glob  # global keys are reached as extra keys, once
    key_ok = F.pad(band_keys, (b, 2 * b), value=False).gather(1, (key_pos.flatten() + b)[None].expand(B, -1))
    allowed = in_band[None] & key_ok.view(B, N, 1, -1)  # (B, N, b, S*b)
    scores = (_blocks_of(q, N, b) @ k_w.transpose(-1, -2)).to(sdt)
    scores = torch.where(allowed[:, None], scores, masked)

    drop = _no_dropout
    if dropout_p > 0.0:
        seed = draw_seed_tensor(q.device) if dropout_seed is None else dropout_seed
        bh = torch.arange(B * H, device=q.device).view(B, H, 1, 1, 1)
        rows = row_keys_at(seed, bh, positions[:, :, None])  # (B, H, N, b, 1): the queries' keys
        drop = _Dropper(rows, seed, dropout_p)
        scale = 1.0 / (1.0 - dropout_p)

    have_extra = glob is not None
    if have_extra:  # every query also reads the G global keys (causal: the ones at or before it)
        index, valid = global_index if global_index is not None else global_token_index(glob)
        G = index.shape[1]
        take = index[:, None, :, None].expand(B, H, G, D)
        k_e, v_e = k.gather(2, take), v.gather(2, take)  # (B, H, G, D)
        extra_ok = valid[:, None, :]  # (B, 1, G); rows past T are padding queries, cut off below
        if causal:
            extra_ok = extra_ok & (index[:, None, :] <= torch.arange(N * b, device=q.device)[None, :, None])
        extra_ok = extra_ok.expand(B, N * b, G).reshape(B, N, b, G)
        e_scores = torch.where(extra_ok[:, None], (_blocks_of(q, N, b) @ k_e[:, :, None].transpose(-1, -2)).to(sdt),
                               masked)  # (B, H, N, b, G)
        probs = torch.softmax(torch.cat([scores, e_scores], dim=-1), dim=-1)
        band_probs = drop(probs[..., : scores.shape[-1]], key_pos[:, None, :])
        extra_probs = drop(probs[..., scores.shape[-1]:], index[:, None, None, None, :])
        out = band_probs.to(v.dtype) @ v_w + extra_probs.to(v.dtype) @ v_e[:, :, None]
    else:
        out = drop(torch.softmax(scores, dim=-1), key_pos[:, None, :]).to(v.dtype) @ v_w
    out = out.view(B, H, N * b, D)[:, :, :T]

    if have_extra and not causal:
        g_drop = None
        if dropout_p > 0.0:  # global rows: the rows' keys at the global tokens' positions, every key's column key
            g_rows = row_keys_at(seed, bh[..., 0], index[:, None, :, None])  # (B, H, G, 1)
            g_keep = keep_at(g_rows, col_keys_at(seed, torch.arange(T, device=q.device)), dropout_p)
            g_drop = lambda probs: probs * g_keep.to(probs.dtype) * scale  # noqa: E731
        out = global_rows_replace(out, q_global, k_global, v_global, real, glob, g_drop)
    return out * real[:, None, :, None].to(out.dtype)


def _no_dropout(probs, key_positions):
    return probs


class _Dropper:
    """Drops probabilities ``(B, H, N, b, K)`` of the keys at ``key_positions`` (broadcasting against them) with
    the counter-based mask of the rows' keys ``(B, H, N, b, 1)``; scales the kept ones by ``1 / (1 - p)``."""

    def __init__(self, rows, seed, p):
        self.rows, self.seed, self.p = rows, seed, p

    def __call__(self, probs, key_positions):
        keep = keep_at(self.rows, col_keys_at(self.seed, key_positions), self.p)
        return probs * keep.to(probs.dtype) * (1.0 / (1.0 - self.p))


def global_rows_replace(out, q_global, k_global, v_global, real, glob, dropout=None):
    """Global rows attend to every real key (``q_global`` ``(B, H, G, D)`` pre-scaled, ``k_global`` and
    ``v_global`` ``(B, H, T, D)``) and replace their rows of ``out`` ``(B, H, T, D)``; ``glob`` excludes padding.
    ``dropout``: applied to the ``(B, H, G, T)`` probabilities."""
    B, H, T, D = out.shape
    sdt = torch.float64 if q_global.dtype == torch.float64 else torch.float32
    masked = _masked_score(sdt).to(out.device)
    g_scores = torch.where(real[:, None, None, :], (q_global @ k_global.transpose(-1, -2)).to(sdt), masked)
    g_probs = torch.softmax(g_scores, dim=-1)
    g_out = (g_probs if dropout is None else dropout(g_probs)).to(v_global.dtype) @ v_global  # (B, H, G, D)
    g_out = F.pad(g_out, (0, 0, 0, 1))  # one spare row, so that G = 0 still gathers
    slot = (glob.long().cumsum(1) - 1).clamp(min=0)  # (B, T): row t's place among its row's global tokens
    g_rows = g_out.gather(2, slot[:, None, :, None].expand(B, H, T, D))
    return torch.where(glob[:, None, :, None], g_rows.to(out.dtype), out)


__all__ = ["global_rows_replace", "longformer_attention_graph"]
