"""The shared model suite (tests/model_suite.py) for the Longformer variant, plus Longformer-specific behaviour."""

import pytest
import torch
import transformers
from model_suite import *  # noqa: F401,F403  (the shared tests, parametrized by the `variant` fixture)
from model_suite import Head, VariantSpec
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from hf_longctx import (
    LongctxLongformerConfig,
    LongctxLongformerForCausalLM,
    LongctxLongformerForMaskedLM,
    LongctxLongformerForMultipleChoice,
    LongctxLongformerForQuestionAnswering,
    LongctxLongformerForSequenceClassification,
    LongctxLongformerForTokenClassification,
    LongctxLongformerModel,
)

VOCAB, PAD, SEP = 99, 1, 2


def make_config(**overrides):
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attention_window=[4, 8], max_position_embeddings=128, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=PAD, sep_token_id=SEP, bos_token_id=0, eos_token_id=SEP,
    )
    kwargs.update(overrides)
    return LongctxLongformerConfig(**kwargs)


def _ids(g, B=2, T=29, ragged=True):
    ids = torch.randint(3, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if ragged:  # the last row is right-padded
        ids[-1, T - 6 :] = PAD
        mask[-1, T - 6 :] = 0
    return ids, mask


def _globals(ids):
    g = torch.zeros_like(ids)
    g[:, 0] = 1
    g[0, 11] = 1  # rows with different numbers of global tokens
    return g


def base_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "global_attention_mask": _globals(ids)}


def mlm_inputs(config, g):
    inputs = base_inputs(config, g)
    labels = torch.full_like(inputs["input_ids"], -100)
    pick = torch.rand(labels.shape, generator=g) < 0.4
    pick[:, 1] = True
    labels[pick] = inputs["input_ids"][pick]
    labels[inputs["attention_mask"] == 0] = -100
    return {**inputs, "labels": labels}


def causal_inputs(config, g):
    ids, mask = _ids(g)
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def seqcls_inputs(config, g):
    ids, mask = _ids(g)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (ids.shape[0],), generator=g)}


def tokcls_inputs(config, g):
    inputs = base_inputs(config, g)
    labels = torch.randint(0, 2, inputs["input_ids"].shape, generator=g).masked_fill(inputs["attention_mask"] == 0, -100)
    return {**inputs, "labels": labels}


def qa_inputs(config, g):
    ids, mask = _ids(g)
    ids[0, 4] = SEP  # question of 4 tokens
    ids[1, 7] = SEP  # question of 7 tokens
    return {
        "input_ids": ids, "attention_mask": mask,
        "start_positions": torch.tensor([9, 12]), "end_positions": torch.tensor([11, 15]),
    }


def mc_inputs(config, g):
    ids, mask = _ids(g, B=6)
    ids[:, 14] = SEP
    ids[:, 15] = SEP
    return {
        "input_ids": ids.view(2, 3, -1), "attention_mask": mask.view(2, 3, -1),
        "labels": torch.randint(0, 3, (2,), generator=g),
    }


def padded_inputs(config, g):
    ids, _ = _ids(g, B=1, T=21, ragged=False)
    glob = torch.zeros_like(ids)
    glob[0, [0, 5]] = 1
    other, _ = _ids(g, B=1, T=30, ragged=False)
    batch = torch.full((2, 30), PAD)
    batch[0, :21], batch[1] = ids[0], other[0]
    mask = (batch != PAD).long()
    batch_glob = torch.zeros_like(batch)
    batch_glob[0, :21] = glob[0]
    batch_glob[1, 3] = 1
    alone = {"input_ids": ids, "global_attention_mask": glob}
    return alone, {"input_ids": batch, "attention_mask": mask, "global_attention_mask": batch_glob}


