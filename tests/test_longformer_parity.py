"""Parity with transformers' own LongformerModel (copied weights): every layer's hidden states, and bf16."""

import torch
from transformers import LongformerConfig, LongformerModel

from hf_longctx import LongctxLongformerConfig, LongctxLongformerModel

SIZES = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    attention_window=8, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
)


def _pair(seed=0):
    torch.manual_seed(seed)
    theirs = LongformerModel(LongformerConfig(**SIZES)).eval()
    ours = LongctxLongformerModel(LongctxLongformerConfig(**SIZES)).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _batch(T=45):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (4, T), generator=g)
    mask = torch.ones_like(ids)
    for row, length in ((1, 30), (2, 10), (3, 0)):  # ragged rows; row 3 is all padding
        ids[row, length:] = 1
        mask[row, length:] = 0
    glob = torch.zeros_like(ids)
    glob[0, [0, 5, T - 1]] = 1
    glob[1, [0, 29]] = 1
    glob[2, 3] = 1
    return ids, mask, glob


def test_every_layer_matches_transformers_with_padding_and_globals():
    ours, theirs = _pair()
    ids, mask, glob = _batch()
    kwargs = dict(input_ids=ids[:3], attention_mask=mask[:3], global_attention_mask=glob[:3], output_hidden_states=True)
    with torch.no_grad():
        a, b = ours(**kwargs), theirs(**kwargs)
    assert len(a.hidden_states) == len(b.hidden_states) == 3
    for layer, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=lambda m, i=layer: f"hidden state {i}: {m}")
    torch.testing.assert_close(a.pooler_output, b.pooler_output, rtol=1e-5, atol=1e-5)


def test_gradients_match_transformers():
    # float32: transformers' Longformer itself produces NaN gradients in float64 (its finfo.min masks add up to -inf).
    ours, theirs = _pair(seed=1)
    ids, mask, glob = _batch(T=37)
    # A random linear read-out: (a sum of squares of LayerNorm outputs is constant, its gradient pure noise).
    readout = torch.randn(3, ids.shape[1], SIZES["hidden_size"], generator=torch.Generator().manual_seed(7))
    readout = readout * mask[:3, :, None]
    for model in (ours, theirs):
        out = model(input_ids=ids[:3], attention_mask=mask[:3], global_attention_mask=glob[:3]).last_hidden_state
        (out * readout).sum().backward()
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = theirs_grads[name].grad
        assert (p.grad is None) == (ref is None), name
        if ref is None:  # the pooler is not part of this loss
            continue
        # key biases get a zero gradient in exact arithmetic (softmax ignores a per-query constant): absolute floor.
        err, scale = (p.grad - ref).norm().item(), ref.norm().item()
        assert err <= 1e-5 * scale + 1e-6, f"{name}: gradient error {err:.2e} (norm {scale:.2e})"


def test_bf16_all_padding_rows_stay_finite_and_error_within_2x_of_transformers():
    ours, theirs = _pair(seed=2)
    ids, mask, glob = _batch()
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    with torch.no_grad():
        exact = ours(**kwargs).last_hidden_state
        ours_bf16 = ours.to(torch.bfloat16)(**kwargs).last_hidden_state
        theirs_bf16 = theirs.to(torch.bfloat16)(**kwargs).last_hidden_state
    assert torch.isfinite(ours_bf16).all(), "NaN/inf in bf16 (row 3 is entirely padding)"
    real = mask.bool()
    err_ours = (ours_bf16.float() - exact)[real].abs().max().item()
    err_theirs = (theirs_bf16.float() - exact)[real].abs().max().item()
    assert err_ours <= 2 * err_theirs, f"bf16 error {err_ours:.3e} vs transformers' bf16 {err_theirs:.3e}"


def test_bf16_training_step_has_finite_gradients():
    ours, _ = _pair(seed=3)
    ours = ours.to(torch.bfloat16).train()
    ids, mask, glob = _batch()
    out = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
    out.float().pow(2).mean().backward()
    for name, p in ours.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
