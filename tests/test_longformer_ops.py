"""The Longformer attention ops against their dense references: forward and every gradient."""

import pytest
import torch

import hf_longctx.models.longformer.sliding_window_attention as swa

from hf_longctx.models.longformer.sliding_window_attention import (
    global_token_index,
    longformer_attention,
    naive_longformer_attention,
    naive_sliding_window_attention,
    sliding_window_attention,
)

B, H, D = 2, 4, 8


@pytest.fixture(autouse=True, params=["fused", "unfused"])
def path(request, monkeypatch):
    """Run every test on both implementations: PyTorch's fused CPU kernel, and the unfused blocks that dropout and
    other devices use."""
    if request.param == "unfused":
        monkeypatch.setattr(swa, "_flash_cpu_usable", lambda q, dropout_p: False)
    return request.param


def _inputs(T, dtype=torch.float64, seed=0, G=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    q, k, v = make(B, H, T, D), make(B, H, T, D), make(B, H, T, D)
    extra = (make(B, H, G, D), make(B, H, G, D)) if G else (None, None)
    return q, k, v, extra


def _ragged_mask(T):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, T - 5 :] = False  # second row is shorter
    return mask


def _grads(out, tensors, seed=1):
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, tensors, cot)


@pytest.mark.parametrize(
    "T,left,right,dilation,block",
    [
        (37, 4, 4, 1, None),  # T not a multiple of anything
        (37, 4, 4, 1, 5),  # odd block size, partial last block
        (64, 8, 8, 1, 16),
        (40, 6, 0, 1, 8),  # causal band
        (3, 4, 4, 1, None),  # shorter than the window
        (41, 3, 3, 2, 4),  # dilation
        (50, 4, 0, 3, None),  # causal + dilation
    ],
)
def test_sliding_window_matches_dense(T, left, right, dilation, block):
    q, k, v, _ = _inputs(T)
    key_mask = _ragged_mask(T)
    out = sliding_window_attention(q, k, v, left, right, key_mask=key_mask, dilation=dilation, block_size=block)
    ref = naive_sliding_window_attention(q, k, v, left, right, key_mask=key_mask, dilation=dilation)
    rows = key_mask[:, None, :, None]  # compare real query rows; padding rows are undefined
    torch.testing.assert_close(out * rows, ref * rows, rtol=1e-10, atol=1e-10)
    g_out = _grads(out * rows, (q, k, v))
    g_ref = _grads(ref * rows, (q, k, v))
    for name, a, r in zip("qkv", g_out, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("per_query", [False, True])
def test_sliding_window_extra_keys_match_dense(per_query):
    T, G = 29, 3
    q, k, v, (ek, ev) = _inputs(T, G=G)
    g = torch.Generator().manual_seed(5)
    extra_mask = torch.rand(B, T, G, generator=g) > 0.3 if per_query else torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    kwargs = dict(key_mask=_ragged_mask(T), extra_k=ek, extra_v=ev, extra_mask=extra_mask)
    out = sliding_window_attention(q, k, v, 5, 5, block_size=7, **kwargs)
    ref = naive_sliding_window_attention(q, k, v, 5, 5, **kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(_grads(out, (q, k, v, ek, ev)), _grads(ref, (q, k, v, ek, ev))):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_global_token_index_orders_and_pads():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]).bool()
    index, valid = global_token_index(mask)
    assert index.tolist() == [[1, 3, 4], [0, 0, 0], [0, 0, 0]]
    assert valid.tolist() == [[True, True, True], [True, False, False], [False, False, False]]


def _longformer_case(T, causal, dilation, seed=0):
    q, k, v, _ = _inputs(T, seed=seed)
    attention_mask = _ragged_mask(T)
    global_mask = torch.zeros(B, T, dtype=torch.bool)
    global_mask[0, [0, 7, T - 1]] = True
    global_mask[1, [2, T - 2]] = True  # T-2 is padding in row 1: must be ignored
    index, valid = global_token_index(global_mask & attention_mask)
    gen = torch.Generator().manual_seed(seed + 100)
    q_global = torch.randn(B, H, index.shape[1], D, generator=gen, dtype=q.dtype).requires_grad_()
    k_global = torch.randn(B, H, T, D, generator=gen, dtype=q.dtype).requires_grad_()
    v_global = torch.randn(B, H, T, D, generator=gen, dtype=q.dtype).requires_grad_()
    kwargs = dict(
        left=6 if causal else 3,
        right=0 if causal else 3,
        attention_mask=attention_mask,
        global_mask=global_mask,
        causal=causal,
        dilation=dilation,
    )
    if not causal:
        kwargs.update(q_global=q_global, k_global=k_global, v_global=v_global)
    tensors = (q, k, v) + ((q_global, k_global, v_global) if not causal else ())
    return tensors, kwargs


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
def test_longformer_attention_matches_dense(causal, dilation):
    tensors, kwargs = _longformer_case(33, causal, dilation)
    q, k, v = tensors[:3]
    out = longformer_attention(q, k, v, block_size=4, **kwargs)
    ref = naive_longformer_attention(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert out[1, :, -5:].abs().max() == 0, "padding rows must be exactly 0"
    for i, (a, r) in enumerate(zip(_grads(out, tensors), _grads(ref, tensors))):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=lambda m, i=i: f"grad of input {i}: {m}")


