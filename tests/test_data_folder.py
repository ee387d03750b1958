"""Your own documents: `hf-longctx train --data-dir` reads a folder of JSON lines, and bad data gets a clear message."""

import json
import shutil
import types
from pathlib import Path

import pytest

from hf_longctx.__main__ import main
from hf_longctx.data import files
from hf_longctx.data.files import DataError, load_classification_folder, read_packaged_jsonl
from hf_longctx.data.kernel_docs import read_records

FAST = ["--preset", "tiny", "--max-length", "96", "--max-steps", "2", "--batch-size", "2", "--set", "disable_tqdm=true",
        "--set", "eval_strategy=no", "--set", "save_strategy=no"]


def write_split(folder: Path, split: str, rows) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 / 4 / 4 real kernel documents of two topics, labels as strings, like a user's own export."""
    out = tmp_path_factory.mktemp("docs")
    records = [r for r in read_records() if r["label"] in ("hwmon", "networking")]
    for split, n in (("train", 6), ("validation", 2), ("test", 2)):
        rows = [r for r in records if r["split"] == split]
        picked = [r for r in rows if r["label"] == "hwmon"][:n] + [r for r in rows if r["label"] == "networking"][:n]
        write_split(out, split, [{"text": r["text"], "label": r["label"]} for r in picked])
    return out


def test_train_and_evaluate_on_a_folder(folder, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(folder), "--output-dir", str(run), *FAST]) == 0
    summary = json.loads((run / "model" / "hf_longctx_summary.json").read_text())
    assert {r["dataset"] for r in summary["results"]} == {folder.name}
    assert f"--data-dir {folder} " in summary["training"]
    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert model.config.id2label == {0: "hwmon", 1: "networking"}  # sorted names of train.jsonl's labels
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--data-dir", str(folder), "--split", "test"]) == 0
    # The saved model, its saved tokenizer and the folder's labels in the model's order give what training measured.
    accuracy = {r["metric"]: r["value"] for r in summary["results"]}["accuracy"]
    assert round(json.loads(capsys.readouterr().out)["test_accuracy"], 4) == accuracy
    # The card's table names the folder, but its YAML must not claim it as a Hub data set.
    assert main(["export", str(run / "model"), str(tmp_path / "hub")]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"| {folder.name} | test | accuracy |" in card and folder.name not in card.split("---")[1]

    # Editing the data and resuming would mix two data sets: refused.
    with open(folder / "train.jsonl", "a") as f:
        f.write(json.dumps({"text": "one more document", "label": "hwmon"}) + "\n")
    try:
        assert main(["train", "--data-dir", str(folder), "--output-dir", str(run), "--resume", *FAST]) == 1
        assert "data_sha256" in capsys.readouterr().err
    finally:
        lines = (folder / "train.jsonl").read_text().splitlines(keepends=True)
        (folder / "train.jsonl").write_text("".join(lines[:-1]))


def test_a_bad_folder_is_named_and_nothing_is_written(folder, tmp_path, capsys):
    def train_on(data_dir, *extra):
        code = main(["train", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "run"), *FAST, *extra])
        return code, capsys.readouterr().err

    code, err = train_on(tmp_path / "nowhere")
    assert code == 1 and "is not a folder" in err and "train.jsonl, validation.jsonl and test.jsonl" in err

    broken = tmp_path / "broken"
    write_split(broken, "train", [{"text": "a b c", "label": "x"}, {"text": "d e f", "label": "y"}])
    write_split(broken, "validation", [{"text": "a", "label": "x"}])
    code, err = train_on(broken)
    assert code == 1 and "has no test.jsonl" in err

    (broken / "test.jsonl").write_text('{"text": "fine", "label": "x"}\n{"text": "cut off\n')
    code, err = train_on(broken)
    assert code == 1 and f"{broken / 'test.jsonl'}:2: not a JSON object" in err

    write_split(broken, "test", [{"text": "fine", "label": "x"}, {"body": "no text key", "label": "x"}])
    code, err = train_on(broken)
    assert code == 1 and f"{broken / 'test.jsonl'}:2: needs the keys" in err

    write_split(broken, "test", [{"text": "fine", "label": "z"}])
    code, err = train_on(broken)
    assert code == 1 and "has labels ['z'] that are not among ['x', 'y']" in err

    write_split(broken, "train", [{"text": "only", "label": "x"}])
    code, err = train_on(broken)
    assert code == 1 and "a single label ('x')" in err

    code, err = train_on(folder, "--task", "kernel-docs")
    assert code == 1 and "does not go with --task kernel-docs" in err
    assert main(["train", "--output-dir", str(tmp_path / "run"), *FAST]) == 1
    assert "pass --task" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # no attempt left a folder behind

    # Output folders that hold the run's own inputs would be overwritten (or deleted with --overwrite).
    shutil.copytree(folder, tmp_path / "run" / "data")
    code, err = train_on(tmp_path / "run" / "data", "--overwrite")
    assert code == 1 and "lies inside --output-dir" in err
    assert (tmp_path / "run" / "data" / "train.jsonl").is_file()


