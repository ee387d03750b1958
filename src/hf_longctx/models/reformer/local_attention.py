"""Local chunked attention (the Reformer's ``local`` layers): each query chunk attends to its own chunk and
``before`` / ``after`` neighbours, counted over a row's real tokens. Pure torch; it shares the chunking helpers,
the fused kernel and the dropout of :mod:`lsh_attention`.
"""

from __future__ import annotations

import math

import torch

from .longctx_common import has_padding_before_tokens
from .lsh_attention import (
    _FORBIDDEN,
    _check_chunking,
    _chunk_bias,
    _chunk_neighbours,
    _gather_chunks,
    _pad_time,
    _real_mask,
    _score_dtype,
    _softmax,
    seeded_dropout,
)


# --------------------------------------------------------------------------------------------------------------------
# Local chunked attention
# --------------------------------------------------------------------------------------------------------------------


def local_chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_length: int,
    num_chunks_before: int = 1,
    num_chunks_after: int = 0,
    causal: bool = False,
    attention_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attention inside position chunks: a query sees the keys of its chunk and its neighbour chunks.

    Args:
        q, k, v: ``(B, H, T, D)``; keys are scaled by ``1/sqrt(D)`` here (transformers scales keys, not queries).
        chunk_length, num_chunks_before, num_chunks_after: the neighbourhood rule of the module docstring, on the
            cycle of chunks up to the one of the row's last real token (without padding: transformers' circular
            neighbours, so a bidirectional layer's first chunk also sees the last one).
        causal: key position <= query position.
        attention_mask: ``(B, T)``, ``True``/1 for real tokens.
        dropout_p, generator: dropout on the probabilities, drawn from ``generator``.

    Chunks are counted over a row's real tokens: padding before or between them takes no place in a chunk (the
    row is read with its real tokens moved to the front, in order), so a left-padded row reads as it does alone.

    Returns ``(B, H, T, D)``; rows of padding queries are finite but meaningless.
    """
    _check_chunking(chunk_length, num_chunks_before, num_chunks_after)
    B, H, T, D = q.shape
    real = _real_mask(attention_mask, B, T, q.device)
    if has_padding_before_tokens(real):  # padding before a real token in some row (compiled: asserted absent)
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # (B, T) real tokens first, in order
        take = order[:, None, :, None].expand(B, H, T, D)
        out = local_chunked_attention(
            q.gather(2, take), k.gather(2, take), v.gather(2, take), chunk_length, num_chunks_before,
            num_chunks_after, causal, real.gather(1, order), dropout_p, generator)
        return torch.empty_like(out).scatter_(2, take, out)  # back to the columns they came from
    sdt = _score_dtype(q)
    k = k / math.sqrt(D)
    c = chunk_length
    if T <= c:
        scores = (q @ k.transpose(-1, -2)).to(sdt)
        allowed = real[:, None, None, :]
        if causal:
            idx = torch.arange(T, device=q.device)
            allowed = allowed & (idx[None, :] <= idx[:, None])
        scores = torch.where(allowed, scores, torch.tensor(_FORBIDDEN, dtype=sdt, device=q.device))
        probs = seeded_dropout(_softmax(scores), dropout_p, generator)
        return probs.to(v.dtype) @ v

    pad = (-T) % c
    Tp, N = T + pad, (T + pad) // c
    q, k, v = (_pad_time(x, pad, 2).view(B, H, N, c, D) for x in (q, k, v))  # (B, H, N, c, D)
    real = _pad_time(real, pad, 1)
    # The cycle runs up to the chunk of the row's last real token. Counting real tokens instead assumed right
    # padding: with left padding the last chunks fell outside the cycle and lost their previous chunk.
    last = (real * torch.arange(1, Tp + 1, device=q.device)).amax(dim=1)  # (B,) 1 + index of the last real token
    real_chunks = torch.clamp((last + c - 1) // c, min=1)
    neighbours, keep = _chunk_neighbours(real_chunks, 1, N, num_chunks_before, num_chunks_after)
    S = neighbours.shape[-1]
    k_n, v_n = _gather_chunks(k, neighbours), _gather_chunks(v, neighbours)  # (B, H, N, S*c, D)
    pos = torch.arange(Tp, device=q.device).view(1, 1, N, c).expand(B, 1, N, c)
    kpos_n = _gather_chunks(pos, neighbours)  # (B, 1, N, S*c)
    kreal_n = _gather_chunks(real.view(B, 1, N, c), neighbours)
    keep_n = keep[:, None, :, :, None].expand(B, 1, N, S, c).reshape(B, 1, N, 1, S * c)
    allowed = kreal_n[..., None, :] & keep_n
    if causal:
        allowed = allowed & (kpos_n[..., None, :] <= pos[..., :, None])
    scores = (q @ k_n.transpose(-1, -2)).to(sdt) + _chunk_bias(allowed, None, sdt)  # (B, H, N, c, S*c)
    probs = seeded_dropout(torch.softmax(scores, dim=-1), dropout_p, generator, scale=False)
    out = (probs.to(v.dtype) @ v_n).view(B, H, Tp, D)
    if dropout_p:  # the dropout's 1 / (1 - p), on the output (D wide) rather than the probabilities (S*c wide)
        out = out * (1.0 / (1.0 - dropout_p))
    return out[:, :, :T]
