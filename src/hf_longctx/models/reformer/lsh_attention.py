"""LSH attention: the Reformer's hashing attention op (Kitaev et al. 2020, section 2), and what it shares with
local chunked attention (``local_attention.py``).

Pure torch functions, no config and no transformers import. Every tensor with heads uses one layout,
``(B, H, T, D)``: batch, heads, time, head dim. Buckets are ``(B, H, R, T)`` (R = hashing rounds). Masks are
boolean ``(B, T)`` with ``True`` meaning "a real token".

Public ops and their dense twins (the twins, in ``naive.py``, build ``T x T`` matrices and exist for tests):

* :func:`random_rotations`, :func:`lsh_buckets` - angular LSH (Andoni et al. 2015, used in Reformer section 2):
  ``bucket = argmax([xR, -xR])``, factorized bucket counts combined mixed-radix.
* :func:`lsh_attention` / :func:`naive_lsh_attention` - shared-QK attention inside sorted buckets.
* :func:`local_chunked_attention` / :func:`naive_local_attention` - attention inside fixed position chunks.
* :func:`auto_num_buckets` - transformers' rule for ``num_buckets=None``.

The chunk neighbourhood rule, shared by both ops. Tokens (per round, for LSH: sorted by (bucket, position), with
padding in a bucket of its own that sorts last) are cut into chunks of ``chunk_length``; the chunks that hold at
least one real token form a cycle (round 0's chunks, then round 1's, ...). A query attends to the keys of its own
chunk and of the ``num_chunks_before`` / ``num_chunks_after`` chunks around it on that cycle, each distinct chunk
once. Without padding this is exactly transformers' circular ``_look_adjacent`` over the rounds x chunks axis
(``EfficientAttentionMixin._look_adjacent``); with padding, transformers' first chunk of a round looks back
into padding while ours looks back to the last chunk that holds real tokens, which is what makes a row's output
independent of the padding added to it. transformers also attends twice to a chunk that the circular walk reaches
twice (a cycle shorter than the neighbourhood, e.g. 1 hash, 2 chunks, one chunk before and one after); we do not.
A sequence no longer than one chunk gets plain attention over all its tokens (transformers' rule, which also
skips hashing then).

Memory is ``O(T * R * chunk_length * (1 + before + after))``, never ``T x T``.
"""

from __future__ import annotations

import math

import torch

from .longctx_fused_cpu import FLASH_CPU, FLASH_CPU_BWD, flash_cpu_available
from .longctx_hashing import M32 as _M32
from .longctx_hashing import fmix32 as _fmix32


# Scores of forbidden keys (causal, padding, not in the neighbourhood) and of a token's own key, as transformers
# (``LSHSelfAttention``'s mask values). A shared-QK query is always most similar to itself, so Reformer forbids the self
# key (section 2, "Causal masking for shared-QK attention") except when nothing else is visible: -1e5 loses to
# every real score (|q . k_hat| <= |q| stays far below 1e5) and, through the round weights, makes a round in which
# a query saw only itself count for nothing when another round saw real keys, yet it is far above -1e9, so a query
# with no other key (the first token of a causal sequence) attends to itself instead of to forbidden keys.
_FORBIDDEN = -1e9
_SELF = -1e5
_KEY_NORM_EPS = 1e-6  # transformers' _len_norm epsilon (`LSHSelfAttention._len_norm`)


def _score_dtype(x: torch.Tensor) -> torch.dtype:
    # Scores and softmax in at least float32: bf16 log-sum-exps of -1e9 / -1e5 would lose the round weights.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    # exp(s - logsumexp(s)), as transformers writes its softmax (``LSHSelfAttention._attend``): the same rounding.
    return torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))


class _SoftmaxWithLogSumExp(torch.autograd.Function):
    """``(softmax(s), logsumexp(s))`` over the last dim in one fused softmax (no second exp pass).

    The log-sum-exp comes from the row maximum: ``lse = max(s) - log(max(p))`` (``max(p) >= 1/n``, so exact to
    rounding). The backward is one fused softmax backward plus ``p * d_lse`` (``d lse / d s = p``).
    """

    @staticmethod
    def forward(ctx, scores):
        probs = torch.softmax(scores, dim=-1)
        lse = scores.amax(dim=-1) - torch.log(probs.amax(dim=-1))
        ctx.save_for_backward(probs)
        ctx.set_materialize_grads(False)
        return probs, lse

    @staticmethod
    def backward(ctx, grad_probs, grad_lse):
        (probs,) = ctx.saved_tensors
        grad = None
        if grad_probs is not None:
            grad = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        if grad_lse is not None:
            extra = probs * grad_lse[..., None]
            grad = extra if grad is None else grad + extra
        return grad


