"""The FlexAttention path of the Reformer's LSH attention (``reformer/flex.py``, ``attn_implementation=
"flex_attention"``) against the dense twin, forward: PyTorch has no FlexAttention backward on the CPU (its
training runs in ``tools/gpu_check.py`` on a GPU). FlexAttention on the CPU runs float32; the twin runs in
float64, so the comparison is at float32's precision."""

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from hf_longctx.models.reformer.flex import lsh_attention_flex
from hf_longctx.models.reformer.lsh_attention import lsh_attention, lsh_buckets, random_rotations
from hf_longctx.models.reformer.naive import naive_lsh_attention

B, H, D = 2, 2, 16


def _case(T, rounds, num_buckets, masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(2))
    rot = random_rotations(H, D, rounds, num_buckets, torch.Generator().manual_seed(3), dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    if masked:
        mask[1, T - 21:] = False  # the second row shorter by more than a chunk
    return qk, v, lsh_buckets(qk, rot, num_buckets), mask


# Chunks of 16 (FlexAttention's tiles); few distinct shapes, so that the kernel compiles a few times (seconds each).
@pytest.mark.parametrize(
    "T,chunk,before,after,rounds,causal,num_buckets",
    [
        (150, 16, 1, 0, 1, False, 4),  # T not a multiple of the chunk
        (150, 16, 1, 0, 3, True, 4),  # several rounds, causal: the rounds weighted by FlexAttention's log-sum-exp
        (150, 16, 1, 1, 2, False, [2, 4]),  # factorized buckets, a chunk after
        (32, 16, 1, 1, 1, False, 2),  # a 2-chunk cycle: chunk before == chunk after, taken once
        (12, 16, 1, 0, 2, True, 4),  # shorter than a chunk: plain attention
    ],
)
@pytest.mark.parametrize("masked", [False, True])
def test_flex_lsh_attention_equals_the_dense_twin(T, chunk, before, after, rounds, causal, num_buckets, masked):
    qk, v, buckets, mask = _case(T, rounds, num_buckets, masked)
    kwargs = dict(num_chunks_before=before, num_chunks_after=after, causal=causal,
                  attention_mask=mask if masked else None)
    twin = naive_lsh_attention(qk, v, buckets, chunk, **kwargs)
    # The float64 twin, and the default op at the flex path's precision (float32). They differ by up to 0.008 on the
    # first causal positions, where every round sees only the token itself: the rounds are weighted by exp of
    # log-sum-exps near -1e5 (the self score), where float32's step is 0.008 - so the tight check is against the op.
    want, want_lse = lsh_attention(qk.float(), v.float(), buckets, chunk, return_logsumexp=True, **kwargs)
    rows = mask[:, None, :, None]
    if rounds == 1:  # what the CPU runs: the compiled kernel
        got = lsh_attention_flex(qk.float(), v.float(), buckets, chunk, **kwargs)
        torch.testing.assert_close(got * rows, want * rows, rtol=0, atol=2e-5)
        torch.testing.assert_close(got.double() * rows, twin * rows, rtol=0, atol=2e-5)
    # The rounds' weights need FlexAttention's log-sum-exp, which the compiled CPU kernel does not return: the same
    # block mask, mask_mod and score_mod through PyTorch's uncompiled reference check it (a GPU compiles them).
    got, lse = lsh_attention_flex(qk.float(), v.float(), buckets, chunk, return_logsumexp=True, _flex=flex_attention,
                                  **kwargs)
    torch.testing.assert_close(got * rows, want * rows, rtol=0, atol=2e-5)
    torch.testing.assert_close(got.double() * rows, twin * rows, rtol=0, atol=1e-2 if causal and rounds > 1 else 2e-5)
    real_lse = mask[:, None, None] & (want_lse > -1e4)  # log-sum-exps of rows that saw more than themselves
    torch.testing.assert_close(lse[real_lse], want_lse[real_lse], rtol=0, atol=1e-4)

def test_flex_lsh_attention_refuses_what_pytorch_cannot_run_by_name():
    qk, v, buckets, _ = _case(40, 1, 4, False)
    with pytest.raises(ValueError, match="no attention dropout"):
        lsh_attention_flex(qk.float(), v.float(), buckets, 16, dropout_p=0.1)
    with pytest.raises(ValueError, match="cannot train on the CPU"):
        lsh_attention_flex(qk.float().requires_grad_(), v.float(), buckets, 16)
    with pytest.raises(ValueError, match="float32, float16 and bfloat16"):
        lsh_attention_flex(qk, v, buckets, 16)
    qk2, v2, buckets2, _ = _case(40, 2, 4, False)
    with pytest.raises(ValueError, match="serves one hashing round"):
        lsh_attention_flex(qk2.float(), v2.float(), buckets2, 16)
