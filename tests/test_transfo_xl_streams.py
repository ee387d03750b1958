"""Stream training (hf_longctx.streams): the corpus layout, and memories carried across optimizer steps."""

import pytest
import torch
from transformers import TrainingArguments

from hf_longctx import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM
from hf_longctx.streams import StreamDataset, StreamTrainer

B, L = 2, 8


def test_batch_t_continues_batch_t_minus_1_row_by_row():
    ids = torch.arange(1000, 1000 + 2 * 37 + 1)
    data = StreamDataset(ids, n_streams=B, segment_length=L)
    assert len(data) == 5 * B  # 37 positions per stream: 4 segments of 8 and one of 5
    for b in range(B):
        stream = torch.cat([data[t * B + b]["input_ids"] for t in range(5)])
        torch.testing.assert_close(stream, ids[b * 37:(b + 1) * 37])
        targets = torch.cat([data[t * B + b]["shift_labels"] for t in range(5)])
        torch.testing.assert_close(targets, ids[b * 37 + 1:(b + 1) * 37 + 1])  # crosses segment boundaries
    assert data[len(data) - 1]["input_ids"].shape == (5,)
    with pytest.raises(ValueError, match="n_streams must be a positive integer"):
        StreamDataset(ids, n_streams=0, segment_length=L)


def _model():
    torch.manual_seed(0)
    config = LongctxTransfoXLConfig(vocab_size=50, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2,
                                    segment_length=L, mem_len=L, dropout=0.0, init_std=0.3)
    return LongctxTransfoXLForCausalLM(config)


def _manual_losses(model, data, carry: bool):
    losses, mems = [], None
    with torch.no_grad():
        for t in range(len(data) // B):
            rows = [data[t * B + b] for b in range(B)]
            batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
            out = model(**batch, mems=mems if carry else None)
            losses.append(out.loss.item())
            mems = out.mems
    return losses


def test_stream_trainer_carries_memories_across_steps_and_resets_for_evaluation(tmp_path, one_thread):
    g = torch.Generator().manual_seed(1)
    train = StreamDataset(torch.randint(0, 50, (B * 40 + 1,), generator=g), B, L)
    evaluation = StreamDataset(torch.randint(0, 50, (B * 24 + 1,), generator=g), B, L)
    model = _model()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=B, per_device_eval_batch_size=B, max_steps=5,
        learning_rate=0.0, optim="sgd", lr_scheduler_type="constant", logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    trainer = StreamTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    logged = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    model.eval()
    carried, fresh = _manual_losses(model, train, carry=True), _manual_losses(model, train, carry=False)
    assert max(abs(a - b) for a, b in zip(carried[1:], fresh[1:])) > 1e-3  # memories matter for these losses
    assert logged == pytest.approx(carried, abs=1e-4)
    kept = trainer.train_mems
    result = trainer.evaluate()
    expected = _manual_losses(model, evaluation, carry=True)
    assert result["eval_loss"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert trainer.train_mems is kept  # evaluation did not touch the training memories


def test_stream_trainer_refuses_a_batch_size_other_than_the_stream_count(tmp_path):
    train = StreamDataset(torch.randint(0, 50, (3 * 16 + 1,)), 3, L)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, report_to=[],
                             use_cpu=True, save_strategy="no")
    trainer = StreamTrainer(model=_model(), args=args, train_dataset=train)
    with pytest.raises(ValueError, match=r"per_device_train_batch_size \(2\) must equal the number of streams \(3\)"):
        trainer.train()


@pytest.mark.parametrize("eval_batch", [8, 3])
def test_stream_trainer_refuses_an_eval_batch_size_other_than_the_stream_count(tmp_path, eval_batch):
    """With 4 streams, transformers' default eval batch of 8 put two segments of each stream in one batch (a
    slightly wrong eval loss, no error); 3 failed with a message about rows following rows."""
    g = torch.Generator().manual_seed(2)
    evaluation = StreamDataset(torch.randint(0, 50, (4 * 24 + 1,), generator=g), 4, L)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=eval_batch, report_to=[],
                             use_cpu=True)
    trainer = StreamTrainer(model=_model(), args=args, eval_dataset=evaluation)
    with pytest.raises(ValueError, match=rf"per_device_eval_batch_size \({eval_batch}\) must equal the number of "
                                         r"streams \(4\)"):
        trainer.evaluate()


@pytest.mark.slow
def test_the_memory_efficacy_script_runs(tmp_path):
    """benchmarks/transfo_xl_memory.py --quick: stream training with and without memory, evaluation table."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "transfo_xl_memory.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 0 | 32 | 128, clamp 63 |" in done.stdout and "| 0 | 0 | 0 |" in done.stdout
