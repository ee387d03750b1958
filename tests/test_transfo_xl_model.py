"""The shared model suite (tests/model_suite.py) for the Transformer-XL variant, plus its own behaviour:
segment recurrence, memories, the generation cache, bad input."""

import pytest
import torch
from model_suite import *  # noqa: F401,F403  (the shared tests, parametrized by the `variant` fixture)
from model_suite import Head, VariantSpec
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

from hf_longctx import (
    LongctxTransfoXLConfig,
    LongctxTransfoXLForCausalLM,
    LongctxTransfoXLForSequenceClassification,
    LongctxTransfoXLModel,
)

VOCAB, PAD = 99, 0


def make_config(**overrides):
    kwargs = dict(
        vocab_size=VOCAB, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2, segment_length=8, mem_len=8,
        dropout=0.0, dropatt=0.0, pad_token_id=PAD, eos_token_id=1, init_std=0.1,
    )
    kwargs.update(overrides)
    return LongctxTransfoXLConfig(**kwargs)


def _ids(g, B=2, T=29, ragged=True):
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if ragged:  # the last row is right-padded
        ids[-1, T - 6:] = PAD
        mask[-1, T - 6:] = 0
    return ids, mask


def base_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask}


def causal_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def seqcls_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (ids.shape[0],), generator=g)}


def padded_inputs(config, g):
    """A 21-token row (three segments of 8) alone, and right-padded to 30 beside a full row."""
    ids, _ = _ids(g, B=1, T=21, ragged=False)
    other, _ = _ids(g, B=1, T=30, ragged=False)
    batch = torch.full((2, 30), PAD)
    batch[0, :21], batch[1] = ids[0], other[0]
    mask = torch.zeros(2, 30, dtype=torch.long)
    mask[0, :21], mask[1] = 1, 1
    return {"input_ids": ids}, {"input_ids": batch, "attention_mask": mask}


def _mems(B=2, M=8, d=32, n=2):
    return tuple(torch.zeros(B, M, d) for _ in range(n))


TRANSFO_XL = VariantSpec(
    name="transfo_xl",
    make_config=make_config,
    heads={
        "base": Head(AutoModel, LongctxTransfoXLModel, base_inputs, output="last_hidden_state"),
        "causal": Head(AutoModelForCausalLM, LongctxTransfoXLForCausalLM, causal_inputs),
        "seqcls": Head(AutoModelForSequenceClassification, LongctxTransfoXLForSequenceClassification, seqcls_inputs),
    },
    padded_inputs=padded_inputs,
    bad_inputs=[
        ("id out of vocabulary", lambda c: {"input_ids": torch.tensor([[5, VOCAB + 3]])}, "vocabulary has 99"),
        ("no input", lambda c: {}, "exactly one of input_ids and inputs_embeds"),
        ("mask shape", lambda c: {"input_ids": torch.ones(2, 5).long(), "attention_mask": torch.ones(2, 4)},
         "attention_mask must have shape"),
        ("mems batch", lambda c: {"input_ids": torch.ones(2, 5).long(), "mems": _mems(B=3)},
         r"mems\[0\] must have shape \(batch=2"),
        ("mems width", lambda c: {"input_ids": torch.ones(2, 5).long(), "mems": _mems(d=16)}, "d_model=32"),
        ("mems layers", lambda c: {"input_ids": torch.ones(2, 5).long(), "mems": _mems(n=3)},
         r"one tensor per layer \(2 layers\), got 3"),
        ("mems length-first", lambda c: {"input_ids": torch.ones(2, 5).long(),
                                         "mems": tuple(torch.zeros(8, 2, 32) for _ in range(2))}, "transpose"),
        ("mems mask", lambda c: {"input_ids": torch.ones(2, 5).long(), "mems": _mems(),
                                 "mems_mask": torch.ones(2, 7)}, "mems_mask must have shape"),
        ("attentions", lambda c: {"input_ids": torch.ones(1, 3).long(), "output_attentions": True},
         "output_attentions"),
    ],
    bad_configs=[  # (id, config fields, what the ValueError must say)
        ("odd d_model", dict(d_model=31, n_head=1, d_head=31), "d_model must be even"),
        ("negative memory", dict(mem_len=-1), "mem_len must be an integer >= 0"),
        ("clamp 0", dict(clamp_len=0), "clamp_len must be None \\(no clamp\\) or an integer >= 1"),
        ("same_length without memory", dict(same_length=True, mem_len=0), "same_length=True needs mem_len >= 1"),
        ("segment 0", dict(segment_length=0), "segment_length must be a positive integer"),
        ("pad id outside vocabulary", dict(pad_token_id=99), "pad_token_id must be an id in the vocabulary"),
        ("dropatt 1", dict(dropatt=1.0), "dropatt must be in \\[0, 1\\)"),
        ("cutoffs past the vocabulary", dict(cutoffs=[50, 200]), "cutoffs"),
        ("longest input 0", dict(max_input_length=0), "max_input_length must be a positive integer"),
        ("tie_projs of the wrong length", dict(cutoffs=[50], tie_projs=[True]), "tie_projs has 1 entries"),
    ],
    position_table=False,  # relative positions and recurrence: any length, no position_ids
)