LONGFORMER = VariantSpec(
    name="longformer",
    make_config=make_config,
    heads={
        "base": Head(AutoModel, LongctxLongformerModel, base_inputs, output="last_hidden_state",
                     reference_class=transformers.LongformerModel),
        "mlm": Head(AutoModelForMaskedLM, LongctxLongformerForMaskedLM, mlm_inputs,
                    reference_class=transformers.LongformerForMaskedLM),
        "causal": Head(AutoModelForCausalLM, LongctxLongformerForCausalLM, causal_inputs,
                       config_overrides={"causal": True, "num_sink_tokens": 2}),
        "seqcls": Head(AutoModelForSequenceClassification, LongctxLongformerForSequenceClassification, seqcls_inputs,
                       reference_class=transformers.LongformerForSequenceClassification),
        "tokcls": Head(AutoModelForTokenClassification, LongctxLongformerForTokenClassification, tokcls_inputs,
                       reference_class=transformers.LongformerForTokenClassification),
        "qa": Head(AutoModelForQuestionAnswering, LongctxLongformerForQuestionAnswering, qa_inputs,
                   output="start_logits", reference_class=transformers.LongformerForQuestionAnswering),
        "mc": Head(AutoModelForMultipleChoice, LongctxLongformerForMultipleChoice, mc_inputs,
                   reference_class=transformers.LongformerForMultipleChoice),
    },
    padded_inputs=padded_inputs,
    bad_inputs=[
        ("id out of vocabulary", lambda c: {"input_ids": torch.tensor([[5, VOCAB + 3]])}, "vocabulary has 99"),
        ("negative id", lambda c: {"input_ids": torch.tensor([[5, -1]])}, "vocabulary"),
        ("mask shape", lambda c: {"input_ids": torch.ones(2, 5).long(), "attention_mask": torch.ones(2, 4)},
         "attention_mask must have shape"),
        ("global mask values", lambda c: {"input_ids": torch.ones(1, 5).long(),
                                          "global_attention_mask": torch.full((1, 5), 2)}, "only 0 and 1"),
        ("too long", lambda c: {"input_ids": torch.full((1, 200), 5)}, "at most 128"),
        ("no input", lambda c: {}, "exactly one of input_ids and inputs_embeds"),
        ("float ids", lambda c: {"input_ids": torch.ones(1, 3)}, "integer token ids"),
        ("token types", lambda c: {"input_ids": torch.ones(1, 3).long(), "token_type_ids": torch.ones(1, 3).long()},
         "type_vocab_size"),
        ("attentions", lambda c: {"input_ids": torch.ones(1, 3).long(), "output_attentions": True},
         "output_attentions"),
    ],
    # Graph breaks: given a global_attention_mask, the model reads its global-token count as a Python int
    # (global_token_index), since Inductor cannot yet generate code for a data-dependent size (an export holds it
    # as one); one read, counted in every frame it splits. Without one, and with the sequence-classification head's
    # own first-token mask or a causal model's sinks, training with dropout too is one graph (test below).
    inference_graph_breaks=5,
    train_graph_breaks=5,
    bad_configs=[  # (id, config fields, what the ValueError must say)
        ("odd window", dict(attention_window=5), "attention_window must be an even integer"),
        ("window per layer, wrong count", dict(attention_window=[4, 4, 4]), "attention_window has 3 entries"),
        ("dilation 0", dict(attention_dilation=0), "attention_dilation must be an integer >= 1"),
        ("heads do not divide hidden", dict(hidden_size=30), "hidden_size \\(30\\) must be a multiple"),
        ("zero layers", dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        ("float vocabulary", dict(vocab_size=99.0), "vocab_size must be a positive integer"),
        ("dropout 1.5", dict(hidden_dropout_prob=1.5), "hidden_dropout_prob must be in \\[0, 1\\)"),
        ("sinks without causal", dict(num_sink_tokens=2), "num_sink_tokens=2 needs causal=True"),
        ("no room for positions", dict(max_position_embeddings=2), "max_position_embeddings must be at least"),
        ("pad id outside vocabulary", dict(pad_token_id=99), "pad_token_id must be an id in the vocabulary"),
        ("no pad id", dict(pad_token_id=None), "pad_token_id must be an id in the vocabulary"),
        ("unknown activation", dict(hidden_act="gleu"), "hidden_act must be one of"),
    ],
)


@pytest.fixture
def variant():
    return LONGFORMER


# ---------------------------------------------------------------- Longformer-specific ---------------------------------


def _naive_attention(q, k, v, *, block_size=None, dropout_p=0.0, dropout_seed=None, **kwargs):
    """The dense twin in the model's place; it draws the dropout seed from torch's RNG exactly as the op does."""
    from hf_longctx.models.longformer import counter_dropout, naive

    if dropout_p > 0.0 and dropout_seed is None:
        dropout_seed = counter_dropout._draw_seed()
    return naive.naive_longformer_attention(q, k, v, dropout_p=dropout_p, dropout_seed=dropout_seed, **kwargs)


@pytest.mark.parametrize("causal", [False, True])
def test_model_with_fast_op_equals_model_with_dense_reference(monkeypatch, causal):
    """Per-layer windows of different sizes and dilation are wired through the model as the dense reference says."""
    from hf_longctx.models.longformer import modeling_longformer

    torch.manual_seed(0)
    config = make_config(attention_window=[4, 10], attention_dilation=[1, 2], causal=causal,
                         num_sink_tokens=2 if causal else 0)
    model = LongctxLongformerModel(config).double().eval()
    ids, mask = _ids(torch.Generator().manual_seed(0), T=41)
    kwargs = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": _globals(ids)}
    with torch.no_grad():
        fast = model(**kwargs).last_hidden_state
        monkeypatch.setattr(modeling_longformer, "longformer_attention", _naive_attention)
        dense = model(**kwargs).last_hidden_state
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)