def test_a_damaged_packaged_file_stops_the_commands_with_its_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(files, "resources", types.SimpleNamespace(files=lambda package: tmp_path))
    assert main(["train", "--task", "kernel-docs", "--output-dir", str(tmp_path / "run"), *FAST]) == 1
    assert "kernel_docs.jsonl.gz is missing" in capsys.readouterr().err
    assert main(["data", "show", "shakespeare-genre"]) == 1
    assert "shakespeare_genre.jsonl.gz is missing" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_integer_labels_keep_numeric_order_and_follow_a_trained_models_order(tmp_path):
    write_split(tmp_path, "train", [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": 1}])
    write_split(tmp_path, "validation", [{"text": "c", "label": 2}])
    write_split(tmp_path, "test", [{"text": "d", "label": 10}])
    data = load_classification_folder(tmp_path)
    assert data["train"].features["label"].names == ["1", "2", "10"] and data["train"]["label"] == [2, 1, 0]
    reordered = load_classification_folder(tmp_path, label_names=["10", "2", "1"])
    assert reordered["train"]["label"] == [0, 1, 2] and reordered["test"]["label"] == [0]

    write_split(tmp_path, "test", [{"text": "d", "label": "10"}])
    with pytest.raises(DataError, match="labels mix integers and strings"):
        load_classification_folder(tmp_path)


def test_a_damaged_or_missing_packaged_file_says_how_to_restore_it(tmp_path, monkeypatch):
    (tmp_path / "kernel_docs.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip any more")
    monkeypatch.setattr(files, "resources", types.SimpleNamespace(files=lambda package: tmp_path))
    with pytest.raises(DataError, match="kernel_docs.jsonl.gz is damaged.*reinstall hf_longctx"):
        read_packaged_jsonl("kernel_docs.jsonl.gz")
    with pytest.raises(DataError, match="shakespeare_genre.jsonl.gz is missing"):
        read_packaged_jsonl("shakespeare_genre.jsonl.gz")


def test_max_samples_are_drawn_before_tokenizing_and_are_the_examples_drawn_after(folder):
    """--max-train-samples 8 used to tokenize every document first (13 of a 16 s kernel-docs run); the draw now
    happens on the raw text, and it must pick exactly the examples the draw on tokenized data picks."""
    from hf_longctx.tasks import folder_task
    from hf_longctx.train import load_task, subsample

    task = folder_task(folder)
    tokenizer = task.tokenizer()
    limits = {"train": 5, "validation": 1, "test": 1}
    early, _ = load_task(task, tokenizer, 96, 0, limits)
    late, _ = load_task(task, tokenizer, 96, 0)
    for split, n in limits.items():
        late = subsample(late, split, n)
        assert len(early[split]) == n < len(load_task(task, tokenizer, 96, 0)[0][split])
        assert early[split]["input_ids"] == late[split]["input_ids"], split
        assert early[split]["labels"] == late[split]["labels"], split