@pytest.fixture
def variant():
    return TRANSFO_XL


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread is faster on the shared 2-core machine."""


# ---------------------------------------------------------------- Transformer-XL-specific -----------------------------


def _model(cls=LongctxTransfoXLForCausalLM, seed=0, **overrides):
    torch.manual_seed(seed)
    return cls(make_config(**overrides)).eval()


def test_segments_inside_forward_equal_calls_carrying_mems():
    """A 29-token input in one call = four calls of <= 8 tokens passing mems (the recurrence of section 3.2)."""
    model = _model(same_length=True, clamp_len=5)
    ids, _ = _ids(torch.Generator().manual_seed(0), ragged=False)
    with torch.no_grad():
        whole = model(ids)
        mems, parts = None, []
        for s in range(0, 29, 8):
            out = model(ids[:, s:s + 8], mems=mems)
            parts.append(out.logits)
            mems = out.mems
    torch.testing.assert_close(whole.logits, torch.cat(parts, dim=1))
    for a, b in zip(whole.mems, mems):
        torch.testing.assert_close(a, b)
    assert all(m.shape == (2, 8, 32) for m in mems)


def test_memory_reaches_back_and_is_detached():
    """A token in the first segment changes outputs in the second (memory works) but gets no gradient from the
    second segment's loss (memories are detached, section 3.2); with mem_len=0 it has no influence at all."""
    ids, _ = _ids(torch.Generator().manual_seed(1), ragged=False, T=16)
    ids2 = ids.clone()
    ids2[:, 3] = (ids2[:, 3] + 1) % VOCAB
    for mem_len, influences in ((8, True), (0, False)):
        model = _model(mem_len=mem_len)
        with torch.no_grad():
            a, b = model(ids).logits[:, 8:], model(ids2).logits[:, 8:]
        assert (not torch.allclose(a, b)) == influences, mem_len
    model = _model()
    emb = model.transformer.word_emb(ids).detach().requires_grad_()
    out = model(inputs_embeds=emb)
    out.logits[:, 8:].sum().backward()
    assert emb.grad[:, :8].abs().max() == 0 and emb.grad[:, 8:].abs().max() > 0


def test_inputs_embeds_equal_input_ids_and_tuple_outputs():
    model = _model()
    ids, mask = _ids(torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask)
        b = model(inputs_embeds=model.transformer.word_emb(ids), attention_mask=mask)
        model.config.return_dict = False
        t = model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(a.logits, b.logits)
    assert isinstance(t, tuple)
    torch.testing.assert_close(t[0], a.logits)
    with torch.no_grad():
        hs = _model()(ids, output_hidden_states=True).hidden_states
    assert len(hs) == 3 and all(h.shape == (2, 29, 32) for h in hs)


