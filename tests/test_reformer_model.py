"""The shared model suite (tests/model_suite.py) for the Reformer variant, plus Reformer-specific behaviour:
reversible gradients, private randomness, any training length, generation cache, bf16, config errors."""

import logging
import warnings

import pytest
import torch
from model_suite import *  # noqa: F401,F403  (the shared tests, parametrized by the `variant` fixture)
from model_suite import Head, VariantSpec
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from transformers import (
    ReformerForMaskedLM,
    ReformerForQuestionAnswering,
    ReformerForSequenceClassification,
    ReformerModel,
    ReformerModelWithLMHead,
)

from hf_longctx import (
    LongctxReformerConfig,
    LongctxReformerForCausalLM,
    LongctxReformerForMaskedLM,
    LongctxReformerForQuestionAnswering,
    LongctxReformerForSequenceClassification,
    LongctxReformerModel,
)
from hf_longctx.models.reformer import generation_cache, modeling_reformer

VOCAB, PAD = 99, 0


def make_config(**overrides):
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, attention_head_size=8, attn_layers=["local", "lsh"],
        num_hashes=2, num_buckets=4, lsh_attn_chunk_length=4, local_attn_chunk_length=8, axial_pos_shape=[8, 8],
        axial_pos_embds_dim=[16, 16], max_position_embeddings=64, feed_forward_size=64, hidden_dropout_prob=0.0,
        local_attention_probs_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0, pad_token_id=PAD,
        eos_token_id=2, hash_seed=5,
    )
    kwargs.update(overrides)
    return LongctxReformerConfig(**kwargs)


def _ids(g, B=2, T=29, ragged=True):
    ids = torch.randint(3, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if ragged:  # the last row is right-padded by more than an LSH chunk
        ids[-1, T - 6 :] = PAD
        mask[-1, T - 6 :] = 0
    return ids, mask


def base_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask}


def lm_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def mlm_inputs(config, g):
    ids, mask = _ids(g)
    labels = torch.full_like(ids, -100)
    pick = torch.rand(ids.shape, generator=g) < 0.4
    pick[:, 1] = True
    labels[pick] = ids[pick]
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seqcls_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (ids.shape[0],), generator=g)}


def qa_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask,
            "start_positions": torch.tensor([9, 12]), "end_positions": torch.tensor([11, 15])}


def padded_inputs(config, g):
    """A row of 21 tokens alone, and inside a batch of 30 where it gets 9 padding tokens (more than an LSH chunk)."""
    ids, _ = _ids(g, B=1, T=21, ragged=False)
    other, _ = _ids(g, B=1, T=30, ragged=False)
    batch = torch.full((2, 30), PAD)
    batch[0, :21], batch[1] = ids[0], other[0]
    return {"input_ids": ids}, {"input_ids": batch, "attention_mask": (batch != PAD).long()}


# Training redraws the LSH rotations every forward (Reformer section 2), so one batch of 4 and two of 2 hash
# differently; the accumulation test then runs with LSH chunks as long as its inputs (shared-QK attention without
# hashing), which keeps the LSH layers' weights, self-masking and reversible path in the comparison.
TRAIN_OVERRIDES = {"lsh_attn_chunk_length": 32}

