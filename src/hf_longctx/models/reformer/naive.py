"""Dense twins of the Reformer attention ops, for the tests: the same buckets, chunks and masks, written as one
full ``T x T`` score matrix, so forward and every gradient compare exactly.
"""

from __future__ import annotations

import math

import torch

from .lsh_attention import _SELF, _real_mask, unit_keys


def naive_lsh_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    buckets: torch.Tensor,
    chunk_length: int,
    num_chunks_before: int = 1,
    num_chunks_after: int = 0,
    causal: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense twin of :func:`lsh_attention`, written plainly with ``T x T`` count matrices (tests only).

    For round ``r`` and query ``i``, ``count_r[i, j]`` is how many copies of key ``j`` (one per round) sit in
    chunks of ``i``'s neighbourhood on the cycle of real chunks. The round's attention is
    ``p_r[i, j] ∝ count_r[i, j] * exp(score_ij)`` with ``score = q_i . k_hat_j`` for visible keys (real, causal if
    asked, not ``i``) and ``-1e5`` for ``j = i``; rounds are weighted by ``softmax_r(log sum_j count * exp(score))``.
    Rows of padding queries are zero.
    """
    B, H, T, D = qk.shape
    R = buckets.shape[2]
    real = _real_mask(attention_mask, B, T, qk.device)
    keys = unit_keys(qk)
    dots = qk @ keys.transpose(-1, -2)  # (B, H, T, T)
    i = torch.arange(T)
    visible = real[:, None, None, :] & (i[:, None] != i[None, :])
    if causal:
        visible = visible & (i[None, :] <= i[:, None])
    scores = torch.where(visible, dots, torch.full_like(dots, float("-inf")))
    scores = torch.where((i[:, None] == i[None, :]), torch.full_like(dots, _SELF), scores)

    c = chunk_length
    counts = torch.zeros(B, H, R, T, T, dtype=qk.dtype)
    if T <= c:
        counts[:] = 1.0  # one chunk: plain attention, the same in every round
    else:
        Tp = -(-T // c) * c
        for bi in range(B):
            L = int(real[bi].sum())
            m = max(1, -(-L // c))  # chunks per round with a real token
            cycle = R * m
            for h in range(H):
                place = torch.empty(R, T, dtype=torch.long)  # place of token t of round r on the cycle
                for r in range(R):
                    sort_key = [
                        (int(buckets[bi, h, r, t]) if t < T and bool(real[bi, t]) else float("inf"), t)
                        for t in range(Tp)
                    ]
                    ranked = sorted(range(Tp), key=lambda t: sort_key[t])
                    for rank, t in enumerate(ranked):
                        if t < T:
                            place[r, t] = r * m + rank // c if rank // c < m else -1
                for r in range(R):
                    for q in range(T):
                        if place[r, q] < 0:  # a padding query outside the cycle: itself only (zeroed below)
                            counts[bi, h, r, q, q] = 1.0
                            continue
                        near = {(int(place[r, q]) + o) % cycle for o in range(-num_chunks_before, num_chunks_after + 1)}
                        for r2 in range(R):
                            for k in range(T):
                                if int(place[r2, k]) in near:
                                    counts[bi, h, r, q, k] += 1
    log_weights = torch.log(counts) + scores[:, :, None]  # (B, H, R, T, T): log(count * exp(score))
    lse = torch.logsumexp(log_weights, dim=-1)  # (B, H, R, T)
    probs = torch.exp(log_weights - lse[..., None])
    per_round = probs @ v[:, :, None]  # (B, H, R, T, D)
    out = (per_round * torch.softmax(lse, dim=2)[..., None]).sum(dim=2)
    return out * real[:, None, :, None]


def naive_lsh_decode_attention(q, q_pos, q_buckets, keys, v, k_pos, k_buckets, k_real, chunk_length):
    """Dense twin of :func:`lsh_decode_attention`, one query and one key at a time (tests only; rows of padding
    queries are not defined by the rule)."""
    B, H, Tq, D = q.shape
    R = q_buckets.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                t = int(q_pos[i])
                earlier = [j for j in range(keys.shape[2]) if int(k_pos[j]) < t and bool(k_real[b, j])]
                chosen = {j for j in earlier if int(k_pos[j]) >= (t // chunk_length - 1) * chunk_length}
                for r in range(R):
                    same = [j for j in earlier if int(k_buckets[b, h, r, j]) == int(q_buckets[b, h, r, i])]
                    chosen |= set(sorted(same, key=lambda j: int(k_pos[j]))[-chunk_length:])
                chosen = sorted(chosen)
                scores = [q[b, h, i] @ keys[b, h, j] for j in chosen]
                self_j = [j for j in range(keys.shape[2]) if int(k_pos[j]) == t]
                p = torch.softmax(torch.stack(scores + [q.new_tensor(_SELF)] * len(self_j)), dim=0)
                out[b, h, i] = p @ v[b, h, chosen + self_j]
    return out


def naive_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_length: int,
    num_chunks_before: int = 1,
    num_chunks_after: int = 0,
    causal: bool = False,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense twin of :func:`local_chunked_attention` (tests only): a ``T x T`` mask, written plainly.

    Key ``j`` is visible to query ``i`` when it is real, (causal) not after ``i``, and chunk ``rank(j) // c`` is
    one of the chunks ``rank(i) // c + o`` (``-before <= o <= after``) counted around the cycle of the chunks that
    hold the row's real tokens, ``rank`` being a token's index among the row's real tokens. Rows of padding
    queries are zero.
    """
    B, H, T, D = q.shape
    real = _real_mask(attention_mask, B, T, q.device)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
    c = chunk_length
    i = torch.arange(T)
    visible = torch.zeros(B, T, T, dtype=torch.bool)
    for bi in range(B):
        rank = (real[bi].long().cumsum(0) - 1).tolist()
        m = max(1, -(-int(real[bi].sum()) // c))  # chunks holding the row's real tokens
        for qi in range(T):
            near = {(rank[qi] // c + o) % m for o in range(-num_chunks_before, num_chunks_after + 1)}
            for kj in range(T):
                visible[bi, qi, kj] = T <= c or (rank[kj] // c < m and rank[kj] // c in near)
    visible = visible & real[:, None, :]
    if causal:
        visible = visible & (i[None, :] <= i[:, None])
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    out = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v
    return out * real[:, None, :, None]