def test_longformer_attention_without_globals_matches_dense():
    q, k, v, _ = _inputs(20)
    mask = _ragged_mask(20)
    out = longformer_attention(q, k, v, left=2, right=2, attention_mask=mask)
    ref = naive_longformer_attention(q, k, v, left=2, right=2, attention_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_bf16_matches_fp32_within_pytorch_error():
    """Our bf16 error is at most 2x the error of plain PyTorch bf16 on the dense reference (flash-attention's rule)."""
    tensors, kwargs = _longformer_case(64, False, 1, seed=3)
    exact = naive_longformer_attention(*[t.detach() for t in tensors[:3]], **{
        **kwargs, **{n: t.detach() for n, t in zip(("q_global", "k_global", "v_global"), tensors[3:])}
    })
    low = [t.detach().to(torch.bfloat16) for t in tensors]
    kw_low = {**kwargs, "q_global": low[3], "k_global": low[4], "v_global": low[5]}
    ours = longformer_attention(*low[:3], **kw_low).double()
    plain = naive_longformer_attention(*low[:3], **kw_low).double()
    assert torch.isfinite(ours).all()
    err_ours = (ours - exact).abs().max().item()
    err_plain = (plain - exact).abs().max().item()
    assert err_ours <= 2 * err_plain + 1e-6, f"bf16 error {err_ours:.3e} vs plain PyTorch bf16 {err_plain:.3e}"


def test_bad_arguments_raise_clear_errors():
    q, k, v, _ = _inputs(8)
    with pytest.raises(ValueError, match="dilation"):
        sliding_window_attention(q, k, v, 2, 2, dilation=0)
    with pytest.raises(ValueError, match="left and right"):
        sliding_window_attention(q, k, v, -1, 2)
    with pytest.raises(ValueError, match="causal attention needs right=0"):
        longformer_attention(
            q, k, v, left=2, right=2, attention_mask=torch.ones(B, 8, dtype=torch.bool),
            global_mask=torch.ones(B, 8, dtype=torch.bool), causal=True,
        )


def test_forward_and_backward_block_sizes_may_differ_with_a_wide_window(monkeypatch):
    """The fused path uses separate forward/backward block sizes; check a pair that does not divide T or the window."""
    monkeypatch.setattr(swa, "_fused_block_sizes", lambda left, right: (24, 40))
    T = 101
    q, k, v, (ek, ev) = _inputs(T, G=2)
    kwargs = dict(key_mask=_ragged_mask(T), extra_k=ek, extra_v=ev)
    out = sliding_window_attention(q, k, v, 20, 20, **kwargs)
    ref = naive_sliding_window_attention(q, k, v, 20, 20, **kwargs)
    rows = kwargs["key_mask"][:, None, :, None]
    torch.testing.assert_close(out * rows, ref * rows, rtol=1e-10, atol=1e-10)
    for a, r in zip(_grads(out * rows, (q, k, v, ek, ev)), _grads(ref * rows, (q, k, v, ek, ev))):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_dropout_zeroes_attention_weights_at_the_expected_rate():
    """With dropout the unfused path runs; at p=0.5 about half the probabilities vanish and the rest double."""
    torch.manual_seed(0)
    T = 64
    q, k, v, _ = _inputs(T)
    v = torch.ones_like(v)  # each output row is then the sum of its kept (rescaled) probabilities
    out = sliding_window_attention(q.detach(), k.detach(), v, 8, 8, dropout_p=0.5)
    mean = out.mean().item()
    assert 0.9 < mean < 1.1, mean  # inverted dropout keeps the expectation
    assert out.std().item() > 0.05  # but individual rows change
