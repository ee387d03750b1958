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

The fast path never builds a ``T x T`` tensor: queries are cut into blocks of
``block_size`` rows and each block attends to one contiguous key span of
``block_size + left + right`` keys (plus the global keys), so time and memory
are ``O(T * (block_size + left + right + G))``.
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
    # A block of b queries computes b + left + right scores per row for
    # left + right + 1 useful ones. Half the window keeps the waste near 20%
    # while the per-block matmuls stay large enough to run near peak on CPU
    # (measured in benchmarks/bench_longformer.py, block-size sweep).
    return max(16, (left + right) // 4 * 2 or 16)


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
        block_size: query rows per block; defaults to about half the window.
        dropout_p: dropout on the attention probabilities.

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
    if dilation == 1:
        return _banded_attention(
            q, k, v, left, right, key_mask, extra_k, extra_v, extra_mask, block_size, dropout_p
        )

    # Dilation d splits the sequence into d interleaved sub-sequences (positions
    # congruent mod d); inside each one the dilated band is an ordinary band.
    d = dilation
    pad = (-T) % d
    Td = (T + pad) // d

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (B*d, H, T/d, D)
        x = F.pad(x, (0, 0, 0, pad)).view(B, H, Td, d, D)
        return x.permute(0, 3, 1, 2, 4).reshape(B * d, H, Td, D)

    km = F.pad(key_mask, (0, pad), value=False).view(B, Td, d).transpose(1, 2).reshape(B * d, Td)
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
    out = _banded_attention(split(q), split(k), split(v), left, right, km, ek, ev, em, block_size, dropout_p)
    out = out.view(B, d, H, Td, D).permute(0, 2, 3, 1, 4).reshape(B, H, Td * d, D)  # (B, H, T+pad, D)
    return out[:, :, :T]


def _banded_attention(q, k, v, left, right, key_mask, extra_k, extra_v, extra_mask, block_size, dropout_p):
    B, H, T, D = q.shape
    b = min(block_size or _default_block_size(left, right), T)
    nb = math.ceil(T / b)
    Tq = nb * b
    span = b + left + right  # keys seen by one query block

    # Block j holds queries [j*b, (j+1)*b) and keys [j*b - left, (j+1)*b + right).
    qb = F.pad(q, (0, 0, 0, Tq - T)).view(B, H, nb, b, D)
    k_pad = F.pad(k, (0, 0, left, Tq - T + right))  # (B, H, Tq + left + right, D)
    v_pad = F.pad(v, (0, 0, left, Tq - T + right))
    kw = k_pad.unfold(2, span, b)  # (B, H, nb, D, span)
    vw = v_pad.unfold(2, span, b).transpose(-1, -2)  # (B, H, nb, span, D)

    # Query t of a block sits at key column t + left; it may see columns t .. t + left + right.
    t = torch.arange(b, device=q.device)[:, None]
    c = torch.arange(span, device=q.device)[None, :]
    band = (c >= t) & (c <= t + left + right)  # (b, span)
    km = F.pad(key_mask, (left, Tq - T + right), value=False).unfold(1, span, b)  # (B, nb, span)
    allowed = band & km[:, :, None, :]  # (B, nb, b, span)

    if extra_k is not None:
        G = extra_k.shape[2]
        kw = torch.cat([kw, extra_k.transpose(-1, -2)[:, :, None].expand(B, H, nb, D, G)], dim=-1)
        vw = torch.cat([vw, extra_v[:, :, None].expand(B, H, nb, G, D)], dim=-2)
        if extra_mask.dim() == 2:
            em = extra_mask[:, None, None, :].expand(B, nb, b, G)
        else:
            em = F.pad(extra_mask, (0, 0, 0, Tq - T), value=False).view(B, nb, b, G)
        allowed = torch.cat([allowed, em], dim=-1)  # (B, nb, b, span + G)

    scores = torch.matmul(qb, kw)  # (B, H, nb, b, span + G)
    scores = _softmax_dtype(scores)
    scores = scores.masked_fill(~allowed[:, None], _MASKED_SCORE)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    out = torch.matmul(probs, vw)  # (B, H, nb, b, D)
    return out.reshape(B, H, Tq, D)[:, :, :T]


def naive_sliding_window_attention(
    q, k, v, left, right, *, key_mask=None, extra_k=None, extra_v=None, extra_mask=None, dilation=1
):
    """Dense reference for :func:`sliding_window_attention` (builds ``T x T``; tests only)."""
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
    return torch.softmax(scores, dim=-1).to(v.dtype) @ values


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

    Returns:
        ``(B, H, T, D)``.
    """
    B, H, T, D = q.shape
    attention_mask = attention_mask.bool()
    if global_mask is None or not bool(global_mask.any()):
        out = sliding_window_attention(
            q, k, v, left, right, key_mask=attention_mask,
            dilation=dilation, block_size=block_size, dropout_p=dropout_p,
        )
        return out * attention_mask[:, None, :, None].to(out.dtype)

    global_mask = global_mask.bool() & attention_mask
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
        extra_mask=extra_mask,
        dilation=dilation, block_size=block_size, dropout_p=dropout_p,
    )
    if not causal:
        if q_global is None or k_global is None or v_global is None:
            raise ValueError("bidirectional global attention needs q_global, k_global and v_global")
        g_out = global_query_attention(q_global, k_global, v_global, attention_mask, dropout_p)  # (B, H, G, D)
        # Write each global row back to its position; padding slots go to a
        # scratch row T that is cut off afterwards.
        slot = index.masked_fill(~valid, T)[:, None, :, None].expand(B, H, index.shape[1], D)
        out = F.pad(out, (0, 0, 0, 1)).scatter(2, slot, g_out.to(out.dtype))[:, :, :T]
    return out * attention_mask[:, None, :, None].to(out.dtype)


def global_query_attention(q_global, k_global, v_global, key_mask, dropout_p=0.0):
    """Dense attention of the few global queries ``(B, H, G, D)`` over all ``T`` keys, fp32 softmax."""
    scores = _softmax_dtype(q_global @ k_global.transpose(-1, -2))  # (B, H, G, T)
    scores = scores.masked_fill(~key_mask[:, None, None, :], _MASKED_SCORE)
    probs = torch.softmax(scores, dim=-1).to(v_global.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v_global


def naive_longformer_attention(
    q, k, v, *, left, right, attention_mask, global_mask=None,
    q_global=None, k_global=None, v_global=None, causal=False, dilation=1,
):
    """Dense reference for :func:`longformer_attention`: one ``T x T`` mask, one softmax per row kind."""
    B, H, T, D = q.shape
    real = attention_mask.bool()
    glob = torch.zeros_like(real) if global_mask is None else global_mask.bool() & real
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    offset = j - i
    band = (offset % dilation == 0) & (offset >= -left * dilation) & (offset <= right * dilation)
    # Local rows: band over real non-global keys, plus every global key (causal: earlier ones).
    global_key = glob[:, None, :] & ((j <= i)[None] if causal else True)
    allowed = (band[None] & (real & ~glob)[:, None, :]) | global_key  # (B, T, T)
    scores = _softmax_dtype(q @ k.transpose(-1, -2)).masked_fill(~allowed[:, None], _MASKED_SCORE)
    out = torch.softmax(scores, dim=-1).to(v.dtype) @ v
    if glob.any() and not causal:
        index, valid = global_token_index(glob)
        # Scatter the gathered global queries back to full length for a dense computation.
        qg_full = torch.zeros_like(q)
        for bi in range(B):
            qg_full[bi, :, index[bi, valid[bi]]] = q_global[bi, :, : int(valid[bi].sum())]
        g_scores = _softmax_dtype(qg_full @ k_global.transpose(-1, -2)).masked_fill(~real[:, None, None, :], _MASKED_SCORE)
        g_out = torch.softmax(g_scores, dim=-1).to(v.dtype) @ v_global
        out = torch.where(glob[:, None, :, None], g_out, out)
    return out * real[:, None, :, None].to(out.dtype)
