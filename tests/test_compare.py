"""``hf-longctx compare``: one --quick compare end to end (table, JSON, plot, exported model, --resume), the
matched model sizes it plans, and the bad input it refuses before anything is trained or written."""

import json

import pytest

from hf_longctx.__main__ import main
from hf_longctx.compare import (
    MATCH,
    TRUNCATED,
    CompareError,
    CompareSettings,
    Plan,
    count_parameters,
    plan_compare,
    summarise,
    table,
)
from hf_longctx.tasks import PRESETS, TASKS


def _within(counts) -> float:
    """How far apart the largest and the smallest of ``counts`` are, as a fraction of the smallest."""
    return max(counts) / min(counts) - 1


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One `hf-longctx compare --quick` (every variant and the truncated baseline, one seed): its folder and output."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import torch

    out = tmp_path_factory.mktemp("compare") / "quick"
    printed, errors = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with redirect_stdout(printed), redirect_stderr(errors):
        code = main(["compare", "--quick", "--threads", "1", "--output-dir", str(out)])
    torch.set_num_threads(threads)
    assert code == 0, errors.getvalue()
    return out, printed.getvalue()


def test_quick_compare_writes_the_table_the_plot_and_a_model_that_reloads(quick):
    from transformers import AutoModelForSequenceClassification

    out, printed = quick
    results = json.loads((out / "compare.json").read_text())
    assert results["finished"] and results["metric"] == "accuracy"
    rows = {row["label"]: row for row in results["rows"]}
    assert list(rows) == ["longformer", "reformer", "transfo-xl", TRUNCATED]
    assert rows[TRUNCATED]["reads"] == 64 and rows["reformer"]["reads"] == 256
    # One budget, matched sizes: every trained model within 10% of the others, the baseline included.
    assert _within([row["parameters"] for row in rows.values()]) <= MATCH
    for label, row in rows.items():
        assert 0.0 <= row["mean"] <= 1.0 and row["spread"] == 0.0 and row["seeds"] == [0], label
        assert row["seconds_per_step"] > 0 and row["tokens_per_second"] > 0, label
        assert row["peak_step_memory_mb"] > 0, label  # read 0 while freed heap pages stayed resident
        if label != TRUNCATED:
            assert row["verdict"] in ("better than truncation (one seed: no spread to judge by)",
                                      "does NOT beat truncation")
            assert row["reach"]["first_tokens"] == PRESETS["tiny"]["window"]
            assert 0.0 <= row["reach"]["changed_predictions"] <= 1.0
    # Tokens per step (tokens per second x seconds per step): at most batch x length, fewer for the baseline.
    per_step = {label: row["tokens_per_second"] * row["seconds_per_step"] for label, row in rows.items()}
    assert per_step[TRUNCATED] <= 8 * 64 * 1.01 < per_step["longformer"] <= 8 * 256 * 1.01, per_step
    # At 256 tokens the tiny presets are within 10% already: nothing was widened.
    assert all(run["shape"] == {} for run in results["runs"])

    markdown = (out / "compare.md").read_text()
    assert "| run | reads (tokens) | parameters | test accuracy (mean ± sd)" in markdown
    for label, row in rows.items():
        assert f"| {label} | {row['reads']:,} | {row['parameters']:,} | {row['mean']:.3f} | 1 |" in markdown
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Printed: a line per run, the overall progress, and the table at the end.
    assert "[run 1/4] longformer-seed0: longformer reading 256 tokens" in printed
    assert "overall 4/4 runs" in printed and "about 0 s left" in printed
    assert "| truncated | 64 |" in printed and "everything is in" in printed

    # The best model, exported: it reloads through the Auto class, and its card holds the compare.
    best = results["best"]
    assert best["label"] == max(rows.values(), key=lambda r: r["mean"])["label"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "hub")
    family = {"longformer": "Longformer", "reformer": "Reformer", "transfo-xl": "TransfoXL", TRUNCATED: "Longformer"}
    assert type(model).__name__ == f"Longctx{family[best['label']]}ForSequenceClassification"
    assert results["hub"]["max_abs_logit_diff"] <= 1e-5 and results["hub"]["test_accuracy"] == best["accuracy"]
    card = (out / "hub" / "README.md").read_text()
    assert "Chosen by `hf-longctx compare`" in card and "| transfo-xl | 256 |" in card


