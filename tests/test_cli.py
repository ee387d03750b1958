"""The hf-longctx command end to end on tiny settings: train -> evaluate -> export, generate, data, and bad input."""

import json
import re
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
    # The run's last line is its JSON alone, naming the split its figures come from.
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["split"] == "test" and last["accuracy"] == metrics["accuracy"]
    # 2 steps log no loss (logging_steps 10): the mean training loss stands in, never an empty list.
    assert len(summary["train_losses"]) == 1 and summary["train_losses"][0] > 0
    # The saved tokenizer knows the model's length (with transformers' 1e30 default, truncation=True would do nothing).
    assert AutoTokenizer.from_pretrained(run / "model").model_max_length == 96
    assert type(AutoModelForSequenceClassification.from_pretrained(run / "model")).__name__.startswith("LongctxLongformer")
    assert len(AutoTokenizer.from_pretrained(run / "model")) == 8192

    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--split", "validation",
                 "--max-eval-samples", "8"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert 0.0 <= evaluated["validation_accuracy"] <= 1.0

    assert main(["export", str(run / "model"), str(tmp_path / "hub")]) == 0
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"| SequenceClassification | kernel-docs | test | accuracy | {metrics['accuracy']} |" in card
    # The card's metadata names no Hub data set that does not exist; its snippet loads the tokenizer with the length.
    assert "datasets:" not in card.split("---")[1]
    assert "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)" in card and "max_length=96" in card

    # Defect 4: evaluate at a length the model cannot read is refused with the command that lengthens it.
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--max-length", "4096"]) == 1
    err = capsys.readouterr().err
    assert "longer than the 96 tokens" in err and "--max-length 4096` lengthens" in err
    # Defect 5: a model of other labels is refused, not scored 0.0 (or crashed with an IndexError).
    assert main(["evaluate", str(run / "model"), "--task", "shakespeare-genre", "--max-samples", "4"]) == 1
    assert "predicts 6 labels" in capsys.readouterr().err
    assert main(["generate", str(run / "model"), "--prompt", "x"]) == 1  # it printed "a ['...'] model" before
    assert "holds a LongctxLongformerForSequenceClassification, not a causal LM" in capsys.readouterr().err

    # The run folder now exists: a second train refuses it without --overwrite.
    assert main(["train", "--task", "kernel-docs", "--max-length", "96", "--output-dir", str(run), *FAST]) == 1
    assert "already exists" in capsys.readouterr().err


