"""Longformer with the standard Trainer: global_attention_mask survives column removal; evaluate/predict work."""

import datasets
import numpy as np
import torch
from test_longformer_model import VOCAB, make_config
from transformers import Trainer, TrainingArguments

from hf_longctx import LongctxLongformerForCausalLM, LongctxLongformerForSequenceClassification


def _args(tmp_path, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0, **kw,
    )


def _dataset(n=4, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, T), generator=g)
    glob = torch.zeros(n, T, dtype=torch.long)
    glob[:, 0] = 1
    glob[:, 17] = 1  # token 17 is global: changes what token 0 (the classifier's input) sees
    return datasets.Dataset.from_dict({
        "input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
        "global_attention_mask": glob.tolist(), "labels": [i % 2 for i in range(n)],
        "text": ["an unused column"] * n,
    })


def test_global_attention_mask_survives_remove_unused_columns(tmp_path):
    torch.manual_seed(0)
    model = LongctxLongformerForSequenceClassification(make_config()).eval()
    data = _dataset()
    trainer = Trainer(model=model, args=_args(tmp_path, remove_unused_columns=True), eval_dataset=data)
    predicted = trainer.predict(data).predictions
    with torch.no_grad():
        kwargs = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask")}
        with_glob = model(**kwargs, global_attention_mask=torch.tensor(data["global_attention_mask"])).logits
        without = model(**kwargs).logits  # default: only token 0 global
    assert not torch.allclose(with_glob, without), "the test needs the global mask to matter"
    np.testing.assert_allclose(predicted, with_glob.numpy(), rtol=1e-5, atol=1e-6)


def test_causal_lm_evaluate_and_predict(tmp_path):
    torch.manual_seed(0)
    model = LongctxLongformerForCausalLM(make_config(causal=True, num_sink_tokens=1)).eval()
    ids = torch.randint(3, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    data = datasets.Dataset.from_dict({
        "input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": ids.tolist(),
    })
    trainer = Trainer(model=model, args=_args(tmp_path), eval_dataset=data)
    metrics = trainer.evaluate()
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.item()
    assert abs(metrics["eval_loss"] - loss) < 1e-4, (metrics, loss)
    predictions = trainer.predict(data).predictions
    assert predictions.shape == (4, 16, VOCAB)
