"""The shared model suite (tests/model_suite.py) for the Longformer variant, plus Longformer-specific behaviour."""

import pytest
import torch
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
        "base": Head(AutoModel, LongctxLongformerModel, base_inputs, output="last_hidden_state"),
        "mlm": Head(AutoModelForMaskedLM, LongctxLongformerForMaskedLM, mlm_inputs),
        "causal": Head(AutoModelForCausalLM, LongctxLongformerForCausalLM, causal_inputs,
                       config_overrides={"causal": True, "num_sink_tokens": 2}),
        "seqcls": Head(AutoModelForSequenceClassification, LongctxLongformerForSequenceClassification, seqcls_inputs),
        "tokcls": Head(AutoModelForTokenClassification, LongctxLongformerForTokenClassification, tokcls_inputs),
        "qa": Head(AutoModelForQuestionAnswering, LongctxLongformerForQuestionAnswering, qa_inputs,
                   output="start_logits"),
        "mc": Head(AutoModelForMultipleChoice, LongctxLongformerForMultipleChoice, mc_inputs),
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
)


@pytest.fixture
def variant():
    return LONGFORMER