def test_train_byte_lm_then_generate_and_evaluate_bits_per_byte(tmp_path, capsys):
    run = tmp_path / "lm"
    assert main(["train", "--task", "wiki-bytes", "--max-length", "64", "--output-dir", str(run), *FAST]) == 0
    # Defect 10: the run's summary has wiki-bytes' headline metric, as evaluate reports it.
    results = {r["metric"]: r["value"] for r in json.loads((run / "model" / "hf_longctx_summary.json").read_text())["results"]}
    assert results["bits_per_byte"] == pytest.approx(results["loss"] / 0.6931471805599453, abs=1e-3)
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--task", "wiki-bytes", "--split", "validation", "--max-samples", "8"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["validation_bits_per_byte"] == pytest.approx(metrics["validation_loss"] / 0.6931471805599453)
    assert main(["generate", str(run / "model"), "--prompt", "<page><title>", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("<page><title>")

    # Defect 6: generation stops at the model's 64 tokens and says so; the prompt is 13 bytes.
    assert main(["generate", str(run / "model"), "--prompt", "<page><title>", "--max-new-tokens", "400"]) == 0
    out = capsys.readouterr()
    assert "generates 52 of the 400 new tokens" in out.err and out.out.startswith("<page><title>")
    # A prompt longer than the model, or an empty one, is refused before anything is echoed.
    for prompt, message in (("x" * 80, "the prompt has 80 tokens but the model reads at most 64"),
                            ("", "the prompt is empty")):
        assert main(["generate", str(run / "model"), "--prompt", prompt]) == 1
        out = capsys.readouterr()
        assert out.out == "" and message in out.err
    # A causal LM is refused as the start of a classifier, before a run folder exists.
    assert main(["train", "--task", "kernel-docs", "--init-from", str(run / "model"), "--max-length", "32",
                 "--output-dir", str(tmp_path / "refused"), *FAST[2:]]) == 1
    assert "holds a causal language model" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    # Flags that would do nothing are refused: a new model's shape with --init-from,
    # sampling settings without --sample.
    assert main(["train", "--task", "wiki-bytes", "--init-from", str(run / "model"), "--preset", "base",
                 "--dropout", "0.1", "--output-dir", str(tmp_path / "refused"), *FAST[2:]]) == 1
    assert "--preset and --dropout describe a new model" in capsys.readouterr().err
    assert main(["generate", str(run / "model"), "--prompt", "<page>", "--temperature", "0.7"]) == 1
    assert "add --sample" in capsys.readouterr().err
    assert main(["generate", str(run / "model"), "--prompt", "<page>", "--sample", "--temperature", "0.7",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("<page>")
    # Missing weights: a named error, not an OSError traceback.
    (run / "model" / "model.safetensors").unlink()
    assert main(["evaluate", str(run / "model"), "--task", "wiki-bytes", "--max-samples", "2"]) == 1
    assert "cannot load the model" in capsys.readouterr().err
    assert main(["generate", str(run / "model"), "--prompt", "<page>"]) == 1
    assert "cannot load the model" in capsys.readouterr().err


def test_train_passkey_question_answering(tmp_path):
    run = tmp_path / "qa"
    assert main(["train", "--task", "passkey", "--max-length", "256", "--output-dir", str(run), *FAST]) == 0
    metrics = {r["metric"] for r in json.loads((run / "model" / "hf_longctx_summary.json").read_text())["results"]}
    assert {"exact_span", "start_accuracy"} <= metrics


def test_bad_numbers_and_set_keys_are_refused_before_a_run_folder_exists(tmp_path, capsys):
    """Defects 3, 4 and 9: a wrong argument is a one-line error, and nothing is written."""
    out = tmp_path / "run"
    base = ["train", "--task", "kernel-docs", "--output-dir", str(out)]
    for flag, value in (("--max-length", "0"), ("--batch-size", "0"), ("--epochs", "-1"), ("--max-steps", "0"),
                        ("--learning-rate", "-1"), ("--dropout", "1.5"), ("--max-train-samples", "0")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, flag, value])
        assert exit_.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err
    for setting, message in (("output_dir=elsewhere", "use --output-dir"),
                             ("learning_rate=0.1", "use --learning-rate"),
                             ("push_to_hub=true", "use --push-to-hub REPO"),
                             ("use_cpu=true", "use --device cpu"),
                             ("gradient_accumulation_steps=two", 'gradient_accumulation_steps="two": expected int'),
                             ("do_eval=true", "Trainer ignores it"),
                             ("nonsense=1", "not a TrainingArguments field")):
        assert main([*base, "--set", setting]) == 1
        assert message in capsys.readouterr().err, setting
    assert main([*base, "--set", "save_steps=5", "--set", "save_strategy=epoch"]) == 1
    assert "save_steps has no effect with save_strategy=epoch" in capsys.readouterr().err
    # Lengths a task cannot use: a traceback from the data builder, and (below the tokenizer's special tokens)
    # untruncated documents that failed inside the model once the run folder existed.
    assert main(["train", "--task", "passkey", "--max-length", "8", "--output-dir", str(out)]) == 1
    assert "task passkey: length 8 is too short" in capsys.readouterr().err
    assert main([*base, "--max-length", "1"]) == 1
    assert "--max-length 1 is too short for task kernel-docs" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "a_file").write_text("mine")
    for where in ("a_file", "a_file/run"):
        assert main(["train", "--task", "kernel-docs", "--output-dir", str(tmp_path / where)]) == 1
        assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "mine"


def test_set_save_steps_takes_effect(tmp_path):
    """Defect 9: --set save_steps=N was silently ignored (the save strategy stayed "epoch")."""
    run = tmp_path / "run"
    assert main(["train", "--task", "kernel-docs", "--max-length", "64", "--output-dir", str(run), "--preset", "tiny",
                 "--max-steps", "2", "--batch-size", "2", "--max-train-samples", "8", "--max-eval-samples", "4",
                 "--set", "disable_tqdm=true", "--set", "eval_strategy=no", "--set", "save_steps=1",
                 "--set", "save_total_limit=null"]) == 0
    # 8 examples at batch 2 make a 4-step epoch, cut at 2 steps: only step saves give checkpoint-1.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]


def test_ctrl_c_during_train_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    """Defect 13: a KeyboardInterrupt traceback; now a line that says whether --resume can continue."""
    import transformers

    def interrupted(self, *args, **kwargs):
        (tmp_path / "run" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.Trainer, "train", interrupted)
    assert main(["train", "--task", "kernel-docs", "--max-length", "64", "--output-dir", str(tmp_path / "run"),
                 *FAST]) == 130
    err = capsys.readouterr().err
    assert "interrupted; its last checkpoint is kept; go on with the same command and --resume" in err
    assert "Traceback" not in err and (tmp_path / "run" / "hf_longctx_run.json").is_file()


def test_device_choice(monkeypatch):
    import torch

    from hf_longctx.train import TrainError, device_arguments, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and device_arguments("auto") == {"use_cpu": True, "bf16": False}
    with pytest.raises(TrainError, match="--device cuda: this PyTorch sees no CUDA device"):
        pick_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps" and device_arguments("auto", bf16=True) == {"use_cpu": False, "bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(TrainError, match="no bfloat16"):
        device_arguments("cuda", bf16=True)
    assert device_arguments("cpu", bf16=True) == {"use_cpu": True, "bf16": True}


@pytest.mark.slow
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
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()


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
    assert "labels: admin-guide, devicetree" in shown
    assert main(["data", "show", "passkey", "--max-length", "256"]) == 0
    shown = capsys.readouterr().out
    assert "None" not in shown and "head: AutoModelForQuestionAnswering" in shown
    with pytest.raises(SystemExit):
        main(["data", "show", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    # Defect 12: "unknown data set None".
    assert main(["data", "show"]) == 2
    assert "show which data set?" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_command_runs_as_the_readme_writes_it(tmp_path, monkeypatch, capsys):
    """`hf-longctx bench --quick` failed ("unrecognized arguments"), wrote over the committed results and linked
    longformer_cpu.png whatever --out said."""
    from hf_longctx.benchmarks.harness import DEFAULT_OUT_DIR

    assert not DEFAULT_OUT_DIR.is_absolute() and "results" not in DEFAULT_OUT_DIR.parts
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--lengths", "256", "--no-memory", "--out", "mine/x"]) == 0
    report = (tmp_path / "mine" / "x.md").read_text()
    assert "](x.png)" in report and "from the issue" not in report
    assert "| 256 |" in report and json.loads((tmp_path / "mine" / "x.json").read_text())["quick"] is True
    # inference is also timed in a process of its own (an inference-only process, as a server's): both sides ran
    own = json.loads((tmp_path / "mine" / "x.json").read_text())["lengths"]["256"]["inference_process"]
    assert len(own["ours/inference"]) == len(own["transformers/inference"]) >= 1
    section = report.split("Inference in a process that only infers")[1].split("## Training, dropout 0")[0]
    assert re.search(r"\| 256 \| \d+ ms \| \d+ ms \| \d+\.\d\dx \|", section), section
    with pytest.raises(SystemExit):
        main(["bench", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_bench_passes_a_variants_own_flags_on_and_rejects_unknown_ones(monkeypatch, capsys):
    """`hf-longctx bench reformer --no-dense` was refused ("unrecognized arguments") although the Reformer benchmark
    has the flag; a flag no parser knows must still fail, naming it, and other commands must not swallow it."""
    import importlib

    seen = {}
    module = importlib.import_module("hf_longctx.benchmarks.reformer")
    monkeypatch.setattr(module, "main", lambda argv: seen.setdefault("argv", argv))
    assert main(["bench", "reformer", "--quick", "--no-dense"]) == 0
    assert seen["argv"] == ["--quick", "--no-dense"]
    with pytest.raises(SystemExit):  # the longformer benchmark has no --no-dense: its parser names it
        main(["bench", "longformer", "--no-dense"])
    assert "unrecognized arguments: --no-dense" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "a", "b", "--no-dense"])
    assert "unrecognized arguments: --no-dense" in capsys.readouterr().err


def _light(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that has imported only hf_longctx_cli; it prints whether torch got in."""
    script = f"import sys, hf_longctx_cli\ntry:\n    {code}\nexcept SystemExit:\n    pass\n" \
             "print('TORCH' if 'torch' in sys.modules or 'transformers' in sys.modules else 'LIGHT', file=sys.stderr)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["convert", "--help"],
                                  ["train", "--max-length", "0", "--output-dir", "x"], ["data", "list"]])
def test_help_version_argument_errors_and_data_list_do_not_import_torch(argv):
    """Every command took ~5 s because it imported torch, transformers and datasets first."""
    result = _light(f"hf_longctx_cli.main({argv!r})")
    assert result.stderr.strip().splitlines()[-1] == "LIGHT", result.stderr
    if argv == ["--version"]:
        assert result.stdout.startswith("hf-longctx 0.")
    if argv == ["data", "list"]:
        assert "kernel-docs" in result.stdout and "CausalLM" in result.stdout


def test_cli_copies_of_names_match_the_package():
    import hf_longctx_cli
    from hf_longctx.benchmarks import VARIANT_MODULES
    from hf_longctx.demo import DEMO_TASKS, DemoSettings
    from hf_longctx.tasks import TASKS

    assert hf_longctx_cli.TASKS_LISTING == {name: (t.head.replace("AutoModelFor", ""), t.description)
                                            for name, t in TASKS.items()}
    assert list(hf_longctx_cli.DEMO_TASK_NAMES) == DEMO_TASKS
    from hf_longctx.data.raw_text import CORPORA
    from hf_longctx.tasks import PRETRAINING_TASKS, PRETRAINING_TOKENIZERS

    assert hf_longctx_cli.PRETRAINING_TASK_NAMES == tuple(PRETRAINING_TASKS)
    assert hf_longctx_cli.CORPUS_NAMES == tuple(CORPORA)
    assert hf_longctx_cli.PRETRAINING_TOKENIZERS == PRETRAINING_TOKENIZERS
    from hf_longctx.variants import VARIANTS

    assert hf_longctx_cli.VARIANT_NAMES == tuple(v.name for v in VARIANTS)
    assert set(VARIANT_MODULES) == set(hf_longctx_cli.BENCH_VARIANTS)
    import argparse

    demo = argparse.ArgumentParser()
    hf_longctx_cli.demo_arguments(demo)
    defaults = vars(demo.parse_args([]))
    for field, value in vars(DemoSettings()).items():
        if field in defaults:
            assert defaults[field] == value, field


def _subparsers():
    import argparse

    from hf_longctx_cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_every_help_shows_its_defaults_and_every_flag_has_one_spelling():
    import argparse

    parser, commands = _subparsers()
    spellings = {}
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.option_strings:
                spellings.setdefault(action.dest, set()).add(tuple(action.option_strings))
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert f"default: {action.default}" in text, f"{name} {action.dest}: default not shown"
    # --lr (train) and --learning-rate (demo) were two spellings of one flag
    assert {dest: s for dest, s in spellings.items() if len(s) > 1} == {}
    assert spellings["learning_rate"] == {("--learning-rate",)}


def test_an_unknown_option_prints_the_subcommands_usage(capsys):
    """A wrong option printed the top-level usage (the list of commands), not the options of the command used."""
    for command, wrong in ((["evaluate", "somewhere"], "--max-evals"),
                           (["train", "--task", "kernel-docs", "--output-dir", "nowhere"], "--bogus")):
        with pytest.raises(SystemExit) as exit_:
            main([*command, wrong, "3"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith(f"usage: hf-longctx {command[0]} "), err[:200]
        assert f"unrecognized arguments: {wrong} 3" in err


def test_short_run_times_read_in_tenths():
    """A run of under a second read "0 s" in the summary and the model card."""
    from hf_longctx.train import _seconds

    assert (_seconds(0.43), _seconds(9.96), _seconds(12.4)) == ("0.4 s", "10.0 s", "12 s")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["longformer", "reformer", "transfo-xl"])
def test_train_compile_trains_a_compiled_model_and_saves_a_plain_one(variant, tmp_path, capsys):
    """`hf-longctx train --compile` (TrainingArguments' torch_compile; aot_eager here, Inductor's cold compile
    taking minutes): the Trainer trains the compiled model, the CPU warning is printed, and the saved model is the
    plain one (no `_orig_mod.` prefixes), which reloads and evaluates."""
    run = tmp_path / "run"
    assert main(["train", "--task", "kernel-docs", "--variant", variant, "--max-length", "64", "--compile",
                 "--set", "torch_compile_backend=aot_eager", "--output-dir", str(run), *FAST]) == 0
    assert "--compile on a CPU" in capsys.readouterr().err
    from safetensors import safe_open

    with safe_open(run / "model" / "model.safetensors", "pt") as weights:
        assert not [k for k in weights.keys() if "_orig_mod" in k]
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--split", "validation",
                 "--max-samples", "8"]) == 0
    assert "validation_accuracy" in json.loads(capsys.readouterr().out)
