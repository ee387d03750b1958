"""Each variant's op paths that torch.compile takes, compiled with Inductor (C++ code generation) on tiny shapes,
against eager: forward and every gradient. The model-level compile tests are in tests/model_suite.py (Dynamo +
AOTAutograd every run; Inductor on whole models with RUN_INDUCTOR=1, a minute or more per model)."""

from unittest import mock

import pytest
import torch

from hf_longctx.models.longformer.sliding_window_attention import counter_dropout, longformer_attention
from hf_longctx.models.reformer.lsh_attention import _dropout_bits
from hf_longctx.models.transfo_xl.relative_attention import relative_attention


@pytest.fixture(autouse=True)
def _fresh_dynamo(one_thread):
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _grads(fn, *tensors):
    torch.manual_seed(0)  # a dropout seed drawn from torch's RNG inside fn is the same for both runs
    out = fn(*tensors)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    return (out, *torch.autograd.grad(out, tensors, g))


def _same_as_eager(fn, *tensors, atol=1e-5):
    eager = _grads(fn, *tensors)
    compiled = _grads(torch.compile(fn), *tensors)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)


def test_counter_dropout_compiles_with_inductor():
    """The seed drawn inside the graph made the mask's integer hashing part of it, and the float32 mask was
    applied as a bitwise AND through an int32 view: Inductor's C++ failed to compile both ("invalid operands of
    types 'float' and 'float' to binary 'operator&'")."""
    x = torch.randn(2, 6, 40, requires_grad=True)
    _same_as_eager(lambda t: counter_dropout(t * 2.0, 0.1), x)


def test_longformer_attention_with_dropout_compiles_with_inductor():
    B, H, T, D = 2, 2, 24, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 20:] = False

    def attend(q, k, v):
        return longformer_attention(q, k, v, left=4, right=4, attention_mask=mask, dropout_p=0.1)

    _same_as_eager(attend, q, k, v)


def test_reformer_dropout_bits_without_a_dtype_view_are_the_same_bits():
    """Under compile the 16-bit uniforms come from shifts of the 64-bit draws (a dtype view failed at run time in
    a compiled graph); they must be the very bits eager takes, or compiled and eager training would differ."""
    for n in (1, 7, 64):
        eager, threshold = _dropout_bits((n,), 0.1, torch.Generator().manual_seed(n), "cpu")
        with mock.patch("torch.compiler.is_compiling", return_value=True):
            shifted, same_threshold = _dropout_bits((n,), 0.1, torch.Generator().manual_seed(n), "cpu")
        assert torch.equal(shifted, eager) and threshold == same_threshold


@pytest.mark.parametrize("B", [1, 2])
def test_relative_attention_compiles_with_inductor(B):
    """The rel-shift wrote through an overlapping strided view (`out=`): Inductor refused it at batch >= 2
    ("Cannot view a tensor ... as (4, 8, 8)"); under compile it takes the padded-copy shift."""
    H, T, M, D = 2, 5, 4, 8
    g = torch.Generator().manual_seed(B)
    q = torch.randn(B, H, T, D, generator=g, requires_grad=True)
    k, v = (torch.randn(B, H, M + T, D, generator=g, requires_grad=True) for _ in range(2))
    r = torch.randn(H, M + T, D, generator=g, requires_grad=True)
    u, w = (torch.randn(H, D, generator=g) for _ in range(2))
    key_mask = torch.ones(B, M + T, dtype=torch.bool)
    key_mask[-1, :2] = False
    _same_as_eager(lambda q, k, v, r: relative_attention(q, k, v, r, u, w, key_mask=key_mask), q, k, v, r)
