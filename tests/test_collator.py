"""LongContextCollator: padding values, dtypes, lengths, sides, and a real Trainer run on ragged inputs."""

import pytest
import torch

import hf_longctx  # noqa: F401  (registers the Auto classes)
from hf_longctx import LongctxLongformerConfig, LongctxLongformerForSequenceClassification
from hf_longctx.collator import LongContextCollator

PAD = 1


def ragged_examples():
    return [
        {"input_ids": [0, 5, 6, 7, 2], "global_attention_mask": [1, 0, 0, 0, 0], "token_type_ids": [0] * 5, "label": 3},
        {"input_ids": [0, 8, 2], "global_attention_mask": [1, 0, 1], "token_type_ids": [0, 0, 0], "label": 0},
        {"input_ids": [0, 9, 10, 2], "global_attention_mask": [1, 1, 0, 0], "token_type_ids": [0] * 4, "label": 1},
    ]


def test_right_padding_values_and_dtypes():
    batch = LongContextCollator(pad_token_id=PAD)(ragged_examples())
    assert set(batch) == {"input_ids", "attention_mask", "global_attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7, 2], [0, 8, 2, PAD, PAD], [0, 9, 10, 2, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    assert batch["global_attention_mask"].tolist() == [[1, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0] * 5] * 3
    assert batch["labels"].tolist() == [3, 0, 1]  # 'label' renamed, scalars stacked
    assert all(t.dtype == torch.long for t in batch.values())


def test_left_padding_moves_every_field_together():
    batch = LongContextCollator(pad_token_id=PAD, padding_side="left")(ragged_examples())
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7, 2], [PAD, PAD, 0, 8, 2], [PAD, 0, 9, 10, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch["global_attention_mask"].tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 1], [0, 1, 1, 0, 0]]


@pytest.mark.parametrize("multiple, expected", [(None, 5), (1, 5), (4, 8), (5, 5), (16, 16)])
def test_pad_to_multiple_of(multiple, expected):
    batch = LongContextCollator(pad_token_id=PAD, pad_to_multiple_of=multiple)(ragged_examples())
    assert all(t.shape == (3, expected) for k, t in batch.items() if k != "labels")
    assert int(batch["attention_mask"].sum()) == 5 + 3 + 4  # padding never counts as a token


