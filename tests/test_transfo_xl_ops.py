"""Transformer-XL relative attention against its dense reference: forward and every gradient, float64."""

import pytest
import torch

from hf_longctx.models.transfo_xl.relative_attention import (
    gathered_relative_attention,
    naive_relative_attention,
    rel_shift,
    relative_attention,
    sinusoid_positions,
)

B, H, D = 2, 4, 8


def _inputs(T, M, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    K = M + T
    return dict(q=make(B, H, T, D), k=make(B, H, K, D), v=make(B, H, K, D), r=make(H, K, D),
                r_w_bias=make(H, D), r_r_bias=make(H, D))


def test_rel_shift_reads_the_distance_of_each_key():
    T, K = 5, 9
    # x[i, c] = 100 * i + (distance of column c) = 100 i + K - 1 - c
    x = (100 * torch.arange(T)[:, None] + (K - 1 - torch.arange(K))[None, :]).double()[None, None]
    y = rel_shift(x)[0, 0]
    for i in range(T):
        for j in range(K):
            d = (K - T) + i - j
            if d >= 0:
                assert y[i, j] == 100 * i + d, (i, j, y[i, j])


@pytest.mark.parametrize(
    "T,M,window,padded",
    [
        (7, 0, None, False),  # no memory: plain causal
        (7, 5, None, False),  # memory shorter than the segment
        (4, 9, None, True),  # memory longer than the segment, padding in memory and segment
        (6, 6, 6, False),  # same_length: every query sees exactly `window` keys
        (5, 8, 4, True),  # same_length with a window shorter than the memory, padding
        (1, 6, None, True),  # one query (a decoding step)
    ],
)
def test_relative_attention_matches_dense(T, M, window, padded):
    x = _inputs(T, M)
    key_mask = None
    if padded:
        key_mask = torch.ones(B, M + T, dtype=torch.bool)
        key_mask[1, : max(1, M // 2)] = False  # row 1: the start of its memory is padding
        key_mask[0, -1] = False  # row 0: its last segment position is padding
    ref = naive_relative_attention(**x, key_mask=key_mask, window=window)
    cot = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    names = list(x)
    g_ref = torch.autograd.grad(ref, [x[n] for n in names], cot, retain_graph=True)
    for query_block in (None, 3):  # one block; blocks of 3 queries, each against the keys it can see
        out = relative_attention(**x, key_mask=key_mask, window=window, query_block=query_block)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        g_out = torch.autograd.grad(out, [x[n] for n in names], cot)
        for n, a, b in zip(names, g_out, g_ref):
            assert b.abs().max() > 0, f"grad {n} of the reference is zero: the case does not exercise it"
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=n: f"grad {n}: {m}")


@pytest.mark.parametrize("M,pos,window,padded", [(6, 3, None, False), (6, 17, None, True), (6, 17, 4, True), (0, 5, None, False)])
def test_gathered_attention_over_a_ring_matches_dense(M, pos, window, padded):
    """A decoding step over a ring of M + 1 slots (position p in slot p % (M + 1), keys out of time order, slots
    never written masked) equals the dense reference on the same keys in time order: forward and every gradient."""
    S = M + 1
    x = _inputs(1, M, seed=3)  # keys in time order: positions pos - M ... pos
    first = pos - M
    time_of_slot = torch.tensor([(s - first) % S for s in range(S)])  # index into the time-ordered keys
    key_mask = torch.ones(B, S, dtype=torch.bool)
    key_mask[:, : max(0, M - pos)] = False  # positions before 0 were never written
    if padded:
        key_mask[1, 1] = False
    distance = M - time_of_slot  # pos - position of slot s
    allowed = key_mask[:, time_of_slot] & ((distance < window) if window is not None else True)
    out = gathered_relative_attention(
        x["q"], x["k"][:, :, time_of_slot], x["v"][:, :, time_of_slot], x["r"], x["r_w_bias"], x["r_r_bias"],
        rows=(S - 1 - distance)[None], allowed=allowed[:, None, None, :],
    )
    ref = naive_relative_attention(**x, key_mask=key_mask, window=window)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    names = list(x)
    g_out = torch.autograd.grad(out, [x[n] for n in names], cot)
    g_ref = torch.autograd.grad(ref, [x[n] for n in names], cot)
    for n, a, b in zip(names, g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=n: f"grad {n}: {m}")


def test_causality_and_window_are_enforced():
    """Changing a future key (or one beyond the same_length window) leaves a query's output unchanged."""
    T, M = 5, 6
    x = {n: t.detach() for n, t in _inputs(T, M).items()}
    base = relative_attention(**x, window=4)
    k2, v2 = x["k"].clone(), x["v"].clone()
    k2[:, :, M + 3], v2[:, :, M + 3] = 5.0, 5.0  # the key of query 3
    moved = relative_attention(**{**x, "k": k2, "v": v2}, window=4)
    torch.testing.assert_close(moved[:, :, :3], base[:, :, :3])  # queries 0-2 come before it
    assert not torch.allclose(moved[:, :, 3], base[:, :, 3])
    # query 0 sits at key M and sees distances 0..3: keys M-3..M. Key M-4 is outside its window.
    k3 = x["k"].clone()
    k3[:, :, M - 4] = 5.0
    torch.testing.assert_close(relative_attention(**{**x, "k": k3}, window=4)[:, :, 0], base[:, :, 0])
    assert not torch.allclose(relative_attention(**{**x, "k": k3}, window=None)[:, :, 0],
                              relative_attention(**x, window=None)[:, :, 0])


def test_clamped_distances_reuse_the_last_embedding():
    """The model clamps distances before the sinusoid: rows of r beyond clamp_len equal the clamp_len row."""
    distances = torch.arange(9, -1, -1).clamp(max=4)
    R = sinusoid_positions(distances, 16, dtype=torch.float64)
    for row in range(6):  # distances 9..5 and 4 are all clamped to 4
        torch.testing.assert_close(R[row], R[5])
    assert not torch.allclose(R[6], R[5])
    # d = 0 gives sin 0 = 0, cos 0 = 1
    torch.testing.assert_close(R[-1], torch.cat([torch.zeros(8), torch.ones(8)]).double())


def test_padding_query_rows_stay_finite():
    """A query whose keys are all padding (a padding position) gives finite output and gradients."""
    x = _inputs(3, 0)
    key_mask = torch.ones(B, 3, dtype=torch.bool)
    key_mask[1] = False
    out = relative_attention(**x, key_mask=key_mask)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), list(x.values()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_traceable_shift_and_mask_equals_the_strided_one():
    """The path torch.compile takes (views of a padded copy) against the eager one (an overlapping strided view
    written in place): the same scores at every allowed entry and the same gradients, with and without padding."""
    from hf_longctx.models.transfo_xl.relative_attention import (
        _masked_value,
        _ShiftAndMask,
        relative_attention_mask,
        shift_and_mask,
    )

    torch.manual_seed(0)
    for B, H, T, K in [(2, 3, 5, 9), (1, 2, 4, 4), (2, 1, 1, 6)]:
        x = torch.randn(B, H, T, K, dtype=torch.float64, requires_grad=True)
        key_mask = torch.rand(B, K) > 0.3
        key_mask[:, -1] = True
        for mask in (None, key_mask):
            allowed = relative_attention_mask(T, K, mask, None)
            keep = allowed.to(x.dtype)
            bias = (1 - keep) * _masked_value(x.dtype)
            kept = None if mask is None else keep
            eager, traced = _ShiftAndMask.apply(x, bias, kept), shift_and_mask(x, bias, kept)
            valid = allowed.expand(B, H, T, K).reshape(B * H, T, K)
            torch.testing.assert_close(traced[valid], eager[valid], rtol=0, atol=0)
            g = torch.randn_like(eager) * valid
            torch.testing.assert_close(torch.autograd.grad(traced, x, g)[0], torch.autograd.grad(eager, x, g)[0])