def test_resume_continues_and_refuses_other_arguments(quick, capsys):
    out, _ = quick
    base = ["compare", "--quick", "--threads", "1", "--output-dir", str(out)]
    # Another budget is refused, with the difference named, before anything is touched.
    before = (out / "compare.json").read_text()
    assert main([*base, "--steps", "31", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "these differ: steps 30 -> 31" in err
    assert main(base) == 2 and "already exists" in capsys.readouterr().err  # neither --resume nor --overwrite
    assert main([*base, "--resume", "--overwrite"]) == 2 and "pass one of them" in capsys.readouterr().err
    assert (out / "compare.json").read_text() == before

    # An interrupted compare: the Reformer's run lost its record and its model, its checkpoints are kept.
    import shutil

    results = json.loads(before)
    results["runs"] = [run for run in results["runs"] if run["name"] != "reformer-seed0"]
    (out / "compare.json").write_text(json.dumps(results))
    shutil.rmtree(out / "runs" / "reformer-seed0" / "model")
    assert main([*base, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "[run 1/4] longformer-seed0: finished earlier" in printed
    assert "[run 2/4] reformer-seed0: reformer reading 256 tokens, resumed from its last checkpoint" in printed
    again = json.loads((out / "compare.json").read_text())
    earlier = {r["name"]: r["accuracy"] for r in json.loads(before)["runs"]}
    assert again["finished"] and (out / "runs" / "reformer-seed0" / "model").is_dir()
    assert {r["name"]: r["accuracy"] for r in again["runs"]} == earlier  # the same best checkpoint, the same score


def test_overwrite_replaces_only_a_compare_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["compare", "--quick", "--output-dir", str(mine), "--overwrite"]) == 2
    assert "not an earlier hf-longctx run folder" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_help_states_the_defaults_and_quick_values_compare_uses():
    import argparse

    from hf_longctx.compare import QUICK
    from hf_longctx_cli import compare_arguments

    parser = argparse.ArgumentParser()
    compare_arguments(parser)
    helps = {action.dest: " ".join(action.help.split()) for action in parser._actions}
    for name in ("max_length", "truncated", "steps", "batch_size", "learning_rate"):
        assert f"default: {getattr(CompareSettings(), name)}; --quick {QUICK[name]})" in helps[name], name
    assert vars(parser.parse_args([]))["steps"] is None  # a flag left out takes --quick's value or the default


def test_default_sizes_are_matched_and_need_matching():
    """The embedded default (kernel-docs, 1,024 tokens): every model within 10%, the truncated baseline included;
    without the widened feed-forward the presets are not (the matching is what makes it hold)."""
    plan = plan_compare(CompareSettings())
    assert [run.name for run in plan.runs] == ["longformer-seed0", "reformer-seed0", "transfo-xl-seed0",
                                               "truncated-seed0"]
    assert {run.length for run in plan.runs} == {1024, 128} and plan.no_head == []
    assert _within(plan.parameters.values()) <= MATCH, plan.parameters
    task = TASKS["kernel-docs"]
    tokenizer = task.tokenizer()
    labels = list(range(6))
    unmatched = [count_parameters(v, PRESETS["small"], tokenizer, 1024, task, labels)
                 for v in ("longformer", "reformer", "transfo-xl")]
    assert _within(unmatched) > MATCH, unmatched


def test_causal_and_masked_compares_plan_matched_sizes_and_list_a_missing_head(tmp_path):
    causal = plan_compare(CompareSettings(task="wiki-bytes", seeds=(0, 1)))
    assert (causal.metric, causal.higher_is_better) == ("bits_per_byte", False)
    assert len(causal.runs) == 8 and _within(causal.parameters.values()) <= MATCH, causal.parameters
    masked = plan_compare(CompareSettings(task="mlm", data_dir=str(_raw_text_folder(tmp_path / "raw", 40)),
                                          max_length=256, truncated=64, preset="tiny"))
    assert masked.no_head == ["transfo-xl"] and {run.variant for run in masked.runs} == {"longformer", "reformer"}
    rows = summarise(masked, [])
    assert rows == [{"label": "transfo-xl", "variant": "transfo-xl", "no_head": True}]
    assert "| transfo-xl | - | - | no head |" in "\n".join(table(rows, masked.metric))


def test_a_widened_model_is_trained_and_recorded_with_its_shape(tmp_path):
    """train's `shape` replaces preset fields of the new model, and the run record and card command say so."""
    from hf_longctx.train import build_trainer, command_line, plan_run

    options = dict(data_dir=None, variant="reformer", preset="tiny", max_length=64, epochs=1.0, max_steps=1,
                   batch_size=2, learning_rate=1e-3, dropout=0.0, seed=0, init_from=None, max_train_samples=4,
                   max_eval_samples=4, overrides={}, device="cpu", bf16=False, push_to_hub=None, corpora=None,
                   tokenizer=None, log=print)
    plan = plan_run("kernel-docs", tmp_path / "run", **options, shape={"intermediate_size": 400})
    assert plan.run_record["shape"] == {"intermediate_size": 400}
    assert command_line(plan.run_record).endswith("# preset fields intermediate_size=400")
    trainer, _, _ = build_trainer(plan, overwrite=False, resume=False)
    assert trainer.model.config.feed_forward_size == 400
    assert "shape" not in plan_run("kernel-docs", tmp_path / "other", **options).run_record  # old records resume
    with pytest.raises(Exception, match="must replace fields of the preset"):
        plan_run("kernel-docs", tmp_path / "bad", **options, shape={"vocab_size": 3})


def test_verdicts_follow_the_spread_and_the_direction():
    settings = CompareSettings(seeds=(0, 1))
    plan = Plan(settings, None, "bits_per_byte", False, [], [], {}, 256)
    from hf_longctx.compare import Run

    plan.runs = [Run(v, v, 1024, s) for s in (0, 1) for v in ("reformer", "transfo-xl")] + \
        [Run(TRUNCATED, "longformer", 128, s) for s in (0, 1)]

    def record(label, seed, value):
        return {"label": label, "variant": label, "seed": seed, "reads": 1, "parameters": 1, "bits_per_byte": value,
                "train_losses": [5.0, 2.0], "seconds_per_step": 1.0, "tokens_per_second": 10,
                "peak_step_memory_mb": 1.0}

    records = [record("reformer", 0, 2.0), record("reformer", 1, 2.1), record("transfo-xl", 0, 2.45),
               record("transfo-xl", 1, 2.62), record(TRUNCATED, 0, 2.5), record(TRUNCATED, 1, 2.6)]
    rows = {row["label"]: row for row in summarise(plan, records)}
    assert "| reformer | 1 | 1 | 2.050 ± 0.071 | 2 |" in "\n".join(table(list(rows.values()), "bits_per_byte"))
    assert rows["reformer"]["verdict"] == "beats truncation"  # lower bits per byte by more than the spread
    assert rows["reformer"]["gain_over_truncated"] == pytest.approx(0.5)
    assert rows["transfo-xl"]["verdict"] == "better than truncation, within the spread"
    assert rows[TRUNCATED]["spread"] == pytest.approx(0.0707, abs=1e-4) and "verdict" not in rows[TRUNCATED]


def _raw_text_folder(path, documents: int = 1):
    path.mkdir()
    for i in range(documents):
        (path / f"{i}.txt").write_text(f"document {i}: some raw text without any label. " * 30)
    return path


@pytest.mark.parametrize("case", [
    "unknown variant", "no variant can run it", "task compare cannot score", "baseline longer than the length",
    "length too short for the task", "data-dir without labels",
])
def test_bad_input_is_one_line_before_anything_is_written(case, tmp_path, capsys):
    out = tmp_path / "out"
    argv, message = {
        "unknown variant": (["--variants", "longformer", "gpt2"], "unknown variant 'gpt2'; choose from longformer"),
        "no variant can run it": (["--task", "mlm", "--variants", "transfo-xl"],
                                  "no variant of transfo-xl has the MaskedLM head task mlm needs"),
        "task compare cannot score": (["--task", "passkey"], "task passkey trains a QuestionAnswering head"),
        "baseline longer than the length": (["--max-length", "128", "--truncated", "256"],
                                            "--truncated 256 does not fit --max-length 128"),
        "length too short for the task": (["--max-length", "1", "--truncated", "0"],
                                          "--max-length 1 is too short for task kernel-docs"),
        "data-dir without labels": (["--data-dir", str(_raw_text_folder(tmp_path / "raw"))],
                                    "a classification compare (text-classification) needs labelled documents"),
    }[case]
    assert main(["compare", "--quick", "--output-dir", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-longctx compare: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_compare_errors_name_the_flag_of_the_baseline_length():
    with pytest.raises(CompareError, match="--truncated 1 is too short"):
        plan_compare(CompareSettings(max_length=64, truncated=1, preset="tiny"))
