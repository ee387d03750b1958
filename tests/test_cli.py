"""The hf-longctx command end to end on tiny settings: train -> evaluate -> export, generate, data, and bad input."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_longctx.__main__ import main

FAST = ["--preset", "tiny", "--max-steps", "2", "--batch-size", "2", "--max-train-samples", "4", "--max-eval-samples", "8",
        "--set", "disable_tqdm=true", "--set", "eval_strategy=no", "--set", "save_strategy=no"]


def test_train_evaluate_export_kernel_docs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "kernel-docs", "--max-length", "96", "--output-dir", str(run), *FAST]) == 0
    summary = json.loads((run / "model" / "hf_longctx_summary.json").read_text())
    metrics = {r["metric"]: r["value"] for r in summary["results"]}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "macro_f1" in metrics
    assert type(AutoModelForSequenceClassification.from_pretrained(run / "model")).__name__.startswith("LongctxLongformer")
    assert len(AutoTokenizer.from_pretrained(run / "model")) == 8192

    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--split", "validation",
                 "--max-samples", "8"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert 0.0 <= evaluated["validation_accuracy"] <= 1.0

    assert main(["export", str(run / "model"), str(tmp_path / "hub")]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"| SequenceClassification | kernel-docs | test | accuracy | {metrics['accuracy']} |" in card

    # The run folder now exists: a second train refuses it without --overwrite.
    assert main(["train", "--task", "kernel-docs", "--max-length", "96", "--output-dir", str(run), *FAST]) == 1
    assert "already exists" in capsys.readouterr().err


def test_train_byte_lm_then_generate_and_evaluate_bits_per_byte(tmp_path, capsys):
    run = tmp_path / "lm"
    assert main(["train", "--task", "wiki-bytes", "--max-length", "64", "--output-dir", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--task", "wiki-bytes", "--split", "validation", "--max-samples", "8"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["validation_bits_per_byte"] == pytest.approx(metrics["validation_loss"] / 0.6931471805599453)
    assert main(["generate", str(run / "model"), "--prompt", "<page><title>", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("<page><title>")


def test_train_passkey_question_answering(tmp_path):
    run = tmp_path / "qa"
    assert main(["train", "--task", "passkey", "--max-length", "256", "--output-dir", str(run), *FAST]) == 0
    metrics = {r["metric"] for r in json.loads((run / "model" / "hf_longctx_summary.json").read_text())["results"]}
    assert {"exact_span", "start_accuracy"} <= metrics


def test_bad_input_gets_a_clear_message_and_non_zero_exit(tmp_path):
    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "hf_longctx", *argv], capture_output=True, text=True, timeout=300)

    result = cli("train", "--task", "imdb", "--output-dir", str(tmp_path / "x"))
    assert result.returncode == 2 and "invalid choice: 'imdb'" in result.stderr
    result = cli("train", "--task", "kernel-docs", "--variant", "bert", "--output-dir", str(tmp_path / "x"))
    assert result.returncode == 1 and "unknown variant 'bert'" in result.stderr
    result = cli("evaluate", str(tmp_path / "missing"), "--task", "kernel-docs")
    assert result.returncode == 1 and "not a model folder" in result.stderr
    result = cli("train", "--task", "kernel-docs", "--output-dir", str(tmp_path / "x"), "--set", "nonsense=1")
    assert result.returncode == 1 and "not a TrainingArguments field" in result.stderr
    for r in (result,):
        assert "Traceback" not in r.stderr


def test_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path, capsys):
    run = tmp_path / "lm"
    assert main(["train", "--task", "wiki-bytes", "--max-length", "32", "--output-dir", str(run), *FAST]) == 0
    (run / "model" / "tokenizer_config.json").unlink()  # evaluate then falls back to the task's 8k BPE
    (run / "model" / "tokenizer.json").unlink(missing_ok=True)
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--max-samples", "4"]) == 1
    assert "do not belong together" in capsys.readouterr().err


def test_data_list_and_show(capsys):
    assert main(["data", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("kernel-docs", "shakespeare-genre", "wiki-bytes", "passkey"))
    assert main(["data", "show", "kernel-docs", "--max-length", "64"]) == 0
    shown = capsys.readouterr().out
    assert "train" in shown and "420 examples" in shown and "PROVENANCE_kernel_docs.md" in shown
    assert main(["data", "show", "nope"]) == 1


def test_bench_command_runs_as_the_readme_writes_it(tmp_path, monkeypatch, capsys):
    """`hf-longctx bench --quick` failed ("unrecognized arguments"), wrote over the committed results and linked
    longformer_cpu.png whatever --out said (issue 10, defect 8)."""
    from hf_longctx.benchmarks.harness import DEFAULT_OUT_DIR

    assert not DEFAULT_OUT_DIR.is_absolute() and "results" not in DEFAULT_OUT_DIR.parts
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--lengths", "256", "--no-memory", "--out", "mine/x"]) == 0
    report = (tmp_path / "mine" / "x.md").read_text()
    assert "](x.png)" in report and "from the issue" not in report
    assert "| 256 |" in report and json.loads((tmp_path / "mine" / "x.json").read_text())["quick"] is True
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
    assert "invalid choice" in capsys.readouterr().err
