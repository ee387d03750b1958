"""Sliding-window attention with global tokens: the Longformer attention op.

Pure torch functions, no config and no transformers import. Every tensor with heads uses one layout,
``(B, H, T, D)``: batch, heads, time, head dim. Masks are boolean with ``True`` meaning "may attend / is real".

* :func:`sliding_window_attention` - every query attends to keys at offsets ``-left .. +right`` (optionally
  dilated) plus an optional extra key segment (global tokens).
* :func:`longformer_attention` - the full Longformer layer attention (Beltagy et al. 2020, section 3.1): local
  window, every token attends to the global tokens, global tokens attend everywhere with their own projections.

The fast paths never build a ``T x T`` tensor: queries are cut into blocks of ``block_size`` rows and each block
attends to one contiguous key span of ``block_size + left + right`` keys (plus the global keys), so time is
``O(T * (block_size + left + right + G))``, and neither keeps anything of that size for the backward. The folder
holds one file per path:

* ``banded_fused.py`` - on CPU without dropout, the blocks go through PyTorch's fused attention kernel;
* ``banded_blocked.py`` - with attention dropout (training with the checkpoints' 0.1), and on other devices:
  groups of blocks as batched matmuls, the probabilities recomputed in the backward from the row log-sum-exp;
* ``counter_dropout.py`` - the dropout mask, a pure function of (seed, position), regenerated in the backward
  rather than stored (the model's hidden dropout uses it too);
* ``naive.py`` - the dense twins (:func:`naive_sliding_window_attention`, :func:`naive_longformer_attention`),
  which build the full mask and the same dropout mask, for the tests.

Memory is ``O(T * D)`` per head on both paths. Both run the dense twins' tests;
``hf_longctx/benchmarks/longformer.py`` measures them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .banded_blocked import _BlockedAttention
from .banded_fused import _BandedFlashAttention, _extra_bias, _flash_cpu_usable, _fused_block_sizes
from .counter_dropout import _draw_seed, counter_dropout, dropout_keep, dropout_keys  # noqa: F401  (public here too)
from .scores import _masked_score


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

    Long on purpose: argument checks and the choice between the two paths, which live in their own files.
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


def global_token_index(global_mask: torch.Tensor, at_most: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of global tokens, padded to the row with the most.

    Args:
        global_mask: ``(B, T)`` bool.
        at_most: a bound on any row's count that the caller knows. A compiled graph then holds ``G = at_most``
            slots, a static size, instead of reading the count (a graph break); eagerly it is checked.

    Returns:
        ``index`` ``(B, G)`` long (padding slots point at position 0) and
        ``valid`` ``(B, G)`` bool, where ``G`` is the largest count in the batch (compiled with ``at_most``: it).
    """
    counts = global_mask.sum(dim=1)
    if at_most is not None and not torch.compiler.is_exporting():
        G = min(at_most, global_mask.shape[1])
        message = f"more global tokens in a row than the {at_most} this model was told to expect"
        if torch.compiler.is_compiling():
            torch._assert_async((counts <= G).all(), message)
        else:
            most = int(counts.max()) if global_mask.numel() else 0
            if most > G:
                raise ValueError(f"{message} ({most})")
            G = most
    elif torch.compiler.is_exporting():  # a data-dependent size: the graph's G is whatever the input holds
        G = counts.max().item()
        torch._check(G >= 0)
        torch._check(G <= global_mask.shape[1])
    else:
        G = int(counts.max()) if global_mask.numel() else 0
    # Each global token's rank in its row is its slot; the others go to a spare slot T, cut off. A scatter rather
    # than a stable sort, which ONNX lacks.
    B, T = global_mask.shape
    slot = torch.where(global_mask, global_mask.long().cumsum(1) - 1, T)
    positions = torch.arange(T, device=global_mask.device).expand(B, T)
    index = torch.zeros(B, T + 1, dtype=torch.long, device=global_mask.device).scatter(1, slot, positions)[:, :G]
    valid = torch.arange(G, device=global_mask.device)[None, :] < counts[:, None]
    return index.masked_fill(~valid, 0), valid


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
    if not torch.compiler.is_compiling() and bool(attention_mask.all()):  # nothing to zero: skip a pass
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
        if torch.compiler.is_compiling() or not bool(key_mask.all()):
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
