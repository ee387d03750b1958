"""The graph path of the Longformer attention (``banded_graph.py``: what export, ONNX and compiled inference run)
against the dense twin, forward and every gradient, over bands, padding and global tokens."""

import pytest
import torch

from hf_longctx.models.longformer.banded_graph import longformer_attention_graph
from hf_longctx.models.longformer.naive import naive_longformer_attention
from hf_longctx.models.longformer.sliding_window_attention import global_token_index


def _inputs(B, H, T, D, seed, n_global, pad):
    g = torch.Generator().manual_seed(seed)
    q, k, v, qg, kg, vg = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(6))
    real = torch.ones(B, T, dtype=torch.bool)
    if pad:
        real[0, T - pad:] = False
    glob = torch.zeros(B, T, dtype=torch.bool)
    for row in range(B):
        glob[row, torch.randperm(T, generator=g)[:n_global + row]] = True
    return q, k, v, qg, kg, vg, real, glob & real


def _case(left, right, causal, n_global, pad, T, seed, **extra):
    """Inputs of one case, its leaves for gradients and the keyword arguments both ops take."""
    q, k, v, qg, kg, vg, real, glob = _inputs(2, 2, T, 4, seed=seed, n_global=n_global, pad=pad)
    leaves = [x.requires_grad_() for x in (q, k, v, kg, vg)]
    has_global = bool(glob.any())
    index = global_token_index(glob) if has_global else None
    q_global = None
    if has_global and not causal:  # the model gathers the global queries at the index
        q_global = qg.gather(2, index[0][:, None, :, None].expand(2, 2, index[0].shape[1], 4)).requires_grad_()
        leaves.append(q_global)
    common = dict(left=left, right=right, attention_mask=real, global_mask=glob if has_global else None,
                  q_global=q_global, k_global=kg if q_global is not None else None,
                  v_global=vg if q_global is not None else None, causal=causal, **extra)
    return (q, k, v), index, leaves, common


def _assert_same_forward_and_gradients(got, want, leaves):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), leaves, allow_unused=True)
    refs = torch.autograd.grad((want * weights).sum(), leaves, allow_unused=True)
    for name, a, b in zip(["q", "k", "v", "k_global", "v_global", "q_global"], grads, refs):
        if b is None:
            assert a is None or not a.abs().max(), name
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("left,right,causal", [(4, 4, False), (3, 5, False), (6, 0, True), (1, 1, False),
                                               (40, 40, False), (70, 17, False), (50, 0, True)])
@pytest.mark.parametrize("n_global,pad", [(0, 0), (2, 3), (1, 0)])
@pytest.mark.parametrize("T", [5, 23, 32, 150])
def test_graph_path_equals_the_dense_twin_forward_and_gradients(left, right, causal, n_global, pad, T):
    """Bands of a few keys and of tens, one-sided and lopsided, lengths under one block and over several."""
    qkv, index, leaves, common = _case(left, right, causal, n_global, pad, T, seed=T + left)
    got = longformer_attention_graph(*qkv, global_index=index, **common)
    _assert_same_forward_and_gradients(got, naive_longformer_attention(*qkv, **common), leaves)


def test_global_token_index_needs_no_sort_and_keeps_the_order():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    index, valid = global_token_index(mask)
    assert index.tolist() == [[1, 3, 4], [0, 0, 0], [0, 0, 0]]
    assert valid.tolist() == [[True] * 3, [True, False, False], [False] * 3]


@pytest.mark.parametrize("left,right,causal", [(4, 4, False), (3, 5, False), (6, 0, True)])
@pytest.mark.parametrize("n_global,pad", [(0, 0), (2, 3)])
def test_graph_path_drops_what_the_dense_twin_drops_forward_and_gradients(left, right, causal, n_global, pad):
    """Attention dropout in the graph op (compiled training) is the counter-based mask of the fast op and the dense
    twin for the same seed: the seed a 0-d tensor here, an int there."""
    seed = 1234
    qkv, index, leaves, common = _case(left, right, causal, n_global, pad, 23, seed=23 + left + n_global,
                                       dropout_p=0.3)
    got = longformer_attention_graph(*qkv, global_index=index, dropout_seed=torch.tensor(seed), **common)
    without = longformer_attention_graph(*qkv, global_index=index, **{**common, "dropout_p": 0.0})
    assert (got - without).abs().max() > 0.1  # the dropout did drop
    _assert_same_forward_and_gradients(got, naive_longformer_attention(*qkv, dropout_seed=seed, **common), leaves)


def test_graph_dropout_masks_are_the_eager_masks_bit_for_bit():
    """The int64 re-statement of the counter-based mask (what a compiled graph computes) against the eager int32
    one, for hidden-state dropout and for attention keys, eager and under Inductor."""
    from hf_longctx.models.longformer.counter_dropout import (
        col_keys_at, counter_dropout, counter_dropout_graph, dropout_keep, dropout_keys, keep_at, row_keys_at,
    )

    rows, cols = dropout_keys(77, 2, 3, 300)
    want = dropout_keep(rows[..., None], cols[:, None, None, :], 0.15) != 0

    def graph_mask(seed):
        r = row_keys_at(seed, torch.arange(6).view(2, 3, 1), torch.arange(300))
        return keep_at(r[..., None], col_keys_at(seed, torch.arange(300)), 0.15)

    assert torch.equal(graph_mask(torch.tensor(77)), want)
    assert torch.equal(torch.compile(graph_mask, fullgraph=True)(torch.tensor(77)), want)
    x = torch.randn(5, 40, 24)
    torch.testing.assert_close(counter_dropout_graph(x, 0.2, torch.tensor(9)), counter_dropout(x, 0.2, 9),
                               rtol=0, atol=0)
