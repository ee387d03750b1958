"""The Longformer attention ops against their dense references: forward and every gradient."""

import pytest
import torch

import hf_longctx.models.longformer.sliding_window_attention as swa

from hf_longctx.models.longformer.naive import naive_longformer_attention, naive_sliding_window_attention
from hf_longctx.models.longformer.sliding_window_attention import (
    global_token_index,
    longformer_attention,
    sliding_window_attention,
)

B, H, D = 2, 4, 8


@pytest.fixture(autouse=True, params=["fused", "blocked"])
def path(request, monkeypatch):
    """Run every test on both implementations: PyTorch's fused CPU kernel, and the blocked path that dropout and
    other devices use (with dropout every call takes the blocked path)."""
    if request.param == "blocked":
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
    """With dropout the blocked path runs; at p=0.5 about half the probabilities vanish and the rest double."""
    torch.manual_seed(0)
    T = 64
    q, k, v, _ = _inputs(T)
    v = torch.ones_like(v)  # each output row is then the sum of its kept (rescaled) probabilities
    out = sliding_window_attention(q.detach(), k.detach(), v, 8, 8, dropout_p=0.5)
    mean = out.mean().item()
    assert 0.9 < mean < 1.1, mean  # inverted dropout keeps the expectation
    assert out.std().item() > 0.05  # but individual rows change


# ---------------------------------------------------------------- attention dropout -----------------------------------
# The mask is a pure function of (seed, batch, head, query position, key position), so the dense twins build the very
# same mask and forward and gradients compare exactly (float64); then the mask itself is checked to be dropout.