def _scores_with_bias(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``bias + q @ k^T`` over the last two dims (one fused GEMM where the dtypes allow; scores in >= float32)."""
    if q.dtype == bias.dtype:
        *batch, n, d = q.shape
        m = k.shape[-2]
        out = torch.baddbmm(bias.expand(*batch, n, m).reshape(-1, n, m), q.reshape(-1, n, d),
                            k.reshape(-1, m, d).transpose(1, 2))
        return out.view(*batch, n, m)
    return (q @ k.transpose(-1, -2)).to(bias.dtype) + bias


# PyTorch's fused CPU attention kernel (longctx_fused_cpu.py; the Longformer's op uses it too). Over the sorted chunks
# it computes scores, softmax and the value product in one pass and recomputes the probabilities in the backward: 1.8x
# faster forward + backward than the separate GEMMs and softmax at 16k tokens (64-query chunks, 128 keys), nothing of
# size chunk x keys saved. It has no dropout and returns no usable gradient path for the log-sum-exp, so it serves one
# hashing round without attention dropout (the common LSH setting: transformers' default LSH dropout is 0).
def _flash_usable(q: torch.Tensor, rounds: int, dropout_p: float, return_logsumexp: bool) -> bool:
    return (flash_cpu_available(q) and q.dtype in (torch.float32, torch.float64) and rounds == 1
            and dropout_p == 0.0
            and not return_logsumexp)


class _ChunkFlashAttention(torch.autograd.Function):
    """``softmax(bias + q k^T) v`` per chunk through the fused CPU kernel: ``q`` ``(..., c, D)``, ``k``, ``v``
    ``(..., m, D)``, ``bias`` ``(..., c, m)`` (a constant mask), every leading dim flattened into the kernel's batch.
    Saves the inputs, the output and the row log-sum-exp; the backward kernel recomputes the probabilities."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        *batch, c, d = q.shape
        m = k.shape[-2]
        q4, k4, v4 = q.reshape(-1, 1, c, d), k.reshape(-1, 1, m, d), v.reshape(-1, 1, m, d)
        mask = bias.expand(*batch, c, m).reshape(-1, 1, c, m)
        out, lse = FLASH_CPU(q4, k4, v4, attn_mask=mask, scale=1.0)
        ctx.save_for_backward(q4, k4, v4, mask, out, lse)
        ctx.shapes = (q.shape, k.shape, v.shape)
        return out.view(*batch, c, d)

    @staticmethod
    def backward(ctx, grad_out):
        q4, k4, v4, mask, out, lse = ctx.saved_tensors
        g = grad_out.reshape(out.shape).contiguous()
        dq, dk, dv = FLASH_CPU_BWD(g, q4, k4, v4, out, lse, 0.0, False, attn_mask=mask, scale=1.0)
        q_shape, k_shape, v_shape = ctx.shapes
        return dq.view(q_shape), dk.view(k_shape), dv.view(v_shape), None


def _chunk_bias(allowed: torch.Tensor, is_self: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive scores: 0 where allowed, -1e9 where not, -1e5 on the self key (added to the self score, which
    changes nothing: a self score only matters when nothing else is visible, and then its weight is 1)."""
    shape = allowed.shape if is_self is None else torch.broadcast_shapes(allowed.shape, is_self.shape)
    bias = torch.zeros(shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, _FORBIDDEN)
    return bias if is_self is None else bias.masked_fill_(is_self, _SELF)


def _dropout_bits(shape, p: float, generator: torch.Generator | None, device) -> tuple[torch.Tensor, int]:
    """16-bit uniforms of ``shape`` drawn from ``generator`` and the threshold under which an element is dropped.

    Each 64-bit draw gives four 16-bit uniforms (a quarter of the generator calls of ``torch.rand``, and no modulo:
    the full 64-bit range is the generator's raw output); ``p`` becomes a multiple of 1/65536, the threshold
    truncated toward zero: ``p`` rounds up below 0.5 (0.1 drops 6554/65536 = 0.1000061) and down above.
    """
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    if torch.compiler.is_compiling():  # no dtype view in a compiled graph: the same four 16-bit fields, by shifts
        fields = (draws[:, None] >> torch.tensor([0, 16, 32, 48], device=device)) & 0xFFFF  # little-endian order
        bits = (fields - (fields >= 32768).long() * 65536).to(torch.int16).flatten()[:n].view(shape)
    else:
        bits = draws.view(torch.int16)[:n].view(shape)
    return bits, int(-32768 + p * 65536)


def _keep_mask(bits: torch.Tensor, threshold: int) -> torch.Tensor:
    # the comparison written into uint8 (1 kept, 0 dropped), then widened to a 0/1 float factor and multiplied: on
    # CPU this costs well under half of a bool compare + where() (neither of which is vectorised), forward and
    # backward
    return torch.ge(bits, threshold, out=torch.empty(bits.shape, dtype=torch.uint8, device=bits.device))


class _Dropout(torch.autograd.Function):
    """``x * keep * scale`` with ``keep`` from 16-bit uniforms; saves the uint8 keep mask (1 byte an element, as the
    bool mask where() saved) and widens it again in backward."""

    @staticmethod
    def forward(ctx, x, bits, threshold, scale):
        keep = _keep_mask(bits, threshold)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = keep.to(x.dtype).mul_(x)
        return out if scale == 1.0 else out.mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        g = keep.to(grad.dtype).mul_(grad)
        return (g if ctx.scale == 1.0 else g.mul_(ctx.scale)), None, None, None


class CounterStream:
    """A dropout seed as a tensor, standing in for a ``torch.Generator`` inside a compiled graph (which cannot hold
    a generator): draw ``i`` of a stream hashes (seed, i) with every row index and every column index (the last
    dim) of its shape, and an element is the low 32 bits of its row key times its column key, whose top bits decide
    - the Longformer's counter-based dropout (``counter_dropout.py``): O(rows + columns) hashes and one product per
    element, in int64 tensor ops that Inductor fuses. The same seed replays the same draws, as a generator from the
    same seed does (the reversible backward recomputes with it). Other masks than the eager generator's: the same
    distribution, not the same bits."""

    def __init__(self, seed: torch.Tensor):
        self.seed = (seed ^ (seed >> 32)) & _M32
        self.draws = 0

    def bits(self, shape, device) -> torch.Tensor:
        """32-bit uniforms (their top bits) of ``shape``, as int64."""
        base = _fmix32((self.seed.to(device) + self.draws * 0x9E3779B1) & _M32)
        self.draws += 1
        columns = shape[-1] if len(shape) else 1
        rows = math.prod(shape) // max(columns, 1)
        row_keys = _fmix32((base + torch.arange(rows, device=device) * 0x85EBCA77) & _M32)
        col_keys = _fmix32(((base ^ 0x27D4EB2F) + torch.arange(columns, device=device) * 0xC2B2AE3D) & _M32) | 1
        return ((row_keys[:, None] * col_keys[None, :]) & _M32).view(shape)

    def rand(self, shape, device) -> torch.Tensor:
        """Uniforms in [0, 1) of ``shape``, float32."""
        return self.bits(shape, device).to(torch.float32) * 2.0**-32

    def keep(self, shape, p: float, device) -> torch.Tensor:
        """A bool mask of ``shape``, True with probability ``1 - p``."""
        return self.bits(shape, device) >= round(p * 2**32)


def seeded_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None, scale: bool = True) -> torch.Tensor:
    """Dropout drawing from ``generator`` (the model's private one), so the global RNG is never advanced; in a
    compiled graph ``generator`` is a :class:`CounterStream`.

    ``scale=False`` leaves out the ``1 / (1 - p)`` factor, for a caller that folds it into a smaller tensor (a
    weight, an attention output): one pass over ``x`` instead of two."""
    if p == 0.0:
        return x
    if isinstance(generator, CounterStream):
        keep = generator.keep(x.shape, p, x.device).to(x.dtype)
        return x * keep * (1.0 / (1.0 - p)) if scale else x * keep
    bits, threshold = _dropout_bits(x.shape, p, generator, x.device)
    return _Dropout.apply(x, bits, threshold, 1.0 / (1.0 - p) if scale else 1.0)


def unit_keys(qk: torch.Tensor) -> torch.Tensor:
    """Shared-QK keys: each vector scaled to unit RMS, then by ``1/sqrt(D)`` (so ``|k| = 1``). ``(B, H, T, D)``.

    transformers' ``LSHSelfAttention._len_and_dim_norm``; queries stay unscaled.
    """
    variance = qk.pow(2).mean(dim=-1, keepdim=True)
    return qk * torch.rsqrt(variance + _KEY_NORM_EPS) / math.sqrt(qk.shape[-1])


# --------------------------------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------------------------------


def _bucket_factors(num_buckets: int | list[int] | tuple[int, ...]) -> list[int]:
    factors = [num_buckets] if isinstance(num_buckets, int) else list(num_buckets)
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, int) or f < 2 or f % 2:
            raise ValueError(f"every bucket count must be an even integer >= 2, got num_buckets={num_buckets!r}")
    return factors


def random_rotations(
    num_heads: int,
    head_dim: int,
    num_hashes: int,
    num_buckets: int | list[int],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random rotations ``(H, D, R, sum(factors) / 2)`` drawn from ``generator``.

    Drawn on the generator's device (CPU by default) and moved to ``device``. With a CPU generator seeded with
    ``hash_seed`` these are the numbers transformers draws with ``torch.manual_seed(hash_seed); torch.randn(...)``
    (``LSHSelfAttention._hash_vectors``), in the same dtype.
    """
    width = sum(_bucket_factors(num_buckets)) // 2
    gen_device = generator.device if generator is not None else "cpu"
    rot = torch.randn((num_heads, head_dim, num_hashes, width), generator=generator, dtype=dtype, device=gen_device)
    return rot.to(device) if device is not None else rot


def lsh_buckets(vectors: torch.Tensor, rotations: torch.Tensor, num_buckets: int | list[int]) -> torch.Tensor:
    """Angular LSH of ``vectors`` ``(B, H, T, D)`` with ``rotations`` ``(H, D, R, sum(factors)/2)``.

    Returns buckets ``(B, H, R, T)`` in ``[0, prod(factors))``. Each factor ``f`` uses its own ``f/2`` rotation
    columns: ``argmax([xR, -xR])``; factors combine mixed-radix, the first the least significant (transformers'
    ``LSHSelfAttention._hash_vectors``). No gradient flows through hashing.
    """
    factors = _bucket_factors(num_buckets)
    if rotations.shape[-1] != sum(factors) // 2:
        raise ValueError(f"rotations have {rotations.shape[-1]} columns, num_buckets={num_buckets} needs {sum(factors) // 2}")
    B, H, T, _ = vectors.shape
    R, K = rotations.shape[2], rotations.shape[3]
    rotations = rotations.to(vectors.dtype)
    # Over pieces of the sequence: the rotated vectors are (B, H, R, T, K) with K ~ T / chunk, i.e. quadratic in T
    # at transformers' automatic bucket counts (800 MB at 32k tokens); a piece holds at most 4M of them.
    step = max(1, (1 << 22) // max(1, B * H * R * K))
    pieces = []
    for part in vectors.detach().split(step, dim=2):
        rotated = torch.einsum("bhtd,hdrk->bhrtk", part, rotations)  # (B, H, R, t, K)
        buckets, start, radix = None, 0, 1
        for f in factors:
            x = rotated[..., start : start + f // 2]
            # argmax([x, -x]) without building it: the larger of max(x) and -min(x); ties go to the first half,
            # and max/min return the first index of a tie, as argmax does, so the buckets are the same.
            top, top_i = x.max(dim=-1)
            low, low_i = x.min(dim=-1)
            b = torch.where(top >= -low, top_i, low_i + f // 2)
            buckets = b if buckets is None else buckets + radix * b
            start, radix = start + f // 2, radix * f
        pieces.append(buckets)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def auto_num_buckets(seq_len: int, chunk_length: int, max_positions: int) -> int | list[int]:
    """transformers' ``num_buckets=None`` rule (``LSHSelfAttention._set_num_buckets``): about ``2 * seq_len / chunk``, a power
    of two, factorized into two when it exceeds ``2 * max(sqrt(max_positions / chunk), chunk)``. Never below 2."""
    power = max(1, (2 * (seq_len // chunk_length)).bit_length() - 1)
    limit = 2 * max(int((max_positions // chunk_length) ** 0.5), chunk_length)
    if 2**power > limit:
        return [2 ** (power // 2), 2 ** (power - power // 2)]
    return 2**power


# --------------------------------------------------------------------------------------------------------------------
# Chunk neighbourhoods
# --------------------------------------------------------------------------------------------------------------------


def _chunk_neighbours(real_chunks: torch.Tensor, rounds: int, per_round: int, before: int, after: int):
    """Neighbour chunk ids ``(B, C, S)`` and which are kept ``(B, C, S)``, ``C = rounds * per_round``.

    ``real_chunks`` ``(B,)``: chunks per round holding a real token (>= 1); those of all rounds form the cycle.
    Slots that repeat a chunk already in the neighbourhood are dropped; chunks of pure padding see only themselves.
    """
    C = rounds * per_round
    m = real_chunks[:, None]  # (B, 1)
    ids = torch.arange(C, device=real_chunks.device)[None, :]  # (1, C)
    r = ids // per_round
    j = ids - r * per_round  # ids % per_round; a remainder by a size has no ONNX translation
    in_cycle = j < m
    cycle_len = rounds * m
    position = r * m + j  # (B, C) place on the cycle
    chunks, keep, seen = [], [], []
    for o in range(-before, after + 1):
        p = torch.remainder(position + o, cycle_len)
        repeated = torch.zeros_like(in_cycle)
        for earlier in seen:
            repeated |= earlier == p
        seen.append(p)
        chunk = (p // m) * per_round + p % m
        chunks.append(torch.where(in_cycle, chunk, ids.expand_as(chunk)))
        keep.append(~repeated if o == 0 else in_cycle & ~repeated)  # outside the cycle: the own chunk only
    return torch.stack(chunks, dim=-1), torch.stack(keep, dim=-1)


def _gather_chunks(x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, H, C, c, *rest)`` -> ``(B, H, C, S*c, *rest)``: each chunk's neighbour chunks side by side.

    One ``index_select`` of whole chunks (contiguous rows), several times faster than an element-wise gather."""
    B, H, C, c = x.shape[:4]
    S = neighbours.shape[-1]
    rest = x.shape[4:]
    base = (torch.arange(B, device=x.device)[:, None] * H + torch.arange(H, device=x.device)[None, :]) * C
    index = (base[:, :, None, None] + neighbours[:, None]).reshape(-1)  # (B*H*C*S,)
    out = x.reshape(B * H * C, -1).index_select(0, index)
    return out.view(B, H, C, S * c, *rest)


def _take_rows(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, H, T, D)``, ``positions`` ``(B, H, L)`` -> ``(B, H, L, D)``: ``x[b, h, positions[b, h, l]]``.

    An ``index_select`` of whole rows; a head-split projection (memory layout ``(B, T, H, D)``) is read in
    place, without the copy a contiguous ``(B, H, T, D)`` would need."""
    B, H, T, D = x.shape
    L = positions.shape[-1]
    b = torch.arange(B, device=x.device)[:, None, None]
    h = torch.arange(H, device=x.device)[None, :, None]
    if x.transpose(1, 2).is_contiguous():
        rows, index = x.transpose(1, 2).reshape(B * T * H, D), (b * T + positions) * H + h
    else:
        rows, index = x.reshape(B * H * T, D), (b * H + h) * T + positions
    return rows.index_select(0, index.reshape(-1)).view(B, H, L, D)


def _pad_time(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Append ``pad`` zeros (``False`` for masks) along ``dim``."""
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _real_mask(attention_mask: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    if tuple(attention_mask.shape) != (B, T):
        raise ValueError(f"attention_mask must have shape {(B, T)}, got {tuple(attention_mask.shape)}")
    return attention_mask.bool()


def _check_chunking(chunk_length: int, before: int, after: int) -> None:
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
        raise ValueError(f"chunk_length must be a positive integer, got {chunk_length!r}")
    if before < 0 or after < 0:
        raise ValueError(f"num_chunks_before/after must be >= 0, got {before}, {after}")


# --------------------------------------------------------------------------------------------------------------------
# LSH attention
# --------------------------------------------------------------------------------------------------------------------


def lsh_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    buckets: torch.Tensor,
    chunk_length: int,
    num_chunks_before: int = 1,
    num_chunks_after: int = 0,
    causal: bool = False,
    attention_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    return_logsumexp: bool = False,
):
    """Shared-QK LSH attention (Reformer section 2) over fixed ``buckets``.

    Args:
        qk: ``(B, H, T, D)`` shared query/key vectors; keys are :func:`unit_keys` of them, queries unscaled.
        v: ``(B, H, T, D)``.
        buckets: ``(B, H, R, T)`` integer buckets of every round (:func:`lsh_buckets`), any non-negative values.
        chunk_length, num_chunks_before, num_chunks_after: the neighbourhood rule of the module docstring.
        causal: key position <= query position.
        attention_mask: ``(B, T)``, ``True``/1 for real tokens. Padding goes to a bucket after every real one.
        dropout_p, generator: dropout on the attention probabilities, drawn from ``generator``.
        return_logsumexp: also return the per-round log-sum-exp ``(B, H, R, T)`` (tests, generation).

    Per round, a query attends to the real keys of its neighbourhood except itself; its own key scores ``-1e5``
    (used only when nothing else is visible). Rounds are combined with weights ``softmax_r(logsumexp_r)`` (a key
    seen in several rounds counts in each, as in transformers). T not a multiple of ``chunk_length`` is padded
    internally. Returns ``(B, H, T, D)`` in ``v``'s dtype; rows of padding queries are finite but meaningless.

    Long on purpose: the whole op in order (hash, sort, chunk, attend, unsort, combine rounds); the dense twin in
    ``naive.py`` states the same thing in a few lines.
    """
    _check_chunking(chunk_length, num_chunks_before, num_chunks_after)
    B, H, T, D = qk.shape
    if buckets.dim() != 4 or buckets.shape[:2] != (B, H) or buckets.shape[3] != T:
        raise ValueError(f"buckets must have shape (B, H, R, T) = ({B}, {H}, R, {T}), got {tuple(buckets.shape)}")
    R = buckets.shape[2]
    real = _real_mask(attention_mask, B, T, qk.device)
    sdt = _score_dtype(qk)
    keys = unit_keys(qk)
    if T <= chunk_length:
        out, lse = _dense_shared_qk(qk, keys, v, real, causal, dropout_p, generator)
        return (out, lse[:, :, None].expand(B, H, R, T)) if return_logsumexp else out

    c = chunk_length
    pad = (-T) % c
    Tp, N = T + pad, (T + pad) // c
    qk, keys, v = (_pad_time(x, pad, 2) for x in (qk, keys, v))
    real = _pad_time(real, pad, 1)
    buckets = _pad_time(buckets, pad, 3)

    order, pos_sorted = _sort_rounds(buckets, real)
    C = R * N

    def sort(x):  # (B, H, Tp, D) -> (B, H, C, c, D) in sorted order
        return _take_rows(x, pos_sorted).view(B, H, C, c, D)

    q_s, k_s, v_s = sort(qk), sort(keys), sort(v)
    pos_c = pos_sorted.view(B, H, C, c)
    real_c = real.gather(1, pos_sorted.view(B, H * R * Tp)).view(B, H, C, c)

    real_chunks = torch.clamp((real.sum(dim=1) + c - 1) // c, min=1)  # (B,) chunks per round with a real token
    neighbours, keep = _chunk_neighbours(real_chunks, R, N, num_chunks_before, num_chunks_after)
    S = neighbours.shape[-1]
    k_n, v_n = _gather_chunks(k_s, neighbours), _gather_chunks(v_s, neighbours)  # (B, H, C, S*c, D)
    kpos_n = _gather_chunks(pos_c, neighbours)  # (B, H, C, S*c)
    if not torch.compiler.is_compiling() and bool(real.all()) and bool(keep.all()):
        # No padding and no repeated neighbour chunk (the usual case): the bias depends on positions only, built
        # in five passes over the (B, H, C, c, S*c) scores instead of nine. Same values as the general path.
        kp, qp = kpos_n[..., None, :], pos_c[..., :, None]
        bias = torch.zeros(B, H, C, c, S * c, dtype=sdt, device=qk.device)
        if causal:
            bias.masked_fill_(kp > qp, _FORBIDDEN)
        bias.masked_fill_(kp == qp, _SELF)
    else:
        kreal_n = _gather_chunks(real_c, neighbours)
        keep_n = keep[:, None, :, :, None].expand(B, 1, C, S, c).reshape(B, 1, C, 1, S * c)
        is_self = (pos_c[..., :, None] == kpos_n[..., None, :]) & keep_n  # (B, H, C, c, S*c)
        allowed = kreal_n[..., None, :] & keep_n
        if causal:
            allowed = allowed & (kpos_n[..., None, :] <= pos_c[..., :, None])
        bias = _chunk_bias(allowed, is_self, sdt)
    if _flash_usable(q_s, R, dropout_p, return_logsumexp):  # float32 / float64: the bias has q's dtype
        out, lse = _ChunkFlashAttention.apply(q_s, k_n, v_n, bias), None  # (B, H, C, c, D); one round: weight 1
    else:
        scores = _scores_with_bias(q_s, k_n, bias)  # (B, H, C, c, S*c)
        if R > 1 or return_logsumexp:
            probs, lse = _SoftmaxWithLogSumExp.apply(scores)  # lse: (B, H, C, c)
        else:  # one round: its weight is 1, no log-sum-exp needed
            probs, lse = torch.softmax(scores, dim=-1), None
        probs = seeded_dropout(probs, dropout_p, generator, scale=False)
        out = probs.to(v.dtype) @ v_n  # (B, H, C, c, D)
        if dropout_p:  # the dropout's 1 / (1 - p), on the output (D wide) rather than the probabilities (S*c wide)
            out = out * (1.0 / (1.0 - dropout_p))

    combined, lse = _unsort_and_combine(out, lse, order, R, T)
    return (combined, lse) if return_logsumexp else combined


def _sort_rounds(buckets: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each round's tokens sorted by (bucket, position), padding last: one argsort of a unique integer key per
    token. ``buckets`` ``(B, H, R, Tp)``, ``real`` ``(B, Tp)``; returns ``order`` (sorted slot -> round * Tp +
    position) and the position of each sorted slot, both ``(B, H, R*Tp)``."""
    R, Tp = buckets.shape[2], buckets.shape[3]
    # A 0-d tensor, not a Python int: a compiled or exported graph cannot read the largest bucket's value.
    bucket_bound = buckets.max() + 2
    b = torch.where(real[:, None, None, :], buckets, bucket_bound - 1)
    rounds = torch.arange(R, device=buckets.device)[None, None, :, None]
    positions = torch.arange(Tp, device=buckets.device)
    order_key = ((rounds * bucket_bound + b) * Tp + positions).flatten(2)  # (B, H, R*Tp)
    order = order_key.argsort(dim=-1)
    return order, order - (order // Tp) * Tp  # order % Tp, in ops an ONNX export translates


def _unsort_and_combine(out: torch.Tensor, lse: torch.Tensor | None, order: torch.Tensor, R: int, T: int):
    """Sorted per-slot outputs (any shape holding ``B, H, R*Tp, D`` elements) and log-sum-exps back to (round,
    position) order, the rounds combined: ``(B, H, T, D)`` and ``lse`` ``(B, H, R, T)`` (None stays None)."""
    B, H, slots_n = order.shape
    Tp, D = slots_n // R, out.shape[-1]
    slots = torch.arange(slots_n, device=order.device).expand_as(order)
    undo = torch.empty_like(order).scatter_(-1, order, slots)  # the inverse permutation of `order`
    out = _take_rows(out.reshape(B, H, slots_n, D), undo).view(B, H, R, Tp, D)
    if lse is not None:
        lse = lse.reshape(B, H, slots_n).gather(2, undo).view(B, H, R, Tp)
    if R == 1:
        combined = out[:, :, 0]
    else:  # Reformer section 2, multi-round LSH: weight each round by its share of the total probability mass
        # exp(lse - logsumexp) rather than softmax: the same rounding as transformers (`LSHSelfAttention._attend`)
        weights = torch.exp(lse - torch.logsumexp(lse, dim=2, keepdim=True)).to(out.dtype)  # (B, H, R, Tp)
        combined = (out * weights[..., None]).sum(dim=2)
    return combined[:, :, :T], (None if lse is None else lse[..., :T])


def _dense_shared_qk(qk, keys, v, real, causal, dropout_p, generator):
    """Plain shared-QK attention over all T tokens (sequences no longer than one chunk). ``(B, H, T, D)``."""
    T = qk.shape[2]
    sdt = _score_dtype(qk)
    scores = (qk @ keys.transpose(-1, -2)).to(sdt)  # (B, H, T, T)
    idx = torch.arange(T, device=qk.device)
    is_self = idx[:, None] == idx[None, :]
    allowed = real[:, None, None, :] & ~is_self
    if causal:
        allowed = allowed & (idx[None, :] <= idx[:, None])
    scores = torch.where(allowed, scores, torch.tensor(_FORBIDDEN, dtype=sdt, device=qk.device))
    scores = torch.where(is_self, torch.tensor(_SELF, dtype=sdt, device=qk.device), scores)
    probs, lse = _SoftmaxWithLogSumExp.apply(scores)
    probs = seeded_dropout(probs, dropout_p, generator)
    return probs.to(v.dtype) @ v, lse


def bucket_index_insert(
    slots: torch.Tensor, counts: torch.Tensor, buckets: torch.Tensor, positions: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append tokens to a bucket index (the LSH generation cache's structure).

    Args:
        slots: ``(B, H, R, NB + 1, cap)`` long, the positions held by each bucket of each round in position order
            (the last bucket holds padding, which no query reads); entries at or past ``counts`` are unused.
        counts: ``(B, H, R, NB + 1)`` long, how many positions each bucket holds; updated in place.
        buckets: ``(B, H, R, Tn)`` buckets of the new tokens; ``positions`` ``(Tn,)`` their positions, after every
            held one; ``real`` ``(B, Tn)``.

    Returns ``(slots, ends)``: ``slots`` maybe regrown (a bucket that would overflow doubles ``cap`` for all, one
    copy: amortised O(1) per token), and ``ends`` ``(B, H, R, Tn)``, how many real tokens of each new token's
    bucket come before it (for a padding token: those held before this call). An insert costs ``O(Tn log Tn)``,
    independent of how many tokens the index holds.
    """
    B, H, R, NB1, cap = slots.shape
    Tn = buckets.shape[-1]
    into = torch.where(real[:, None, None, :], buckets, torch.full_like(buckets, NB1 - 1))
    if Tn == 1:
        rank = torch.zeros_like(into)
    else:  # each new token's rank among the new tokens of its bucket (a stable sort, then place - group start)
        sorted_b, order = into.sort(dim=-1, stable=True)
        idx = torch.arange(Tn, device=into.device).expand_as(sorted_b)
        starts = torch.ones_like(sorted_b, dtype=torch.bool)
        starts[..., 1:] = sorted_b[..., 1:] != sorted_b[..., :-1]
        first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=-1).values
        rank = torch.empty_like(into).scatter_(-1, order, idx - first)
    slot = counts.gather(-1, into) + rank  # (B, H, R, Tn)
    ends = torch.where(real[:, None, None, :], slot, counts.gather(-1, buckets))
    need = int(slot.max()) + 1 if slot.numel() else 0
    if need > cap:
        new_cap = max(2 * cap, 1 << (need - 1).bit_length())
        grown = slots.new_full((B, H, R, NB1, new_cap), -1)
        grown[..., :cap] = slots
        slots, cap = grown, new_cap
    slots.view(B, H, R, NB1 * cap).scatter_(-1, into * cap + slot, positions.expand(B, H, R, Tn))
    counts.scatter_add_(-1, into, torch.ones_like(into))
    return slots, ends


def lsh_decode_attention(
    q: torch.Tensor,
    q_pos: torch.Tensor,
    q_buckets: torch.Tensor,
    q_ends: torch.Tensor,
    keys: torch.Tensor,
    v: torch.Tensor,
    k_real: torch.Tensor,
    slots: torch.Tensor,
    chunk_length: int,
) -> torch.Tensor:
    """Causal LSH attention of new tokens over a generation cache (the cached-decoding rule).

    Args:
        q: ``(B, H, Tq, D)`` shared-QK vectors of the new tokens (unscaled); ``q_pos`` ``(Tq,)`` their positions,
            consecutive; ``q_buckets`` ``(B, H, R, Tq)`` their buckets; ``q_ends`` ``(B, H, R, Tq)`` how many real
            tokens of their bucket come before them (:func:`bucket_index_insert` returns it).
        keys, v: ``(B, H, S, D)`` :func:`unit_keys` and values by position (row ``s`` is position ``s``; the new
            tokens included, rows past them unused); ``k_real`` ``(B, S)``.
        slots: the bucket index of every cached and new token (:func:`bucket_index_insert`).

    The rule: a new token at position ``t`` attends to every real earlier key of its own position chunk and the
    chunk before it (``position >= (t // chunk_length - 1) * chunk_length``), plus, in each round, the
    ``chunk_length`` latest real earlier keys that share its bucket; its own key scores ``-1e5`` as in
    :func:`lsh_attention`; one softmax over that set (each key once). The bucket part is the reach of the uncached
    op: there a causal query sees its sorted chunk and the one before, i.e. at most ``2 * chunk_length - 1``
    earlier keys of its bucket, the latest ones. Re-sorting the whole prefix at every step would change earlier
    neighbourhoods (transformers' cached and uncached tokens differ for the same reason), so this is not the
    uncached chunked attention; it keeps what LSH is for (similar keys, wherever they are).

    Cost per new token: ``R * chunk_length`` index entries and a slice of at most two chunks, whatever the length
    of the cache and however full its buckets. Returns ``(B, H, Tq, D)``. :func:`naive_lsh_decode_attention` is
    its twin.
    """
    B, H, Tq, D = q.shape
    R, NB1, cap = slots.shape[2:]
    c = chunk_length
    sdt = _score_dtype(q)
    forbidden = torch.tensor(_FORBIDDEN, dtype=sdt, device=q.device)
    t0, t1 = int(q_pos[0]), int(q_pos[-1])
    near_lo = max(0, (t0 // c - 1) * c)
    near_start = (q_pos // c - 1) * c  # (Tq,) each query's first near position

    # Near part: one contiguous slice of positions [near_lo, t1], masked per query (causal, own chunks, real).
    k_near, v_near = keys[:, :, near_lo : t1 + 1], v[:, :, near_lo : t1 + 1]
    pos_near = torch.arange(near_lo, t1 + 1, device=q.device)
    ok_near = (pos_near[None, :] >= near_start[:, None]) & (pos_near[None, :] < q_pos[:, None])  # (Tq, L)
    ok_near = ok_near[None, None] & k_real[:, None, None, near_lo : t1 + 1]
    is_self = pos_near[None, :] == q_pos[:, None]
    s_near = (q @ k_near.transpose(-1, -2)).to(sdt)  # (B, H, Tq, L)
    s_near = torch.where(ok_near, s_near, forbidden)
    s_near = torch.where(is_self, torch.tensor(_SELF, dtype=sdt, device=q.device), s_near)

    # Bucket part: per round the last c entries before the query in its bucket's list, earlier than its near
    # chunks (those are in the slice already), each key once.
    take = q_ends[..., None] - c + torch.arange(c, device=q.device)  # (B, H, R, Tq, c) places in the list
    flat_idx = q_buckets[..., None] * cap + take.clamp(min=0)
    far_pos = slots.view(B, H, R, NB1 * cap).gather(3, flat_idx.view(B, H, R, Tq * c)).view(B, H, R, Tq, c)
    far = (take >= 0) & (far_pos < near_start[:, None])
    far_pos = torch.where(far, far_pos, torch.full_like(far_pos, -1)).permute(0, 1, 3, 2, 4).reshape(B, H, Tq, R * c)
    if R > 1:  # a key sharing buckets in several rounds counts once: sort, drop repeats
        far_pos = far_pos.sort(dim=-1).values
        repeat = torch.zeros_like(far_pos, dtype=torch.bool)
        repeat[..., 1:] = far_pos[..., 1:] == far_pos[..., :-1]
        far_pos = far_pos.masked_fill(repeat, -1)
    ok_far = far_pos >= 0
    index = far_pos.clamp(min=0).reshape(B, H, Tq * R * c, 1).expand(-1, -1, -1, D)
    k_far = keys.gather(2, index).view(B, H, Tq, R * c, D)
    v_far = v.gather(2, index).view(B, H, Tq, R * c, D)
    s_far = (q[..., None, :] @ k_far.transpose(-1, -2)).squeeze(-2).to(sdt)  # (B, H, Tq, R*c)
    s_far = torch.where(ok_far, s_far, forbidden)

    probs = torch.softmax(torch.cat([s_near, s_far], dim=-1), dim=-1).to(v.dtype)
    L = s_near.shape[-1]
    out = probs[..., :L] @ v_near
    return out + (probs[..., None, L:] @ v_far).squeeze(-2)


__all__ = [
    "auto_num_buckets",
    "bucket_index_insert",
    "lsh_attention",
    "lsh_buckets",
    "lsh_decode_attention",
    "random_rotations",
    "seeded_dropout",
    "unit_keys",
]
