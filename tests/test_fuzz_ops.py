"""Property-based tests: every attention op against its dense reference on shapes drawn by hypothesis.

Lengths from 1 token to several windows (odd and prime ones included), batch sizes, windows, dilations, global
masks (none, all, ragged), padding (none, heavy, whole rows), causal and not; forward and every gradient in
float64, and bf16 against the float64 reference within 2x the error of plain PyTorch bf16.

The example budget comes from the hypothesis profile: ``ci`` (the default, a few minutes in ``make test``) or
``long`` (``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz_ops.py``). Every failure hypothesis finds is fixed and
kept below as an explicit ``@example``.
"""

from __future__ import annotations

import os
from unittest import mock

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hf_longctx.models.longformer.sliding_window_attention as swa
from hf_longctx.models.longformer.sliding_window_attention import (
    global_token_index,
    longformer_attention,
    naive_longformer_attention,
)

settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

H, D = 2, 4


@st.composite
def longformer_cases(draw):
    """A random but valid call of :func:`longformer_attention` (as kwargs of plain values and masks)."""
    B = draw(st.integers(1, 3))
    T = draw(st.integers(1, 61))
    causal = draw(st.booleans())
    half = draw(st.integers(1, 8))
    left, right = (draw(st.integers(1, 10)), 0) if causal else (half, half)
    dilation = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    # Padding: none, some (right padding of random length per row), or heavy (whole rows of padding allowed).
    padding = draw(st.sampled_from(["none", "some", "heavy"]))
    lengths = torch.full((B,), T)
    if padding != "none":
        low = 0 if padding == "heavy" else 1
        lengths = torch.randint(low, T + 1, (B,), generator=g)
    real = torch.arange(T)[None, :] < lengths[:, None]
    glob_kind = draw(st.sampled_from(["none", "all", "ragged", "first"]))
    if glob_kind == "none":
        glob = torch.zeros(B, T, dtype=torch.bool)
    elif glob_kind == "all":
        glob = torch.ones(B, T, dtype=torch.bool)
    elif glob_kind == "first":
        glob = torch.zeros(B, T, dtype=torch.bool)
        glob[:, 0] = True
    else:
        glob = torch.rand(B, T, generator=g) < 0.2
    return dict(B=B, T=T, causal=causal, left=left, right=right, dilation=dilation, seed=seed, real=real, glob=glob)


def _tensors(case, dtype=torch.float64):
    g = torch.Generator().manual_seed(case["seed"])
    B, T = case["B"], case["T"]
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    q, k, v = make(B, H, T, D), make(B, H, T, D), make(B, H, T, D)
    tensors = {"q": q, "k": k, "v": v}
    if not case["causal"]:
        G = global_token_index(case["glob"] & case["real"])[0].shape[1]
        tensors.update(q_global=make(B, H, G, D), k_global=make(B, H, T, D), v_global=make(B, H, T, D))
    return tensors


def _kwargs(case, tensors):
    return dict(left=case["left"], right=case["right"], attention_mask=case["real"], global_mask=case["glob"],
                causal=case["causal"], dilation=case["dilation"], **tensors)


def _run(fn, case, tensors):
    t = dict(tensors)
    q, k, v = t.pop("q"), t.pop("k"), t.pop("v")
    return fn(q, k, v, **_kwargs(case, t))


def _path(fused: bool):
    """The fused CPU kernel path, or the unfused blocks (dropout, other devices)."""
    return mock.patch.object(swa, "_flash_cpu_usable", swa._flash_cpu_usable if fused else (lambda q, p: False))


@given(case=longformer_cases(), fused=st.booleans())
@example(case=dict(B=1, T=1, causal=False, left=1, right=1, dilation=1, seed=0,
                   real=torch.ones(1, 1, dtype=torch.bool), glob=torch.ones(1, 1, dtype=torch.bool)), fused=True)
@example(case=dict(B=2, T=7, causal=True, left=3, right=0, dilation=2, seed=1,
                   real=torch.tensor([[1] * 7, [0] * 7]).bool(), glob=torch.zeros(2, 7, dtype=torch.bool)), fused=False)
@example(case=dict(B=1, T=4, causal=True, left=2, right=0, dilation=1, seed=1,  # global marks only on padding:
                   real=torch.tensor([[1, 1, 0, 0]]).bool(),  # zero global keys killed the process (SIGFPE)
                   glob=torch.tensor([[0, 0, 0, 1]]).bool()), fused=True)
def test_longformer_attention_matches_dense(case, fused):
    tensors = _tensors(case)
    with _path(fused):
        out = _run(longformer_attention, case, tensors)
    ref = _run(naive_longformer_attention, case, tensors)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9, msg=lambda m: f"forward, {case}: {m}")
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    names = list(tensors)
    with _path(fused):
        got = torch.autograd.grad(out, list(tensors.values()), cot, allow_unused=True)
    want = torch.autograd.grad(ref, list(tensors.values()), cot, allow_unused=True)
    for name, a, b in zip(names, got, want):
        a = torch.zeros_like(tensors[name]) if a is None else a
        b = torch.zeros_like(tensors[name]) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"grad {n}, {case}: {m}")


@settings(max_examples=max(10, settings.default.max_examples // 2))
@given(case=longformer_cases())
def test_longformer_attention_bf16_within_twice_pytorch_error(case):
    exact_tensors = {n: t.detach() for n, t in _tensors(case).items()}
    low = {n: t.to(torch.bfloat16) for n, t in exact_tensors.items()}
    exact = _run(naive_longformer_attention, case, exact_tensors)
    ours = _run(longformer_attention, case, low).double()
    plain = _run(naive_longformer_attention, case, low).double()
    assert torch.isfinite(ours).all(), f"non-finite bf16 output for {case}"
    err_ours = (ours - exact).abs().max().item() if ours.numel() else 0.0
    err_plain = (plain - exact).abs().max().item() if plain.numel() else 0.0
    # The floor keeps cases where plain bf16 happens to be exact (one key per query) from demanding exactness.
    floor = 2.0**-8 * (exact.abs().max().item() if exact.numel() else 0.0)
    assert err_ours <= 2 * err_plain + floor, f"bf16 error {err_ours:.3e} vs plain {err_plain:.3e} for {case}"