class TestDropout:
    """With dropout every call takes the blocked path: no fused/blocked parametrization here."""

    @pytest.fixture(autouse=True)
    def path(self):
        return "blocked"

    @pytest.mark.parametrize(
        "T,left,right,dilation,block",
        [
            (37, 4, 4, 1, None),
            (37, 4, 4, 1, 5),  # odd block size, partial last block
            (40, 6, 0, 1, 8),  # causal band
            (3, 4, 4, 1, None),  # shorter than the window
            (41, 3, 3, 2, 4),  # dilation
            (50, 4, 0, 3, None),  # causal + dilation
        ],
    )
    def test_sliding_window_with_dropout_matches_dense(self, T, left, right, dilation, block):
        q, k, v, _ = _inputs(T)
        key_mask = _ragged_mask(T)
        kwargs = dict(key_mask=key_mask, dilation=dilation, dropout_p=0.3, dropout_seed=11)
        out = sliding_window_attention(q, k, v, left, right, block_size=block, **kwargs)
        ref = naive_sliding_window_attention(q, k, v, left, right, **kwargs)
        rows = key_mask[:, None, :, None]
        torch.testing.assert_close(out * rows, ref * rows, rtol=1e-10, atol=1e-10)
        no_dropout = naive_sliding_window_attention(q, k, v, left, right, key_mask=key_mask, dilation=dilation)
        assert not torch.allclose(out * rows, no_dropout * rows), "dropout changed nothing"
        for name, a, r in zip("qkv", _grads(out * rows, (q, k, v)), _grads(ref * rows, (q, k, v))):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


    @pytest.mark.parametrize("per_query", [False, True])
    def test_sliding_window_extra_keys_with_dropout_match_dense(self, per_query):
        T, G = 29, 3
        q, k, v, (ek, ev) = _inputs(T, G=G)
        g = torch.Generator().manual_seed(5)
        extra_mask = torch.rand(B, T, G, generator=g) > 0.3 if per_query else torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
        positions = torch.tensor([[0, 9, 20], [3, 4, 28]])  # the extra keys' positions key their mask columns
        kwargs = dict(key_mask=_ragged_mask(T), extra_k=ek, extra_v=ev, extra_mask=extra_mask, dropout_p=0.25,
                      dropout_seed=3, extra_positions=positions)
        out = sliding_window_attention(q, k, v, 5, 5, block_size=7, **kwargs)
        ref = naive_sliding_window_attention(q, k, v, 5, 5, **kwargs)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        for a, r in zip(_grads(out, (q, k, v, ek, ev)), _grads(ref, (q, k, v, ek, ev))):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


    @pytest.mark.parametrize("causal", [False, True])
    @pytest.mark.parametrize("dilation", [1, 2])
    def test_longformer_attention_with_dropout_matches_dense(self, causal, dilation):
        """Band, global columns, global rows (their own projections) and padding, all with the same mask."""
        tensors, kwargs = _longformer_case(33, causal, dilation)
        q, k, v = tensors[:3]
        kwargs.update(dropout_p=0.2, dropout_seed=7)
        out = longformer_attention(q, k, v, block_size=4, **kwargs)
        ref = naive_longformer_attention(q, k, v, **kwargs)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        assert out[1, :, -5:].abs().max() == 0, "padding rows must be exactly 0"
        for i, (a, r) in enumerate(zip(_grads(out, tensors), _grads(ref, tensors))):
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=lambda m, i=i: f"grad of input {i}: {m}")


    def test_dropout_seed_comes_from_torch_rng(self):
        """torch.manual_seed reproduces a call; the next call draws a new mask."""
        tensors, kwargs = _longformer_case(24, False, 1)
        detached = [t.detach() for t in tensors]
        kwargs.update(q_global=detached[3], k_global=detached[4], v_global=detached[5], dropout_p=0.3)
        torch.manual_seed(123)
        first = longformer_attention(*detached[:3], **kwargs)
        second = longformer_attention(*detached[:3], **kwargs)
        torch.manual_seed(123)
        again = longformer_attention(*detached[:3], **kwargs)
        assert torch.equal(first, again)
        assert not torch.allclose(first, second)


    @pytest.mark.parametrize("p", [0.1, 0.5])
    def test_dropout_mask_keeps_one_minus_p_independently(self, p):
        """The mask over (batch, head, query, key): kept fraction 1 - p, and neighbours (next query, next key, next head,
        next batch row, the diagonal neighbour, and four random corners of a rectangle) uncorrelated, within 5 sigma."""
        Bm, Hm, T = 2, 4, 256
        rows, cols = swa.dropout_keys(2024, Bm, Hm, T)
        keep = swa.dropout_keep(rows[..., None], cols[:, None, None, :], p).neg().double()  # (B, H, T, T), 1 = kept
        n = keep.numel()
        assert abs(keep.mean().item() - (1 - p)) < 5 * ((p * (1 - p)) / n) ** 0.5, keep.mean().item()

        def corr(a, b):
            a, b = a - a.mean(), b - b.mean()
            return ((a * b).mean() / (a.std() * b.std())).item()

        bound = 5 / (n / 2) ** 0.5
        pairs = {
            "next query": (keep[:, :, :-1], keep[:, :, 1:]),
            "next key": (keep[..., :-1], keep[..., 1:]),
            "diagonal": (keep[:, :, :-1, :-1], keep[:, :, 1:, 1:]),
            "next head": (keep[:, :-1], keep[:, 1:]),
            "next batch row": (keep[:-1], keep[1:]),
        }
        for name, (a, b) in pairs.items():
            assert abs(corr(a, b)) < bound, (name, corr(a, b))
        g = torch.Generator().manual_seed(0)
        i, i2, j, j2 = (torch.randint(0, T, (200_000,), generator=g) for _ in range(4))
        flat = keep[0, 0]
        drops = ((1 - flat[i, j]) * (1 - flat[i2, j]) * (1 - flat[i, j2]) * (1 - flat[i2, j2])).mean().item()
        assert abs(drops - p**4) < 5 * (p**4 / 200_000) ** 0.5 + 1e-4, (drops, p**4)


    def test_dropout_output_mean_equals_the_output_without_dropout(self):
        """Dropout stays dropout: over many draws the mean output is the no-dropout output, within sampling error."""
        tensors, kwargs = _longformer_case(20, False, 1, seed=4)
        detached = [t.detach() for t in tensors]
        kwargs.update(q_global=detached[3], k_global=detached[4], v_global=detached[5])
        exact = longformer_attention(*detached[:3], **kwargs)
        torch.manual_seed(0)
        draws = torch.stack([longformer_attention(*detached[:3], dropout_p=0.3, **kwargs) for _ in range(160)])
        mean, sem = draws.mean(0), draws.std(0) / 160**0.5
        real = kwargs["attention_mask"][:, None, :, None].expand_as(exact)
        z = ((mean - exact).abs() / sem.clamp_min(1e-12))[real]
        assert z.max() < 5.5, f"largest deviation {z.max():.1f} standard errors"
        assert (draws.std(0)[real] > 0).all(), "some outputs never varied"


    def test_dropout_saves_nothing_of_size_t_times_window(self):
        """The blocked path keeps the inputs, the output and one log-sum-exp per row for the backward: O(T * D)."""
        T, left, right = 256, 64, 64  # T * (left + right) = 16 * T * D
        q, k, v, (ek, ev) = _inputs(T, G=3)
        saved = []

        def pack(t):
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = sliding_window_attention(q, k, v, left, right, extra_k=ek, extra_v=ev, dropout_p=0.1)
        out.sum().backward()
        # The padded keys are (T + left + right) * D per head; the probabilities would be T * (left + right + 1 + G).
        assert saved and max(saved) <= 2 * B * H * T * D, f"a saved tensor of {max(saved)} elements"


