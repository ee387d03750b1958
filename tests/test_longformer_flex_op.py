"""The FlexAttention path of the Longformer attention (``flex.py``, ``attn_implementation="flex_attention"``)
against the dense twin, forward only: PyTorch has no FlexAttention backward on the CPU (its training runs in
``tools/gpu_check.py`` on a GPU). FlexAttention on the CPU runs float32, so the twin runs in float64 and the
comparison is at float32's precision."""

import pytest
import torch

from hf_longctx.models.longformer.flex import longformer_attention_flex, longformer_block_mask
from hf_longctx.models.longformer.naive import naive_longformer_attention
from hf_longctx.models.longformer.sliding_window_attention import global_token_index
from test_longformer_graph_op import _inputs


# One length and head size, so that the compiled kernel is built a few times, not per case (about 5 s each).
@pytest.mark.parametrize("left,right,causal,dilation", [(40, 40, False, 1), (3, 150, False, 1), (130, 0, True, 1),
                                                        (20, 20, False, 3)])
@pytest.mark.parametrize("n_global,pad", [(0, 0), (2, 37), (5, 0)])
def test_flex_path_equals_the_dense_twin(left, right, causal, dilation, n_global, pad):
    T, D = 300, 16  # not a multiple of the 128 tile: the padding to it is exercised too
    q, k, v, qg, kg, vg, real, glob = _inputs(2, 2, T, D, seed=left + n_global, n_global=n_global, pad=pad)
    has_global = bool(glob.any())
    q_global = None
    if has_global and not causal:  # the model gathers the global queries at the index
        index = global_token_index(glob)[0]
        q_global = qg.gather(2, index[:, None, :, None].expand(2, 2, index.shape[1], D))
    common = dict(left=left, right=right, attention_mask=real, global_mask=glob if has_global else None,
                  q_global=q_global, k_global=kg if q_global is not None else None,
                  v_global=vg if q_global is not None else None, causal=causal, dilation=dilation)
    want = naive_longformer_attention(q, k, v, **common)
    as32 = {key: (val.float() if torch.is_tensor(val) and val.is_floating_point() else val)
            for key, val in common.items()}
    with torch.no_grad():
        got = longformer_attention_flex(q.float(), k.float(), v.float(), **as32)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5)


def test_the_block_mask_skips_the_tiles_outside_band_and_global_columns():
    T = 1024  # 8 tiles; window 100 each side reaches the neighbouring tiles only
    real = torch.ones(1, T, dtype=torch.bool)
    glob = torch.zeros(1, T, dtype=torch.bool)
    glob[0, 700] = True  # tile 5
    mask = longformer_block_mask(100, 100, 1, real, glob, False, T)
    dense = mask.to_dense()[0, 0]  # (8, 8) tile map
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(8):
        expected[i, max(i - 1, 0):i + 2] = True
    expected[:, 5] = True
    assert torch.equal(dense.bool(), expected)
    causal = longformer_block_mask(100, 0, 1, real, glob, True, T).to_dense()[0, 0].bool()
    assert not causal[4, 5] and causal[6, 5] and not causal.triu(1).any()


def test_flex_path_refuses_what_pytorch_cannot_run_by_name():
    q = torch.randn(1, 1, 8, 4)
    real = torch.ones(1, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="no attention dropout"):
        longformer_attention_flex(q, q, q, left=2, right=2, attention_mask=real, dropout_p=0.1)
    with pytest.raises(ValueError, match="cannot train on the CPU"):
        longformer_attention_flex(q.requires_grad_(), q, q, left=2, right=2, attention_mask=real)
    with pytest.raises(ValueError, match="float32, float16 and bfloat16"):
        longformer_attention_flex(q.detach().double(), q.double(), q.double(), left=2, right=2, attention_mask=real)