def _train_step(model, kwargs, seed=0, autocast=False):
    """Loss and parameter gradients of one train-mode step (a fixed random read-out of the last hidden state)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(**kwargs).last_hidden_state
    readout = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    loss = (out.to(readout.dtype) * readout).sum()
    loss.backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("causal", [False, True])
def test_training_with_attention_dropout_equals_the_dense_reference(monkeypatch, causal):
    """Train mode with the checkpoints' dropout (attention and hidden): the fast op and the dense twin draw the same
    masks from the same torch seed, so the outputs and every parameter gradient agree in float64."""
    from hf_longctx.models.longformer import modeling_longformer

    config = make_config(attention_window=[4, 10], attention_dilation=[1, 2], causal=causal,
                         num_sink_tokens=2 if causal else 0, attention_probs_dropout_prob=0.3,
                         hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    model = LongctxLongformerModel(config).double().train()
    ids, mask = _ids(torch.Generator().manual_seed(0), T=41)
    kwargs = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": _globals(ids)}
    fast, fast_grads = _train_step(model, kwargs)
    monkeypatch.setattr(modeling_longformer, "longformer_attention", _naive_attention)
    dense, dense_grads = _train_step(model, kwargs)
    torch.testing.assert_close(fast, dense, rtol=1e-10, atol=1e-10)
    assert fast_grads.keys() == dense_grads.keys()
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], dense_grads[name], rtol=1e-9, atol=1e-10,
                                   msg=lambda m, n=name: f"grad {n}: {m}")
    other, _ = _train_step(model, kwargs, seed=1)
    assert not torch.allclose(fast, other), "another seed must draw other masks"


def test_gradient_checkpointing_with_dropout_replays_the_same_masks():
    """Checkpointing recomputes each layer in the backward; torch.utils.checkpoint restores the RNG state first, so
    the op draws the same seed and the gradients equal a plain backward's."""
    config = make_config(attention_probs_dropout_prob=0.2, hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    model = LongctxLongformerModel(config).double().train()
    ids, mask = _ids(torch.Generator().manual_seed(1), T=33)
    kwargs = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": _globals(ids)}
    plain, plain_grads = _train_step(model, kwargs)
    model.activation_checkpointing_enable()
    checkpointed, ckpt_grads = _train_step(model, kwargs)
    torch.testing.assert_close(checkpointed, plain, rtol=1e-12, atol=1e-12)
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=1e-10, atol=1e-12,
                                   msg=lambda m, n=name: f"grad {n}: {m}")


