"""The Reformer attention ops against their dense references (float64): forward and every gradient."""

import pytest
import torch

from hf_longctx.models.reformer.local_attention import local_chunked_attention
from hf_longctx.models.reformer.lsh_attention import auto_num_buckets, lsh_attention, lsh_buckets, random_rotations
from hf_longctx.models.reformer.naive import naive_local_attention, naive_lsh_attention

B, H, D = 2, 2, 8


def _inputs(T, seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64).requires_grad_() for _ in range(n)]


def _mask(T, short=9):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, T - short :] = False  # the second row is shorter by more than a chunk
    return mask


def _buckets(qk, rounds, num_buckets=4, seed=3):
    rot = random_rotations(H, D, rounds, num_buckets, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lsh_buckets(qk, rot, num_buckets)


def _grads(out, tensors, seed=1):
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, tensors, cot)


def _compare(out, ref, rows, tensors):
    torch.testing.assert_close(out * rows, ref * rows, rtol=1e-10, atol=1e-10)
    for name, a, r in zip(("qk/q", "v/k", "v"), _grads(out * rows, tensors), _grads(ref * rows, tensors)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize(
    "T,chunk,before,after,rounds,causal,num_buckets",
    [
        (37, 4, 1, 0, 1, False, 4),  # T not a multiple of the chunk
        (37, 4, 1, 0, 3, True, 4),  # several rounds, causal
        (40, 5, 1, 1, 2, False, [2, 4]),  # factorized buckets, a chunk after
        (36, 4, 2, 0, 2, True, 8),
        (8, 4, 1, 1, 1, False, 2),  # a 2-chunk cycle: chunk before == chunk after, taken once
        (6, 8, 1, 0, 2, True, 4),  # shorter than a chunk: plain attention
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_lsh_attention_matches_dense(T, chunk, before, after, rounds, causal, num_buckets, masked):
    qk, v = _inputs(T)
    buckets = _buckets(qk, rounds, num_buckets)
    mask = _mask(T, short=min(9, T - 1)) if masked else None
    kwargs = dict(num_chunks_before=before, num_chunks_after=after, causal=causal, attention_mask=mask)
    out = lsh_attention(qk, v, buckets, chunk, **kwargs)
    ref = naive_lsh_attention(qk, v, buckets, chunk, **kwargs)
    rows = (mask if mask is not None else torch.ones(B, T, dtype=torch.bool))[:, None, :, None]
    _compare(out, ref, rows, (qk, v))


def test_one_round_without_dropout_takes_the_fused_kernel_and_matches_the_unfused_path(monkeypatch):
    """One hashing round without dropout runs PyTorch's fused CPU attention kernel over the chunks (the cases of
    test_lsh_attention_matches_dense with one round compare it with the dense twin at 1e-10); several rounds,
    dropout or the log-sum-exp take the separate GEMMs and softmax. Both paths agree, forward and gradients."""
    from hf_longctx.models.reformer import lsh_attention as ops

    calls = []
    fused = ops._ChunkFlashAttention.apply
    monkeypatch.setattr(ops._ChunkFlashAttention, "apply", lambda *a: calls.append(1) or fused(*a))
    qk, v = _inputs(37)
    mask = _mask(37)
    kwargs = dict(num_chunks_before=1, causal=True, attention_mask=mask)
    out = lsh_attention(qk, v, _buckets(qk, 1), 4, **kwargs)
    assert len(calls) == 1
    lsh_attention(qk, v, _buckets(qk, 2), 4, **kwargs)
    lsh_attention(qk, v, _buckets(qk, 1), 4, dropout_p=0.1, generator=torch.Generator().manual_seed(0), **kwargs)
    lsh_attention(qk, v, _buckets(qk, 1), 4, return_logsumexp=True, **kwargs)
    assert len(calls) == 1
    monkeypatch.setattr(ops, "_flash_usable", lambda *a: False)
    unfused = lsh_attention(qk, v, _buckets(qk, 1), 4, **kwargs)
    _compare(out, unfused, mask[:, None, :, None], (qk, v))


def test_lsh_rounds_are_combined_by_their_logsumexp():
    """Two rounds with identical buckets equal one round; the per-round log-sum-exp is what the dense twin sums."""
    T = 24
    qk, v = _inputs(T, seed=4)
    one = _buckets(qk, 1)
    out1 = lsh_attention(qk, v, one, 4)
    out2, lse = lsh_attention(qk, v, one.expand(B, H, 2, T).contiguous(), 4, return_logsumexp=True)
    torch.testing.assert_close(out2, out1, rtol=1e-12, atol=1e-12)
    assert lse.shape == (B, H, 2, T)


def test_lsh_output_does_not_depend_on_right_padding():
    """A row alone and the same row padded by more than a chunk: same outputs (padding sorts into its own last
    bucket and the neighbour walk skips chunks of pure padding)."""
    T, extra = 26, 11
    qk, v = _inputs(T + extra, seed=5)
    buckets = _buckets(qk, 3)
    mask = torch.ones(B, T + extra, dtype=torch.bool)
    mask[:, T:] = False
    padded = lsh_attention(qk, v, buckets, 4, causal=True, attention_mask=mask)
    alone = lsh_attention(qk[:, :, :T], v[:, :, :T], buckets[..., :T], 4, causal=True)
    torch.testing.assert_close(padded[:, :, :T], alone, rtol=1e-12, atol=1e-12)


def test_lsh_buckets_equal_transformers_hashing():
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    for num_buckets in (8, [4, 6]):
        config = ReformerConfig(num_attention_heads=H, attention_head_size=D, hidden_size=H * D, num_hashes=3,
                                num_buckets=num_buckets, hash_seed=11, attn_layers=["lsh"])
        layer = LSHSelfAttention(config, layer_idx=0)
        vectors = torch.randn(B, H, 30, D, generator=torch.Generator().manual_seed(0))
        theirs = layer._hash_vectors(vectors, 3, None).view(B, H, 3, 30)
        rot = random_rotations(H, D, 3, num_buckets, torch.Generator().manual_seed(11))
        ours = lsh_buckets(vectors, rot, num_buckets)
        n = 8 if num_buckets == 8 else 24
        offsets = torch.arange(3)[None, None, :, None] * n  # transformers adds per-round offsets
        assert torch.equal(ours + offsets, theirs)


def test_auto_num_buckets_follows_transformers_rule():
    assert auto_num_buckets(256, 64, 4096) == 8
    assert auto_num_buckets(100, 64, 4096) == 2
    assert auto_num_buckets(65536, 64, 65536) == 2048 or isinstance(auto_num_buckets(65536, 64, 65536), list)
    assert auto_num_buckets(1 << 20, 4, 1 << 20) == [512, 1024]  # above 2 * max(sqrt(2^18), 4) = 1024: factorized


@pytest.mark.parametrize(
    "T,chunk,before,after,causal",
    [(37, 4, 1, 0, True), (37, 4, 1, 0, False), (40, 5, 1, 1, False), (30, 4, 2, 1, False), (5, 8, 1, 0, True)],
)
@pytest.mark.parametrize("masked", [False, True])
def test_local_attention_matches_dense(T, chunk, before, after, causal, masked):
    q, k, v = _inputs(T, n=3)
    mask = _mask(T, short=min(9, T - 1)) if masked else None
    kwargs = dict(num_chunks_before=before, num_chunks_after=after, causal=causal, attention_mask=mask)
    out = local_chunked_attention(q, k, v, chunk, **kwargs)
    ref = naive_local_attention(q, k, v, chunk, **kwargs)
    rows = (mask if mask is not None else torch.ones(B, T, dtype=torch.bool))[:, None, :, None]
    _compare(out, ref, rows, (q, k, v))


def test_dropout_draws_only_from_the_given_generator():
    qk, v = _inputs(24, seed=6)
    buckets = _buckets(qk, 2)
    state = torch.get_rng_state()
    a = lsh_attention(qk, v, buckets, 4, dropout_p=0.3, generator=torch.Generator().manual_seed(1))
    b = lsh_attention(qk, v, buckets, 4, dropout_p=0.3, generator=torch.Generator().manual_seed(1))
    c = lsh_attention(qk, v, buckets, 4, dropout_p=0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_bad_arguments_raise_value_errors():
    qk, v = _inputs(12)
    with pytest.raises(ValueError, match="even integer"):
        _buckets(qk, 1, num_buckets=5)
    with pytest.raises(ValueError, match="buckets must have shape"):
        lsh_attention(qk, v, torch.zeros(B, H, 1, 11, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        local_chunked_attention(qk, qk, v, 4, attention_mask=torch.ones(B, 11))
    with pytest.raises(ValueError, match="chunk_length"):
        local_chunked_attention(qk, qk, v, 0)


@pytest.mark.parametrize("rounds, steps", [(1, [20, 1, 1, 1]), (3, [17, 1, 4, 2, 1]), (2, [3, 1, 9, 30, 1])])
def test_lsh_decode_over_a_bucket_index_matches_dense(rounds, steps):
    """The cached-decoding rule read from a growing bucket index (several rounds, several new tokens per step,
    padded keys, full buckets whose older keys drop out of reach, an index that has to grow) equals its dense
    twin over all keys so far, for every real query."""
    from hf_longctx.models.reformer.lsh_attention import bucket_index_insert, lsh_decode_attention, unit_keys
    from hf_longctx.models.reformer.naive import naive_lsh_decode_attention

    g = torch.Generator().manual_seed(11)
    B, H, D, NB, chunk = 2, 2, 4, 3, 4
    S = sum(steps)
    qk = torch.randn(B, H, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, S, D, generator=g, dtype=torch.float64)
    buckets = torch.randint(0, NB, (B, H, rounds, S), generator=g)
    real = torch.rand(B, S, generator=g) > 0.2
    keys = unit_keys(qk)
    slots = torch.full((B, H, rounds, NB + 1, 1), -1, dtype=torch.long)
    counts = torch.zeros(B, H, rounds, NB + 1, dtype=torch.long)
    start, compared = 0, 0
    for n in steps:
        pos = torch.arange(start, start + n)
        slots, ends = bucket_index_insert(slots, counts, buckets[..., pos], pos, real[:, pos])
        if start:
            out = lsh_decode_attention(qk[:, :, pos], pos, buckets[..., pos], ends, keys, v, real, slots, chunk)
            ref = naive_lsh_decode_attention(qk[:, :, pos], pos, buckets[..., pos], keys[:, :, : start + n],
                                             v[:, :, : start + n], torch.arange(start + n), buckets[..., : start + n],
                                             real[:, : start + n], chunk)
            rows = real[:, pos][:, None, :, None].expand_as(out)
            torch.testing.assert_close(out[rows], ref[rows], rtol=1e-12, atol=1e-12)
            compared += int(rows.sum())
        start += n
    assert compared > 0
    in_buckets = torch.where(real[:, None, None, :], buckets, torch.full_like(buckets, NB))
    assert torch.equal(counts, torch.nn.functional.one_hot(in_buckets, NB + 1).sum(dim=3))
    held = [slots[0, 1, 0, b, : counts[0, 1, 0, b]].tolist() for b in range(NB + 1)]
    assert held == [[t for t in range(S) if int(in_buckets[0, 1, 0, t]) == b] for b in range(NB + 1)]


def test_counter_streams_drop_the_fraction_asked_and_replay_from_their_seed():
    """What compiled training draws instead of a generator (`CounterStream`): a kept fraction of 1 - p, uniforms
    in [0, 1), successive draws independent, the same seed the same draws, eagerly and under Inductor."""
    from hf_longctx.models.reformer.lsh_attention import CounterStream

    stream = CounterStream(torch.tensor(2**40 + 17))
    keep = stream.keep((400, 500), 0.1, "cpu")
    assert abs(keep.float().mean().item() - 0.9) < 0.005
    second = stream.keep((400, 500), 0.1, "cpu")
    assert 0.79 < (keep & second).float().mean().item() < 0.83  # independent draws: 0.81
    for neighbours in ((keep[:, 1:], keep[:, :-1]), (keep[1:], keep[:-1])):  # along a row, along a column
        assert 0.79 < (neighbours[0] & neighbours[1]).float().mean().item() < 0.83
    assert abs(keep.float().mean(0).std().item() - (0.09 / 400) ** 0.5) < 0.01  # no column keeps more than chance
    uniforms = CounterStream(torch.tensor(5)).rand((100_000,), "cpu")
    assert 0.0 <= uniforms.min() and uniforms.max() < 1.0 and abs(uniforms.mean().item() - 0.5) < 0.01
    assert torch.equal(CounterStream(torch.tensor(2**40 + 17)).keep((400, 500), 0.1, "cpu"), keep)

    def draw(seed):
        return CounterStream(seed).keep((400, 500), 0.1, "cpu")

    assert torch.equal(torch.compile(draw, fullgraph=True)(torch.tensor(2**40 + 17)), keep)
