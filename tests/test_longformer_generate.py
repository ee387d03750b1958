"""Causal Longformer: generate() with the bounded sink + window cache equals generate() without a cache."""

import pytest
import torch
from test_longformer_model import PAD, VOCAB, make_config

from hf_longctx import LongctxLongformerForCausalLM, LongformerSinkWindowCache


def _lm(seed=0, **overrides):
    torch.manual_seed(seed)
    config = make_config(causal=True, num_sink_tokens=2, attention_window=[4, 6], **overrides)
    return LongctxLongformerForCausalLM(config).eval()


def _generate(model, ids, mask, use_cache, **kwargs):
    return model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=kwargs.pop("max_new_tokens", 24), do_sample=False,
        use_cache=use_cache, pad_token_id=PAD, eos_token_id=None, **kwargs,
    )


def test_greedy_cached_equals_uncached_and_cache_stays_bounded():
    model = _lm()
    ids = torch.randint(3, VOCAB, (1, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    cached = _generate(model, ids, mask, use_cache=True)
    uncached = _generate(model, ids, mask, use_cache=False)
    assert cached.shape == (1, 11 + 24)
    assert torch.equal(cached, uncached)
    # The cache holds the sinks plus the last window of the largest layer (6), not the whole sequence.
    out = model(input_ids=cached, attention_mask=torch.ones_like(cached), use_cache=True)
    assert isinstance(out.cache, LongformerSinkWindowCache)
    assert out.cache.get_seq_length() == cached.shape[1]
    assert out.cache.stored_length() <= 6 + 2


def test_cache_size_is_flat_over_a_long_generation():
    model = _lm()
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, use_cache=True)
    cache, sizes = out.cache, []
    token = out.logits[:, -1:].argmax(-1)
    for _ in range(60):
        out = model(input_ids=token, cache=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        sizes.append(cache.stored_length())
    assert max(sizes[10:]) == min(sizes[10:]) <= 8, sizes


def test_left_padded_batch_matches_single_rows():
    model = _lm(seed=1)
    g = torch.Generator().manual_seed(2)
    long_ids = torch.randint(3, VOCAB, (1, 12), generator=g)
    short_ids = torch.randint(3, VOCAB, (1, 7), generator=g)
    batch = torch.full((2, 12), PAD)
    batch[0], batch[1, 5:] = long_ids[0], short_ids[0]
    mask = (torch.arange(12)[None] >= torch.tensor([[0], [5]])).long()
    for use_cache in (True, False):
        out = _generate(model, batch, mask, use_cache, max_new_tokens=10)
        alone_long = _generate(model, long_ids, torch.ones_like(long_ids), use_cache, max_new_tokens=10)
        alone_short = _generate(model, short_ids, torch.ones_like(short_ids), use_cache, max_new_tokens=10)
        assert torch.equal(out[0], alone_long[0])
        assert torch.equal(out[1, 5:], alone_short[0])


def test_beam_search_cached_equals_uncached():
    model = _lm(seed=3)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    cached = _generate(model, ids, mask, True, num_beams=3, max_new_tokens=8)
    uncached = _generate(model, ids, mask, False, num_beams=3, max_new_tokens=8)
    assert torch.equal(cached, uncached)


def test_incremental_logits_equal_full_forward_with_sinks_and_dilation():
    """Prefill + one-token steps give the same logits as one full causal pass (sinks, dilation, ragged rows)."""
    model = _lm(seed=4, attention_dilation=[1, 2])
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, VOCAB, (2, 30), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        out = model(input_ids=ids[:, :13], attention_mask=mask[:, :13], use_cache=True)
        steps = [out.logits]
        for t in range(13, 30):
            out = model(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, dim=1)[real], full[real], rtol=1e-5, atol=1e-5)


def test_causal_model_ignores_the_future():
    model = _lm(seed=5)
    ids = torch.randint(3, VOCAB, (1, 20), generator=torch.Generator().manual_seed(5))
    changed = ids.clone()
    changed[0, 15:] = 3
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_causal_lm_needs_a_causal_config():
    with pytest.raises(ValueError, match="causal=True"):
        LongctxLongformerForCausalLM(make_config())