def test_sequence_classification_reads_the_last_real_token():
    model = _model(LongctxTransfoXLForSequenceClassification)
    alone, batched = padded_inputs(model.config, torch.Generator().manual_seed(3))
    with torch.no_grad():
        one = model(**alone).logits
        two = model(**batched).logits
        changed_first = model(input_ids=alone["input_ids"].roll(1, dims=1)).logits
    torch.testing.assert_close(two[0], one[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed_first, one)


def test_labels_of_the_wrong_shape_are_refused():
    ids = torch.ones(2, 5).long()
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 5\)"):
        _model()(ids, labels=torch.ones(2, 4).long())
    with pytest.raises(ValueError, match="labels must have one entry per row"):
        _model(LongctxTransfoXLForSequenceClassification)(ids, labels=torch.ones(3).long())


def test_config_errors_name_the_field_and_value():
    for field, value, match in [
        ("mem_len", -1, "mem_len must be an integer >= 0, got -1"),
        ("clamp_len", 0, "clamp_len must be None .* got 0"),
        ("segment_length", 0, "segment_length must be a positive integer, got 0"),
        ("d_model", 31, "d_model must be even"),
        ("cutoffs", [50, 20], "cutoffs must be strictly increasing"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
        ("tie_projs", [False, True], "tie_projs has 2 entries but there are 1 clusters"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_config(**{field: value})
    with pytest.raises(ValueError, match="same_length=True needs mem_len >= 1"):
        make_config(same_length=True, mem_len=0)
    config = make_config()
    config.segment_length = 0  # set after creation: the model re-checks
    with pytest.raises(ValueError, match="segment_length"):
        LongctxTransfoXLModel(config)


def _greedy_uncached(model, prompt, n_new):
    """4.x semantics without a cache: the prompt (in segments), then one token per call with hidden-state mems."""
    out = model(prompt)
    seq, mems = prompt, out.mems
    for _ in range(n_new):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
        out = model(nxt, mems=mems)
        mems = out.mems
    return seq


@pytest.mark.parametrize("overrides", [{}, {"same_length": True, "clamp_len": 3, "pre_lnorm": True, "untie_r": False},
                                       {"cutoffs": [20, 60], "div_val": 2}])
def test_cached_generation_equals_the_uncached_loop(overrides):
    model = _model(seed=4, init_std=0.5, **overrides)  # large weights: the tokens depend on the context
    prompt = torch.randint(2, VOCAB, (2, 13), generator=torch.Generator().manual_seed(5))  # two segments
    with torch.no_grad():
        ref = _greedy_uncached(model, prompt, 30)
        seq = model.generate(prompt, max_new_tokens=30, do_sample=False, eos_token_id=None, pad_token_id=PAD)
        out = model(prompt, use_cache=True)
    torch.testing.assert_close(seq, ref, rtol=0, atol=0)
    cache = out.cache
    assert cache.memory_length() == 8 and cache.layers[0].keys_values()[0].shape == (2, 4, 8, 8)  # bounded by mem_len
    ring = cache.layers[0].k
    with torch.no_grad():  # 40 more steps: the cache stays at mem_len positions, in the same ring (no new buffer)
        for _ in range(40):
            out = model(out.logits[:, -1:].argmax(-1), cache=cache, use_cache=True)
    assert cache.memory_length() == 8 and cache.seen == 53
    assert cache.layers[0].k is ring and ring.shape == (2, 4, 9, 8)


def test_decoding_from_the_first_token_uses_the_ring():
    """A one-token prompt decodes through the fixed ring from the first step (empty slots masked) and gives the
    uncached loop's tokens; the ring has mem_len + 1 slots from the start."""
    model = _model(seed=4, init_std=0.5, same_length=True)
    prompt = torch.randint(2, VOCAB, (2, 1), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = _greedy_uncached(model, prompt, 20)
        seq = model.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=PAD)
        cache = model(prompt, use_cache=True).cache
    torch.testing.assert_close(seq, ref, rtol=0, atol=0)
    assert cache.layers[0].k.shape == (2, 4, 9, 8) and cache.memory_length() == 1


def test_beam_search_reorders_the_cache():
    """Within one segment, cached beam search equals beam search that recomputes everything (use_cache=False);
    a cache that is not reordered with the beams gives different sequences."""
    model = _model(seed=6, segment_length=64, mem_len=64, init_std=0.5)
    prompt = torch.randint(2, VOCAB, (2, 5), generator=torch.Generator().manual_seed(7))
    kwargs = dict(max_new_tokens=12, num_beams=3, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        plain = model.generate(prompt, use_cache=False, **kwargs)
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)


def test_generation_with_left_padding_matches_each_prompt_alone():
    """A left-padded batch generates what each prompt generates alone (padding is never attended)."""
    model = _model(seed=8, segment_length=16, mem_len=8, init_std=0.5)
    g = torch.Generator().manual_seed(9)
    short, long = torch.randint(2, VOCAB, (1, 6), generator=g), torch.randint(2, VOCAB, (1, 10), generator=g)
    batch = torch.full((2, 10), PAD)
    batch[0, 4:], batch[1] = short[0], long[0]
    mask = (torch.arange(10)[None] >= torch.tensor([[4], [0]])).long()
    kwargs = dict(max_new_tokens=15, do_sample=False, eos_token_id=None, pad_token_id=PAD)
    with torch.no_grad():
        both = model.generate(batch, attention_mask=mask, **kwargs)
        a = model.generate(short, **kwargs)
        b = model.generate(long, **kwargs)
    torch.testing.assert_close(both[0, 4:], a[0], rtol=0, atol=0)
    torch.testing.assert_close(both[1], b[0], rtol=0, atol=0)


def test_masked_memory_positions_are_never_attended():
    """mems_mask (returned when a call had padding) hides memory positions: their contents do not matter."""
    model = _model(LongctxTransfoXLModel)
    ids, mask = _ids(torch.Generator().manual_seed(10), T=8)  # row 1: last 6 positions are padding
    nxt = torch.randint(2, VOCAB, (2, 5), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        first = model(ids, attention_mask=mask)
        assert first.mems_mask is not None and first.mems_mask[1].sum() == 2
        a = model(nxt, mems=first.mems, mems_mask=first.mems_mask).last_hidden_state
        noisy = tuple(m.masked_fill(~first.mems_mask[:, :, None], 7.0) for m in first.mems)
        b = model(nxt, mems=noisy, mems_mask=first.mems_mask).last_hidden_state
        c = model(nxt, mems=noisy).last_hidden_state  # without the mask the garbage is attended
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[1], c[1])


def test_memory_recurrence_equals_one_pass_when_the_memory_holds_everything():
    """Segments of 8 with mem_len 16 on 24 tokens see exactly the keys a single 24-token segment sees (causal
    attention, memories = earlier layer inputs), so the outputs are equal: the relative positions across the
    memory boundary are right."""
    model = _model(segment_length=8, mem_len=16, init_std=0.3)
    ids, _ = _ids(torch.Generator().manual_seed(12), T=24, ragged=False)
    with torch.no_grad():
        in_segments = model(ids).logits
        model.config.segment_length = 24
        one_pass = model(ids).logits
    torch.testing.assert_close(in_segments, one_pass, rtol=1e-5, atol=1e-5)


def test_resize_token_embeddings_with_adaptive_clusters():
    """One table split into clusters (div_val=1): new ids join the last cluster, the adaptive softmax widens with
    the table, and the tied output table stays the input table. Per-cluster tables (div_val>1) and a size inside
    the clusters are refused by name."""
    model = _model(cutoffs=[40, 70], div_val=1)
    model.resize_token_embeddings(VOCAB + 9)
    ids = torch.tensor([[5, 45, 75, VOCAB + 8, 3]])
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert out.logits.shape == (1, 5, VOCAB + 9) and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(1, 5))  # still a distribution
    assert model.lm_head.out_layers[0].weight is model.transformer.word_emb.emb_layers[0].weight
    with pytest.raises(ValueError, match="div_val=2"):
        _model(cutoffs=[40], div_val=2, d_embed=32).resize_token_embeddings(VOCAB + 1)
    with pytest.raises(ValueError, match="last adaptive cluster starts at 70"):
        _model(cutoffs=[40, 70], div_val=1).resize_token_embeddings(60)


@pytest.mark.slow
def test_every_head_compiles_as_one_graph_and_still_refuses_bad_input():
    """`torch.compile(model, fullgraph=True)`: every head's eval forward is one graph (no graph break) and equals
    eager, right padding included; a training forward has no graph break either (`torch._dynamo.explain`). The
    value checks a graph cannot branch on become run-time assertions: ids outside the vocabulary and left padding
    still stop a compiled model with an error that names them."""
    for name, head in TRANSFO_XL.heads.items():
        config = make_config(**head.config_overrides)
        torch.manual_seed(0)
        model = head.model_class(config).eval()
        inputs = {k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(1)).items()}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["attention_mask"][-1, -5:] = 0  # the last row right-padded
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(getattr(compiled(**inputs), head.output), getattr(model(**inputs), head.output),
                                       rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
            bad = dict(inputs, input_ids=inputs["input_ids"].clone())
            bad["input_ids"][0, 3] = config.vocab_size + 2
            with pytest.raises(RuntimeError, match="outside the vocabulary"):
                compiled(**bad)
            left = dict(inputs, attention_mask=inputs["attention_mask"].flip(-1))
            with pytest.raises(RuntimeError, match="right padding only"):
                compiled(**left)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model.train())(**inputs)
        assert explained.graph_break_count == 0, (name, [str(b.reason)[:120] for b in explained.break_reasons])


@pytest.mark.parametrize("overrides", [{}, {"mem_len": 20}, {"mem_len": 3}, {"same_length": True, "mem_len": 5},
                                       {"mem_len": 0}, {"clamp_len": 4}])
def test_every_segment_at_once_equals_the_segment_loop(overrides):
    """The graph path (`_segments_at_once`: each layer over all segments as one batch, memory windows gathered
    from the sequence) gives the loop's outputs, hidden states, memories and memory mask, float64, at lengths
    shorter than a segment, a multiple of it and neither, one row right-padded."""
    torch.manual_seed(0)
    model = LongctxTransfoXLModel(make_config(**overrides)).double().eval()
    for T in (5, 8, 29, 33):
        ids = torch.randint(0, model.config.vocab_size, (2, T))
        mask = torch.ones(2, T, dtype=torch.long)
        mask[1, T - 3:] = 0
        real = mask.bool()
        with torch.no_grad():
            loop = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            at_once = model._segments_at_once(model.word_emb(ids), real, True)
        pairs = zip(loop.hidden_states + (loop.last_hidden_state,),
                    at_once.hidden_states + (at_once.last_hidden_state,))
        for a, b in pairs:
            torch.testing.assert_close(b[real], a[real], rtol=1e-12, atol=1e-12, msg=lambda m, T=T: f"T={T}: {m}")
        assert len(loop.mems) == len(at_once.mems)
        for a, b in zip(loop.mems, at_once.mems):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
        want_mask = loop.mems_mask if loop.mems_mask is not None else torch.ones_like(at_once.mems_mask)
        assert torch.equal(at_once.mems_mask, want_mask), T