class TestHiddenDropout:
    """counter_dropout, the model's hidden-state dropout (HiddenDropout): the same counter-based mask over (row, channel)."""

    @pytest.fixture(autouse=True)
    def path(self):
        return "none"

    @pytest.mark.parametrize("p", [0.1, 0.5])
    def test_keeps_one_minus_p_independently_and_scales_the_kept(self, p):
        x = torch.ones(3, 512, 256)
        y = swa.counter_dropout(x, p, seed=99)
        kept = (y != 0).double()
        torch.testing.assert_close(y.unique(), torch.tensor([0.0, 1 / (1 - p)]))  # dropped, kept and scaled
        n = kept.numel()
        assert abs(kept.mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5, kept.mean().item()
        flat = kept.view(-1, 256)

        def corr(a, b):
            a, b = a - a.mean(), b - b.mean()
            return ((a * b).mean() / (a.std() * b.std())).item()

        bound = 5 / (n / 2) ** 0.5
        for name, (a, b) in {"next row": (flat[:-1], flat[1:]), "next channel": (flat[:, :-1], flat[:, 1:]),
                             "diagonal": (flat[:-1, :-1], flat[1:, 1:])}.items():
            assert abs(corr(a, b)) < bound, (name, corr(a, b))

    def test_mean_over_draws_is_the_input(self):
        x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        torch.manual_seed(0)
        draws = torch.stack([swa.counter_dropout(x, 0.3) for _ in range(400)])
        z = (draws.mean(0) - x).abs() / (draws.std(0) / 400**0.5)
        assert z.max() < 5.5, f"largest deviation {z.max():.1f} standard errors"

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
    def test_gradient_is_the_same_mask_and_nothing_is_saved(self, dtype):
        x = torch.randn(2, 37, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ref_mask = swa.counter_dropout(torch.ones_like(x), 0.2, seed=5)  # 0 or 1 / (1 - p)
        xd = x.to(dtype).requires_grad_()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = swa.counter_dropout(xd, 0.2, seed=5)
        assert not saved, "the mask must be regenerated, not saved"
        torch.testing.assert_close(y, (xd.detach().double() * ref_mask).to(dtype), rtol=0, atol=0)
        cot = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
        (grad,) = torch.autograd.grad(y, xd, cot)
        torch.testing.assert_close(grad, (cot.double() * ref_mask).to(dtype), rtol=0, atol=0)

    def test_seed_from_torch_rng_and_module_modes(self):
        from hf_longctx.models.longformer.modeling_longformer import HiddenDropout

        x = torch.randn(4, 50, 16)
        drop = HiddenDropout(0.25)
        assert isinstance(drop, torch.nn.Dropout)
        torch.manual_seed(3)
        a, b = drop(x), drop(x)
        torch.manual_seed(3)
        assert torch.equal(drop(x), a) and not torch.equal(a, b)
        assert drop.eval()(x) is x
        assert swa.counter_dropout(x, 0.0) is x
        with pytest.raises(ValueError, match="dropout p"):
            swa.counter_dropout(x, 1.0)