REFORMER = VariantSpec(
    name="reformer",
    make_config=make_config,
    heads={
        "base": Head(AutoModel, LongctxReformerModel, base_inputs, output="last_hidden_state",
                     reference_class=ReformerModel),
        "causal": Head(AutoModelForCausalLM, LongctxReformerForCausalLM, lm_inputs,
                       config_overrides={"is_decoder": True}, reference_class=ReformerModelWithLMHead),
        "mlm": Head(AutoModelForMaskedLM, LongctxReformerForMaskedLM, mlm_inputs,
                    reference_class=ReformerForMaskedLM),
        "seqcls": Head(AutoModelForSequenceClassification, LongctxReformerForSequenceClassification, seqcls_inputs,
                       reference_class=ReformerForSequenceClassification),
        "qa": Head(AutoModelForQuestionAnswering, LongctxReformerForQuestionAnswering, qa_inputs,
                   output="start_logits", reference_class=ReformerForQuestionAnswering),
    },
    padded_inputs=padded_inputs,
    bad_inputs=[
        ("id out of vocabulary", lambda c: {"input_ids": torch.tensor([[5, VOCAB + 3]])}, "vocabulary has 99"),
        ("mask shape", lambda c: {"input_ids": torch.ones(2, 5).long(), "attention_mask": torch.ones(2, 4)},
         "attention_mask must have shape"),
        ("mask values", lambda c: {"input_ids": torch.ones(1, 5).long(), "attention_mask": torch.full((1, 5), 2)},
         "only 0 and 1"),
        ("too long", lambda c: {"input_ids": torch.full((1, 65), 5)}, "at most 64"),
        ("no input", lambda c: {}, "exactly one of input_ids and inputs_embeds"),
        ("float ids", lambda c: {"input_ids": torch.ones(1, 3)}, "integer token ids"),
        ("hashes", lambda c: {"input_ids": torch.ones(1, 9).long(), "num_hashes": 0}, "num_hashes must be"),
        ("positions", lambda c: {"input_ids": torch.ones(1, 3).long(), "position_ids": torch.tensor([[0, 1, 64]])},
         "position_ids must be in"),
        ("attentions", lambda c: {"input_ids": torch.ones(1, 3).long(), "output_attentions": True},
         "output_attentions"),
        ("cache on an encoder", lambda c: {"input_ids": torch.ones(1, 3).long(), "use_cache": True}, "causal models"),
    ],
    train_overrides=TRAIN_OVERRIDES,
    # Training graph breaks: one eager draw per forward from the private training generator (private_rng.py: a
    # graph cannot hold a generator), counted in every frame it splits, two draws for the classifier head; eval
    # forwards are one graph.
    train_graph_breaks=5,
    cpu_attn_overrides={"flex_attention": {"num_hashes": 1}},
    bad_configs=[  # (id, config fields, what the ValueError must say)
        ("odd bucket count", dict(num_buckets=5), "num_buckets must be an even integer"),
        ("unknown layer kind", dict(attn_layers=["local", "global"]), "attn_layers\\[1\\] must be 'lsh' or 'local'"),
        ("no layers", dict(attn_layers=[]), "attn_layers is empty"),
        ("zero hashes", dict(num_hashes=0), "num_hashes must be a positive integer"),
        ("chunk length 0", dict(lsh_attn_chunk_length=0), "lsh_attn_chunk_length must be a positive integer"),
        ("negative chunks before", dict(local_num_chunks_before=-1), "local_num_chunks_before must be an integer >= 0"),
        ("pad id outside vocabulary", dict(pad_token_id=99), "pad_token_id must be an id in the vocabulary"),
        ("unused chunk field None", dict(attn_layers=["lsh"], lsh_attn_chunk_length=None),
         "lsh_attn_chunk_length must be a positive integer"),
        ("axial dims not the hidden size", dict(axial_pos_embds_dim=[16, 8]), "axial_pos_embds_dim"),
        ("dropout -0.1", dict(hidden_dropout_prob=-0.1), "hidden_dropout_prob must be in \\[0, 1\\)"),
        ("unknown activation", dict(hidden_act="gleu"), "hidden_act must be one of"),
    ],
)


@pytest.fixture
def variant():
    return REFORMER


# ---------------------------------------------------------------- Reformer-specific -----------------------------------

DROPOUT = dict(hidden_dropout_prob=0.2, local_attention_probs_dropout_prob=0.2, lsh_attention_probs_dropout_prob=0.2)


def _grads(model, ids, labels):
    model.zero_grad()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_reversible_gradients_equal_a_plain_backward_with_dropout(dtype, tol):
    config = make_config(is_decoder=True, chunk_size_feed_forward=5, attn_layers=["local", "lsh", "lsh"], **DROPOUT)
    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(config).to(dtype).train()
    ids, _ = _ids(torch.Generator().manual_seed(1), T=37, ragged=False)
    results = []
    for reversible in (True, False):
        model.config.reversible = reversible
        model.reformer._train_rng = None  # the same rotations and dropout seeds for both runs
        results.append(_grads(model, ids, ids))
    (loss_rev, g_rev), (loss_plain, g_plain) = results
    assert loss_rev == loss_plain
    assert g_rev.keys() == g_plain.keys() and len(g_rev) == len(list(model.parameters()))
    for name in g_rev:
        err = (g_rev[name] - g_plain[name]).norm() / g_plain[name].norm().clamp_min(1e-30)
        assert err <= tol, f"{name}: relative gradient error {err:.2e}"