def test_token_labels_padded_with_ignore_index_and_float_labels_kept():
    collate = LongContextCollator(pad_token_id=PAD)
    batch = collate([{"input_ids": [0, 5, 2], "labels": [1, 2, 3]}, {"input_ids": [0, 2], "labels": [4, 5]}])
    assert batch["labels"].tolist() == [[1, 2, 3], [4, 5, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]  # built when missing
    regression = collate([{"input_ids": [0, 2], "label": 0.5}, {"input_ids": [0, 5, 2], "label": -1.25}])
    assert regression["labels"].dtype == torch.float32 and regression["labels"].tolist() == [0.5, -1.25]


def test_accepts_tensors_and_bool_masks():
    batch = LongContextCollator(pad_token_id=PAD)(
        [
            {"input_ids": torch.tensor([0, 5, 2]), "global_attention_mask": torch.tensor([True, False, False])},
            {"input_ids": torch.tensor([0, 2]), "global_attention_mask": torch.tensor([True, False])},
        ]
    )
    assert batch["global_attention_mask"].dtype == torch.long
    assert batch["global_attention_mask"].tolist() == [[1, 0, 0], [1, 0, 0]]


def test_extra_sequence_field_needs_a_pad_value():
    examples = [{"input_ids": [0, 5, 2], "position_ids": [2, 3, 4]}, {"input_ids": [0, 2], "position_ids": [2, 3]}]
    with pytest.raises(ValueError, match="pad_values"):
        LongContextCollator(pad_token_id=PAD)(examples)
    batch = LongContextCollator(pad_token_id=PAD, pad_values={"position_ids": PAD})(examples)
    assert batch["position_ids"].tolist() == [[2, 3, 4], [2, 3, PAD]]


@pytest.mark.parametrize(
    "examples, message",
    [
        ([{"input_ids": [0, 5, 2], "attention_mask": [1, 1]}], "attention_mask of example 0 has 2 entries"),
        ([{"input_ids": [0, 2], "work": "hamlet"}], "'work' of example 0 is not numeric"),
        ([{"input_ids": [0, 2], "label": 1}, {"input_ids": [0, 2]}], "needs the same fields"),
        ([{"input_ids": [0, 2], "label": 1, "labels": 1}], "both 'label' and 'labels'"),
        ([{"attention_mask": [1, 1]}], "no input_ids"),
        ([{"input_ids": [[0, 2]]}], "1-D"),
        ([{"input_ids": [0, 2], "global_attention_mask": [0.5, 1.0]}], "only labels may"),
        ([], "empty"),
    ],
)
def test_bad_examples_are_named(examples, message):
    with pytest.raises(ValueError, match=message):
        LongContextCollator(pad_token_id=PAD)(examples)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pad_token_id": None}, "pad_token_id"), ({"pad_token_id": 1, "pad_to_multiple_of": 0}, "pad_to_multiple_of"),
     ({"pad_token_id": 1, "padding_side": "middle"}, "padding_side")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongContextCollator(**kwargs)


def tiny_classifier():
    torch.manual_seed(0)
    config = LongctxLongformerConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attention_window=4, max_position_embeddings=40, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return LongctxLongformerForSequenceClassification(config).eval()


def ragged_rows(seed=1, lengths=(9, 17, 5, 30, 12)):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate(lengths):
        ids = [0] + torch.randint(3, 40, (n - 2,), generator=g).tolist() + [2]
        glob = [1] + [0] * (n - 1)
        glob[n // 2] = 1  # a second global token mid-sequence
        rows.append({"input_ids": ids, "global_attention_mask": glob, "label": i % 3})
    return rows


def unpadded(model, row):
    return model(input_ids=torch.tensor([row["input_ids"]]), global_attention_mask=torch.tensor([row["global_attention_mask"]]))


def test_trainer_predict_on_ragged_batches_matches_unpadded_forward(tmp_path):
    """Padded, batched predictions through Trainer equal one-example-at-a-time forwards without padding.

    Fails if any field is padded with the wrong value (e.g. a pad token that counts as real, a global pad).
    """
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    rows = ragged_rows()
    model = tiny_classifier()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to="none", use_cpu=True, disable_tqdm=True
    )
    collate = LongContextCollator(pad_token_id=model.config.pad_token_id, pad_to_multiple_of=8)
    batched = Trainer(model=model, args=args, data_collator=collate).predict(Dataset.from_list(rows)).predictions
    with torch.no_grad():
        single = torch.cat([unpadded(model, r).logits for r in rows])
    torch.testing.assert_close(torch.from_numpy(batched), single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_batch_gives_the_unpadded_hidden_states(padding_side):
    """Per-token outputs of the real tokens do not depend on the padding side (RoBERTa positions count real tokens).

    Sequence classification heads read position 0, which is padding on the left: they need right padding.
    """
    rows = ragged_rows(seed=3)
    model = tiny_classifier().longformer
    batch = LongContextCollator(pad_token_id=1, padding_side=padding_side)(rows)
    batch.pop("labels")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            real = hidden[i, :n] if padding_side == "right" else hidden[i, hidden.shape[1] - n:]
            torch.testing.assert_close(real, unpadded(model, row).last_hidden_state[0], rtol=1e-4, atol=1e-5)


def test_trainer_trains_with_the_collator(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(2)
    rows = [
        {"input_ids": [0] + torch.randint(3, 40, (n,), generator=g).tolist() + [2], "label": n % 3}
        for n in (3, 11, 6, 20, 8, 15)
    ]
    for r in rows:
        r["global_attention_mask"] = [1] + [0] * (len(r["input_ids"]) - 1)
    model = tiny_classifier().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=3, learning_rate=1e-2, report_to="none",
        use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, data_collator=LongContextCollator(pad_token_id=1),
                      train_dataset=Dataset.from_list(rows))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("global" in k for k in changed), "the global projections got no gradient: global mask lost?"
    assert any("classifier" in k for k in changed)