def test_bf16_autocast_training_with_dropout_within_twice_pytorch_error(monkeypatch):
    """bf16 autocast in train mode with dropout (the blocked path computes in float32 inside): its error against
    float32 is at most twice that of the dense twin under the same autocast, with the same masks."""
    from hf_longctx.models.longformer import modeling_longformer

    config = make_config(attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    model = LongctxLongformerModel(config).train()
    ids, mask = _ids(torch.Generator().manual_seed(2), T=40)
    kwargs = {"input_ids": ids, "attention_mask": mask, "global_attention_mask": _globals(ids)}
    exact, exact_grads = _train_step(model, kwargs)
    ours, ours_grads = _train_step(model, kwargs, autocast=True)
    monkeypatch.setattr(modeling_longformer, "longformer_attention", _naive_attention)
    plain, plain_grads = _train_step(model, kwargs, autocast=True)
    real = mask.bool()
    err_ours = (ours.float() - exact)[real].abs().max().item()
    err_plain = (plain.float() - exact)[real].abs().max().item()
    assert err_ours <= 2 * err_plain, f"bf16 error {err_ours:.3e} vs plain PyTorch bf16 {err_plain:.3e}"
    for name in exact_grads:
        assert torch.isfinite(ours_grads[name]).all(), name
        e_ours = (ours_grads[name] - exact_grads[name]).norm().item()
        e_plain = (plain_grads[name] - exact_grads[name]).norm().item()
        assert e_ours <= 2 * e_plain + 1e-6 * exact_grads[name].norm().item(), (name, e_ours, e_plain)


def test_sequence_classification_makes_the_first_token_global_by_default():
    torch.manual_seed(0)
    model = LongctxLongformerForSequenceClassification(make_config()).eval()
    ids, mask = _ids(torch.Generator().manual_seed(1))
    first = torch.zeros_like(ids)
    first[:, 0] = 1
    with torch.no_grad():
        default = model(input_ids=ids, attention_mask=mask).logits
        explicit = model(input_ids=ids, attention_mask=mask, global_attention_mask=first).logits
        none_global = model(input_ids=ids, attention_mask=mask, global_attention_mask=torch.zeros_like(ids)).logits
    torch.testing.assert_close(default, explicit)
    assert not torch.allclose(default, none_global)


def test_a_known_bound_on_global_tokens_changes_nothing_and_refuses_a_row_over_it():
    """`global_tokens_at_most` (what lets a compiled graph hold the global slots without reading their count): the
    same outputs eagerly and compiled, and a row with more global tokens than the bound is refused by name."""
    torch.manual_seed(0)
    model = LongctxLongformerModel(make_config()).eval()
    ids, mask = _ids(torch.Generator().manual_seed(2))
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    glob[0, 3] = 1  # two global tokens in row 0, one in row 1
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        bounded = model(input_ids=ids, attention_mask=mask, global_attention_mask=glob,
                        global_tokens_at_most=3).last_hidden_state
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")(input_ids=ids, attention_mask=mask,
                                                            global_attention_mask=glob,
                                                            global_tokens_at_most=3).last_hidden_state
    real = mask.bool()[..., None]
    torch.testing.assert_close(bounded * real, want * real)
    torch.testing.assert_close(compiled * real, want * real, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(input_ids=ids, attention_mask=mask, global_attention_mask=glob,
                                             global_tokens_at_most=3)
    assert explained.graph_break_count == 0, explained.break_reasons
    with pytest.raises(ValueError, match="more global tokens in a row than the 1 this model was told to expect"):
        model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, global_tokens_at_most=1)


def test_question_answering_without_a_separator_names_the_rows():
    torch.manual_seed(0)
    model = LongctxLongformerForQuestionAnswering(make_config()).eval()
    ids, mask = _ids(torch.Generator().manual_seed(2), B=3)
    ids[ids == SEP] = 5
    ids[1, 6] = SEP  # only row 1 has a question
    with pytest.raises(ValueError, match=r"rows \[0, 2\] have no separator"):
        model(input_ids=ids, attention_mask=mask)
    model.config.sep_token_id = None
    with pytest.raises(ValueError, match="sep_token_id, which is None"):
        model(input_ids=ids, attention_mask=mask)
    glob = torch.zeros_like(ids)
    glob[:, :3] = 1
    assert model(input_ids=ids, attention_mask=mask, global_attention_mask=glob).start_logits.shape == ids.shape