def test_reversible_stack_gradients_reach_torch_autograd_grad():
    """The custom backward returns its gradients through autograd (transformers' calls .backward() inside)."""
    torch.manual_seed(0)
    model = LongctxReformerModel(make_config()).double().train()
    embeds = torch.randn(1, 20, 32, dtype=torch.float64, requires_grad=True)
    grads = []
    for reversible in (True, False):
        model.config.reversible = reversible
        model._train_rng = None
        out = model(inputs_embeds=embeds).last_hidden_state
        params = [p for n, p in model.named_parameters() if "word_embeddings" not in n]
        grads.append(torch.autograd.grad(out.pow(2).sum(), [embeds, *params]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_global_rng_untouched_by_forward_backward_and_generate():
    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(make_config(is_decoder=True, **DROPOUT)).train()
    ids, _ = _ids(torch.Generator().manual_seed(2), T=24, ragged=False)
    state = torch.get_rng_state()
    model(input_ids=ids, labels=ids).loss.backward()
    model.eval()
    model.generate(ids[:1, :10], max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_randomness_is_private_and_seeded():
    """Same seed, same losses; consecutive training forwards redraw rotations and dropout; eval is fixed."""
    config = make_config(is_decoder=True, **DROPOUT)
    ids, _ = _ids(torch.Generator().manual_seed(3), T=32, ragged=False)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = LongctxReformerForCausalLM(config).train()
        torch.manual_seed(123)  # the global RNG does not drive the model
        losses.append([model(input_ids=ids, labels=ids).loss.item() for _ in range(2)])
    assert losses[0] == losses[1]
    assert losses[0][0] != losses[0][1]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize("T", [13, 37, 64])
def test_trains_at_any_length_up_to_the_axial_product(T):
    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(make_config(is_decoder=True, **DROPOUT)).train()
    ids = torch.randint(3, VOCAB, (2, T), generator=torch.Generator().manual_seed(T))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_with_fast_ops_equals_model_with_dense_references(monkeypatch):
    """The layers wire the ops as the dense twins say: padding, causal, several rounds, both layer kinds."""
    from hf_longctx.models.reformer import naive as ops

    torch.manual_seed(0)
    config = make_config(is_decoder=True, num_hashes=3, attn_layers=["lsh", "local", "lsh"])
    model = LongctxReformerModel(config).double().eval()
    ids, mask = _ids(torch.Generator().manual_seed(4), T=27)
    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).last_hidden_state

        def dense_lsh(qk, v, buckets, chunk, before, after, causal, attention_mask, dropout_p, generator):
            return ops.naive_lsh_attention(qk, v, buckets, chunk, before, after, causal, attention_mask)

        def dense_local(q, k, v, chunk, before, after, causal, attention_mask, dropout_p, generator):
            return ops.naive_local_attention(q, k, v, chunk, before, after, causal, attention_mask)

        monkeypatch.setattr(modeling_reformer, "lsh_attention", dense_lsh)
        monkeypatch.setattr(modeling_reformer, "local_chunked_attention", dense_local)
        dense = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(fast[real], dense[real], rtol=1e-10, atol=1e-10)


def test_automatic_buckets_are_not_written_into_the_config():
    torch.manual_seed(0)
    model = LongctxReformerModel(make_config(num_buckets=None)).eval()
    with torch.no_grad():
        model(input_ids=torch.randint(3, VOCAB, (1, 40)))
    assert model.config.num_buckets is None


def test_return_dict_false_and_hidden_states():
    torch.manual_seed(0)
    config = make_config(return_dict=False, output_hidden_states=True)
    model = LongctxReformerForMaskedLM(config).eval()
    ids, mask = _ids(torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    assert isinstance(out, tuple)
    logits, hidden = out
    assert logits.shape == (2, 29, VOCAB) and len(hidden) == 3 and hidden[0].shape == (2, 29, 32)


def test_bf16_finite_with_all_padding_rows():
    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(make_config(is_decoder=True)).eval()
    ids, mask = _ids(torch.Generator().manual_seed(6), B=3, T=33)
    mask[2] = 0  # a row that is entirely padding
    ids[2] = PAD
    with torch.no_grad():
        exact = model(input_ids=ids, attention_mask=mask).logits
        low = model.to(torch.bfloat16)(input_ids=ids, attention_mask=mask).logits
    assert torch.isfinite(low).all()
    assert exact.shape == low.shape  # bf16 accuracy against transformers' bf16: tests/test_reformer_parity.py
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_local_only_model_generates_the_same_tokens_cached_and_uncached():
    torch.manual_seed(0)
    # 100 new tokens: past the cache buffers' first capacity (64), so they drop old chunks and shift in place
    config = make_config(is_decoder=True, attn_layers=["local", "local"], local_attn_chunk_length=4,
                         axial_pos_shape=[16, 8], max_position_embeddings=128)
    model = LongctxReformerForCausalLM(config).eval()
    prompt = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(7))
    kwargs = dict(max_new_tokens=100, do_sample=False, pad_token_id=PAD)
    cached = model.generate(prompt, use_cache=True, **kwargs)
    uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_left_padded_rows_keep_their_previous_chunk_and_generate_the_same_cached_and_uncached():
    """Local layers counted a row's real tokens to find its chunks, which assumed right padding: with left padding
    the last chunk lost the one before it, and cached and uncached greedy tokens differed (found in review)."""
    torch.manual_seed(0)
    config = make_config(is_decoder=True, attn_layers=["local", "local"], local_attn_chunk_length=4,
                         axial_pos_shape=[16, 8], max_position_embeddings=128)
    model = LongctxReformerForCausalLM(config).eval()
    ids = torch.randint(3, VOCAB, (1, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = PAD, 0  # left padding
    effect = {}
    for column in (13, 4):  # real tokens 10 (the chunk before the last token's, 12-13) and 1 (out of reach)
        changed = ids.clone()
        changed[0, column] = (changed[0, column] + 1) % VOCAB
        with torch.no_grad():
            last = [model(x, attention_mask=mask).logits[0, -1] for x in (ids, changed)]
        effect[column] = (last[0] - last[1]).abs().max()
    assert effect[13] > 1e-5 and effect[13] > 100 * effect[4], effect
    prompt = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    prompt_mask = torch.ones_like(prompt)
    prompt[1, :5], prompt_mask[1, :5] = PAD, 0
    kwargs = dict(attention_mask=prompt_mask, max_new_tokens=20, do_sample=False, pad_token_id=PAD)
    assert torch.equal(model.generate(prompt, use_cache=True, **kwargs),
                       model.generate(prompt, use_cache=False, **kwargs))


def test_global_rng_untouched_by_the_classifier_in_training():
    """The sequence classifier's head used nn.Dropout, which advanced the global RNG (found in review)."""
    model = LongctxReformerForSequenceClassification(make_config(num_labels=2, classifier_dropout=0.3,
                                                                 **DROPOUT)).train()
    ids, _ = _ids(torch.Generator().manual_seed(4), T=24, ragged=False)
    state = torch.get_rng_state()
    losses = [model(input_ids=ids, labels=torch.tensor([0, 1])).loss for _ in range(2)]
    losses[0].backward()
    assert torch.equal(torch.get_rng_state(), state)
    assert losses[0].item() != losses[1].item()  # the head's dropout is drawn anew each forward
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_cached_generation_with_lsh_short_prompt_and_automatic_buckets_is_quiet(caplog):
    """transformers crashes here (short prompt + cache + num_buckets=None) and warns at every step."""
    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(make_config(is_decoder=True, num_buckets=None)).eval()
    prompt = torch.randint(3, VOCAB, (1, 2), generator=torch.Generator().manual_seed(8))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        out = model.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=PAD)
    assert out.shape == (1, 32)
    assert not caught and not caplog.records, [str(w.message) for w in caught] + [r.message for r in caplog.records]


def test_lsh_cache_step_equals_the_dense_rule():
    """One decode step through the model's LSH cache (bucket index, in-place buffers) equals
    naive_lsh_decode_attention over every cached key."""
    from hf_longctx.models.reformer.naive import naive_lsh_decode_attention

    torch.manual_seed(0)
    model = LongctxReformerForCausalLM(make_config(is_decoder=True, attn_layers=["lsh"])).double().eval()
    ids = torch.randint(3, VOCAB, (2, 19), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        cache = model(input_ids=ids[:, :18], use_cache=True).cache
        before = cache.layers[0].view("k").clone()
        captured = {}
        original = generation_cache.lsh_decode_attention

        def spy(*args):
            captured["args"], captured["out"] = args, original(*args)
            return captured["out"]

        generation_cache.lsh_decode_attention = spy
        try:
            model(input_ids=ids[:, 18:], cache=cache, use_cache=True)
        finally:
            generation_cache.lsh_decode_attention = original
    q, q_pos, q_buckets, q_ends, keys, v, k_real, slots, chunk = captured["args"]
    state = cache.layers[0]
    assert state.end == 19 and torch.equal(keys[:, :, :18], before)  # the cache held every earlier key
    assert int(state.extra["counts"].sum()) == state.extra["counts"].shape[:3].numel() * 19  # all in the index
    dense_args = (q, q_pos, q_buckets, keys[:, :, :19], v[:, :, :19], torch.arange(19), state.view("buckets"),
                  k_real[:, :19], chunk)
    torch.testing.assert_close(captured["out"], naive_lsh_decode_attention(*dense_args), rtol=1e-12, atol=1e-12)


def test_config_errors_name_the_field_and_value():
    with pytest.raises(ValueError, match="num_buckets must be an even integer >= 2.*got 5"):
        make_config(num_buckets=5)
    with pytest.raises(ValueError, match="num_hashes must be a positive integer, got 0"):
        make_config(num_hashes=0)
    # An axial product that is not whole chunks (18 with chunks of 4 and 8) is accepted, as transformers does in
    # eval: our ops take any length, in training too.
    model = LongctxReformerModel(make_config(axial_pos_shape=[3, 6], max_position_embeddings=18)).train()
    assert model(input_ids=torch.randint(3, VOCAB, (1, 18))).last_hidden_state.shape == (1, 18, 64)
    with pytest.raises(ValueError, match="attn_layers\\[1\\] must be 'lsh' or 'local', got 'full'"):
        make_config(attn_layers=["lsh", "full"])
    with pytest.raises(ValueError, match="axial_pos_embds_dim"):
        make_config(axial_pos_embds_dim=[16, 8])
    with pytest.raises(ValueError, match="lsh_num_chunks_after"):
        make_config(is_decoder=True, lsh_num_chunks_after=1)
    with pytest.raises(ValueError, match="is_decoder=True"):
        LongctxReformerForCausalLM(make_config())
    with pytest.raises(ValueError, match="is_decoder=False"):
        LongctxReformerForMaskedLM(make_config(is_decoder=True))
    config = make_config()
    config.num_hashes = -1  # set after creation: the model re-checks
    with pytest.raises(ValueError, match="num_hashes"):
        LongctxReformerModel(config)


def test_plain_layers_with_checkpointing_replay_dropout_and_hashing():
    """reversible=False under activation checkpointing: the recomputation draws the same dropout and rotations."""
    config = make_config(is_decoder=True, reversible=False, **DROPOUT)
    ids, _ = _ids(torch.Generator().manual_seed(1), T=37, ragged=False)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LongctxReformerForCausalLM(config).double().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        grads.append(_grads(model, ids, ids)[1])
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_compiled_training_equals_eager_without_dropout_and_replays_with_it():
    """Compiled training (`torch.compile`, no reversible stack in the graph): without dropout the loss and every
    gradient equal eager's reversible training, the rotations being the private generator's same draws; with
    dropout 0.1 the masks come from counter streams on the generator's seeds (other bits than eager's), so a run
    replays from the same private seed, drops about 10% and differs from the run without dropout."""
    head = REFORMER.heads["mlm"]
    inputs = head.make_inputs(make_config(), torch.Generator().manual_seed(1))
    losses = {}
    for p in (0.0, 0.1):
        config = make_config(**head.config_overrides, hidden_dropout_prob=p, lsh_attention_probs_dropout_prob=p,
                             local_attention_probs_dropout_prob=p)
        torch.manual_seed(0)
        model = head.model_class(config).train()
        compiled = torch.compile(model, backend="aot_eager")
        results = []
        for run in (model, compiled, compiled):
            model.reformer.seed_private_rng(3)
            loss = run(**inputs).loss
            loss.backward()
            results.append((loss.detach(), [q.grad.clone() for q in model.parameters()]))
            model.zero_grad(set_to_none=False)
        (eager, eager_grads), (first, first_grads), (second, _) = results
        torch.testing.assert_close(second, first, rtol=0, atol=0)  # the same private seed, the same masks
        if p == 0.0:
            torch.testing.assert_close(first, eager, rtol=1e-6, atol=1e-6)
            for a, b in zip(first_grads, eager_grads):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        losses[p] = float(first)
    assert abs(losses[0.1] - losses[0.0]) > 1e-4
