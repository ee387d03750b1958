"""`hf-longctx train --resume` continues a run exactly, and --overwrite / --resume refuse what they must not touch."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_longctx.train import RUN_FILE, TrainError, train

RUN = dict(preset="tiny", max_length=96, max_steps=4, batch_size=2, learning_rate=1e-3, max_train_samples=8,
           max_eval_samples=4, log=lambda message: None)
EVERY_2_STEPS = {"save_strategy": "steps", "save_steps": 2, "save_total_limit": None, "eval_strategy": "no",
                 "disable_tqdm": True}


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, one_thread):
    whole = tmp_path / "whole"
    train("kernel-docs", whole, overrides=EVERY_2_STEPS, **RUN)
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]

    # An interruption after step 2: the same folder without the later checkpoint and without model/.
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-4")
    shutil.rmtree(cut / "model")
    summary = train("kernel-docs", cut, overrides=EVERY_2_STEPS, resume=True, **RUN)

    assert summary["resumed_from"].endswith("checkpoint-2")
    expected, resumed = weights(whole), weights(cut)
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-6, atol=1e-7, msg=name)
    # Steps 3 and 4 moved the weights: a resume that skipped training would not match the whole run.
    at_step_2 = load_file(str(whole / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert any(not torch.equal(at_step_2[name], expected[name]) for name in expected)

    # And the weights come from the checkpoint: a fresh start with the same seed would also match the whole run,
    # so resume from a checkpoint whose weights were nudged and see the result move.
    nudged = tmp_path / "nudged"
    shutil.copytree(cut, nudged)
    shutil.rmtree(nudged / "model")
    shutil.rmtree(nudged / "checkpoints" / "checkpoint-4")
    save_file({name: t + 0.01 for name, t in at_step_2.items()},
              str(nudged / "checkpoints" / "checkpoint-2" / "model.safetensors"), metadata={"format": "pt"})
    train("kernel-docs", nudged, overrides=EVERY_2_STEPS, resume=True, **RUN)
    moved = weights(nudged)
    assert max(float((moved[name] - expected[name]).abs().max()) for name in expected) > 5e-3


def test_resume_refuses_a_folder_without_a_run_or_checkpoint_or_with_other_arguments(tmp_path, one_thread):
    with pytest.raises(TrainError, match="nothing to resume.*no hf_longctx_run.json"):
        train("kernel-docs", tmp_path / "empty", resume=True, **RUN)

    run = tmp_path / "run"
    no_saves = {"save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True}
    train("kernel-docs", run, overrides=no_saves, **{**RUN, "max_steps": 1})
    with pytest.raises(TrainError, match="no checkpoints/checkpoint-"):
        train("kernel-docs", run, overrides=no_saves, resume=True, **{**RUN, "max_steps": 1})
    with pytest.raises(TrainError, match="preset 'tiny' -> 'small'"):
        train("kernel-docs", run, overrides=no_saves, resume=True, **{**RUN, "max_steps": 1, "preset": "small"})
    with pytest.raises(TrainError, match="pass one of them"):
        train("kernel-docs", run, overrides=no_saves, resume=True, overwrite=True, **RUN)


def test_overwrite_deletes_only_a_folder_a_train_run_wrote(tmp_path, one_thread):
    mine = tmp_path / "my_notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(TrainError, match="not an earlier hf-longctx run folder"):
        train("kernel-docs", mine, overwrite=True, **RUN)
    assert (mine / "thesis.tex").read_text() == "years of work"

    run = tmp_path / "run"
    no_saves = {"save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True}
    train("kernel-docs", run, overrides=no_saves, **{**RUN, "max_steps": 1})
    assert json.loads((run / RUN_FILE).read_text())["preset"] == "tiny"
    # A file the user put into the run folder is never deleted with it.
    (run / "notes.txt").write_text("my observations")
    with pytest.raises(TrainError, match="did not write \\(notes.txt\\)"):
        train("kernel-docs", run, overrides=no_saves, overwrite=True, **{**RUN, "max_steps": 1})
    assert (run / "notes.txt").read_text() == "my observations"
    (run / "notes.txt").unlink()
    train("kernel-docs", run, overrides=no_saves, overwrite=True, **{**RUN, "max_steps": 1})
    assert (run / "model" / "config.json").is_file()


def test_init_from_a_masked_lm_gets_the_tasks_labels_and_keeps_its_encoder(tmp_path, one_thread):
    from hf_longctx import LongctxLongformerForMaskedLM
    from hf_longctx.tasks import PRESETS, TASKS, longformer_config

    task = TASKS["kernel-docs"]
    config = longformer_config(PRESETS["tiny"], task.tokenizer(), 96, task, None, 0.0)
    start = tmp_path / "mlm"
    LongctxLongformerForMaskedLM(config).save_pretrained(start)
    encoder = {k: v for k, v in load_file(str(start / "model.safetensors")).items() if ".encoder." in k}

    run = tmp_path / "run"
    no_saves = {"save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True}
    train("kernel-docs", run, init_from=start, overrides=no_saves, **{**RUN, "max_steps": 1, "learning_rate": 0.0})
    trained = load_file(str(run / "model" / "model.safetensors"))
    for name, weight in encoder.items():  # learning rate 0: the encoder is exactly the masked LM's
        torch.testing.assert_close(trained[name], weight, rtol=0, atol=0, msg=name)
    labels = json.loads((run / "model" / "config.json").read_text())["id2label"]
    assert list(labels.values()) == ["admin-guide", "devicetree", "driver-api", "filesystems", "hwmon", "networking"]

    with pytest.raises(TrainError, match="--max-length 512 is longer than the 96 tokens"):
        train("kernel-docs", tmp_path / "long", init_from=start, overrides=no_saves, **{**RUN, "max_length": 512})
    with pytest.raises(TrainError, match="is not a model folder"):
        train("kernel-docs", tmp_path / "none", init_from=tmp_path / "nowhere", overrides=no_saves, **RUN)
    assert not (tmp_path / "long").exists() and not (tmp_path / "none").exists()  # refused before writing


def test_init_from_a_classifier_of_other_labels_gets_a_new_head(tmp_path, one_thread):
    from hf_longctx import LongctxLongformerForSequenceClassification
    from hf_longctx.tasks import PRESETS, TASKS, longformer_config

    task = TASKS["kernel-docs"]
    other = list("abcdef")  # six labels, like kernel-docs, but not its six
    config = longformer_config(PRESETS["tiny"], task.tokenizer(), 96, task, other, 0.0)
    start = tmp_path / "clf"
    LongctxLongformerForSequenceClassification(config).save_pretrained(start)
    before = load_file(str(start / "model.safetensors"))

    messages = []
    no_saves = {"save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True}
    train("kernel-docs", tmp_path / "run", init_from=start, overrides=no_saves,
          **{**RUN, "max_steps": 1, "learning_rate": 0.0, "log": messages.append})
    after = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert any("classifier head is re-initialised" in m for m in messages)
    assert not torch.equal(after["classifier.out_proj.weight"], before["classifier.out_proj.weight"])
    torch.testing.assert_close(after["longformer.encoder.layer.0.output.dense.weight"],
                               before["longformer.encoder.layer.0.output.dense.weight"], rtol=0, atol=0)


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, monkeypatch):
    """A run refused after its folder was made (a refused --init-from) must not leave hf_longctx_run.json
    behind: whatever stops a fresh run before training starts, its folder goes with it; an earlier run's is kept."""
    import transformers

    def broken(self, *args, **kwargs):
        raise ValueError("a Trainer that cannot start")

    monkeypatch.setattr(transformers.Trainer, "__init__", broken)
    with pytest.raises(ValueError, match="cannot start"):
        train("kernel-docs", tmp_path / "fresh", **{**RUN, "max_steps": 1})
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()  # a folder the user made stays, empty as it was
    with pytest.raises(ValueError, match="cannot start"):
        train("kernel-docs", tmp_path / "empty", **{**RUN, "max_steps": 1})
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_folder_refusals_come_before_any_data_is_tokenized(tmp_path, monkeypatch):
    """A --resume whose arguments differ and a folder that already exists were refused only after the task's data
    was tokenized (seconds to minutes); both are refused before, and nothing is written."""
    import hf_longctx.train as train_module

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_FILE).write_text(json.dumps({"task": "kernel-docs", "preset": "small"}))
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    before = sorted(p.name for p in run.rglob("*"))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the data was tokenized before the folder was checked")

    monkeypatch.setattr(train_module, "load_task", no_tokenizing)
    with pytest.raises(TrainError, match="these differ: .*preset 'small' -> 'tiny'"):
        train("kernel-docs", run, resume=True, **RUN)
    with pytest.raises(TrainError, match="already exists and is not empty"):
        train("kernel-docs", run, **RUN)
    assert sorted(p.name for p in run.rglob("*")) == before