def test_inputs_embeds_equal_input_ids():
    torch.manual_seed(0)
    model = LongctxLongformerModel(make_config()).eval()
    ids = torch.randint(3, VOCAB, (2, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(input_ids=ids).last_hidden_state
        b = model(inputs_embeds=model.embeddings.word_embeddings(ids)).last_hidden_state
    torch.testing.assert_close(a, b)


def test_config_errors_name_the_field_and_value():
    with pytest.raises(ValueError, match="attention_window must be an even integer >= 2 per layer, got 5"):
        make_config(attention_window=5)
    with pytest.raises(ValueError, match="attention_window has 3 entries but num_hidden_layers is 2"):
        make_config(attention_window=[4, 4, 4])
    with pytest.raises(ValueError, match="attention_dilation must be an integer >= 1 per layer, got 0"):
        make_config(attention_dilation=0)
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"):
        make_config(hidden_size=30)
    with pytest.raises(ValueError, match="num_sink_tokens=2 needs causal=True"):
        make_config(num_sink_tokens=2)
    config = make_config()
    config.attention_window = 3  # set after creation: the model re-checks
    with pytest.raises(ValueError, match="attention_window"):
        LongctxLongformerModel(config)


@pytest.mark.parametrize("causal", [False, True])
def test_eager_attention_trains_as_the_default_with_the_same_dropout(causal):
    """`attn_implementation="eager"` (the dense twin) in training, float64: with attention dropout on and the same
    torch seed, the output and every gradient equal the default fused path's (both draw the counter-based mask's seed from
    torch's RNG), global tokens and padding included."""
    config = make_config(attention_probs_dropout_prob=0.2, causal=causal)
    g = torch.Generator().manual_seed(5)
    ids, mask = _ids(g)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if not causal:
        inputs["global_attention_mask"] = torch.zeros_like(mask)
        inputs["global_attention_mask"][:, [0, 7]] = 1
    grads = {}
    for name in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = LongctxLongformerModel(config).double().train()
        model.set_attn_implementation(name)
        torch.manual_seed(1)
        out = model(**inputs).last_hidden_state
        (out * mask[..., None]).square().sum().backward()
        grads[name] = (out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(grads["eager"][0], grads["sdpa"][0], rtol=1e-9, atol=1e-9)
    assert grads["eager"][1].keys() == grads["sdpa"][1].keys()
    for n, grad in grads["sdpa"][1].items():
        torch.testing.assert_close(grads["eager"][1][n], grad, rtol=1e-8, atol=1e-9, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.slow
def test_compiled_training_with_dropout_is_one_graph_and_equals_eager():
    """Compiled training with the checkpoints' dropout 0.1: no graph break where the model knows its global tokens
    (none given; the classifier's first token; a causal model's sinks), and the same loss and gradients as eager:
    the graph computes the counter-based masks in tensor ops from seeds it draws from torch's RNG, the draws eager
    makes (Inductor's `fallback_random` makes its random numbers eager's)."""
    import torch._inductor.config as inductor_config

    for name in ("mlm", "seqcls", "causal"):
        head = LONGFORMER.heads[name]
        config = LONGFORMER.make_config(**head.config_overrides, hidden_dropout_prob=0.1,
                                        attention_probs_dropout_prob=0.1)
        torch.manual_seed(0)
        model = head.model_class(config).train()
        inputs = head.make_inputs(config, torch.Generator().manual_seed(1))
        inputs.pop("global_attention_mask", None)
        torch._dynamo.reset()
        assert torch._dynamo.explain(model)(**inputs).graph_break_count == 0, name
        results = []
        for run in (model, torch.compile(model, backend="aot_eager")):
            torch.manual_seed(5)
            with inductor_config.patch(fallback_random=True):
                loss = run(**inputs).loss
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
            model.zero_grad(set_to_none=False)
        (eager, eager_grads), (compiled, compiled_grads) = results
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6, msg=lambda m, n=name: f"{n} loss: {m}")
        for a, b in zip(compiled_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n} gradients: {m}")
        torch.manual_seed(6)
        assert abs(float(model(**inputs).loss) - float(eager)) > 1e-4, "another seed drops other units"
