"""``hf-longctx demo``: does reading the whole document pay a Longformer? One command, on a CPU, in minutes.

``make demo`` runs :mod:`hf_longctx.compare` (every variant against the same truncated baseline); this is the
Longformer alone, ``hf-longctx train`` run twice and ``hf-longctx export`` once, through the same public functions:

1. :func:`hf_longctx.train.train` fine-tunes a randomly initialised small Longformer (first token global) on a
   shipped long-document classification task, reading up to ``max_length`` tokens of each document; Trainer
   evaluates on the validation split every ``eval_steps`` and keeps the best checkpoint.
2. The same model, seed and steps, reading only the first ``truncated_length`` tokens: the truncated baseline.
3. Test accuracy of both, next to the majority-class baseline.
4. :func:`hf_longctx.export.export_model` writes a Hub-ready folder with the results in its model card, and the
   folder is reloaded through ``AutoTokenizer`` + ``AutoModelForSequenceClassification``: it must give the test
   accuracy that training measured and the logits of the saved model.

Output folder: ``long/`` and ``truncated/`` (train runs: ``model/`` and ``checkpoints/``), ``hub/`` and
``demo_results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .folders import FolderError, check_location, check_run_folder
from .tasks import TASKS

RESULTS_FILE = "demo_results.json"  # also marks a folder as demo output, which --overwrite may delete
DEMO_ENTRIES = ("long", "truncated", "hub")  # what the demo writes beside RESULTS_FILE

# The classification tasks the demo can run; the default is the first.
DEMO_TASKS = [name for name, task in TASKS.items() if task.head == "AutoModelForSequenceClassification"]


@dataclass
class DemoSettings:
    """Everything that decides the demo's result (the seed included); the defaults are the ``make demo`` run.

    Sized for 2 CPU cores: the long run reads about 2.4M tokens (~2 minutes at the ~20k tokens/s of an idle
    2-core machine), the truncated one an eighth of that. The best validation checkpoint is kept because a model
    this small memorises its training documents after a few epochs (docs/cli.md, "The demo").
    """

    task: str = "kernel-docs"
    preset: str = "small"  # hidden 128, 2 layers, 2 heads, window 256: 1.7M parameters with the 8k BPE
    max_length: int = 1024  # tokens per document, <s> and </s> included; longer ones are cut
    truncated_length: int = 128  # the baseline reads this many (0: skip it)
    max_steps: int = 150
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup: float = 0.2  # fraction of the steps
    weight_decay: float = 0.01
    eval_steps: int = 25  # validation accuracy every eval_steps; the best checkpoint is kept
    seed: int = 0
    max_train_samples: int | None = None  # smaller runs (tests); None: the whole split
    max_eval_samples: int | None = None


def training_arguments(settings: DemoSettings) -> dict:
    """The ``TrainingArguments`` overrides of both runs: validation-selected checkpoint, one log line per eval."""
    s = settings
    return {
        "warmup_steps": s.warmup, "weight_decay": s.weight_decay,
        "eval_strategy": "steps", "eval_steps": s.eval_steps, "save_strategy": "steps", "save_steps": s.eval_steps,
        "save_total_limit": 1, "load_best_model_at_end": True, "metric_for_best_model": "accuracy",
        "logging_steps": s.eval_steps, "disable_tqdm": True,
    }


def train_once(settings: DemoSettings, output_dir: Path, max_length: int, log=print) -> dict:
    """One ``train()`` run of the demo's model on the demo's task; returns its summary."""
    from .train import train

    s = settings
    return train(
        s.task, output_dir, preset=s.preset, max_length=max_length, max_steps=s.max_steps, batch_size=s.batch_size,
        learning_rate=s.learning_rate, seed=s.seed, max_train_samples=s.max_train_samples,
        max_eval_samples=s.max_eval_samples, overrides=training_arguments(s), log=log,
        device="cpu",  # the README's figures are CPU runs, and the reload below compares logits on the CPU
    )


def _quiet(message: str) -> None:
    """train()'s one-line JSON summary is not printed: the demo prints its own table."""


def metric(summary: dict, name: str) -> float:
    return next(row["value"] for row in summary["results"] if row["metric"] == name)


def export_and_reload(settings: DemoSettings, model_dir: Path, hub_dir: Path, summary: dict) -> dict:
    """Export ``model_dir`` to ``hub_dir`` and reload it through the Auto classes: the check ``hf-longctx compare``
    runs on its best model (:func:`hf_longctx.compare.export_and_reload`), which raises
    :class:`~hf_longctx.compare.CompareError` unless the folder gives the test accuracy training measured and the
    saved model's logits."""
    from .compare import export_and_reload as check

    return check(TASKS[settings.task], model_dir, hub_dir, max_length=settings.max_length, seed=settings.seed,
                 batch_size=settings.batch_size, max_eval_samples=settings.max_eval_samples, metric="accuracy",
                 expected=metric(summary, "accuracy"))


def run_demo(settings: DemoSettings, output_dir: str | Path, log=print) -> dict:
    """Both training runs, the comparison, the export and the reload. Returns what it printed, as a dict."""
    from .export import SUMMARY_FILE

    start = time.perf_counter()
    s = settings
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {"settings": asdict(s), "finished": False}
    # Written first, so that an interrupted demo's folder is still one that --overwrite may replace.
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")

    log(f"[1/3] long context: the first {s.max_length} tokens of every document")
    long = train_once(s, output_dir / "long", s.max_length, log=_quiet)
    results["long"] = long
    rows = [("long context", s.max_length, metric(long, "accuracy"))]
    if s.truncated_length:
        log(f"[2/3] truncated baseline: the same model, seed and steps on the first {s.truncated_length} tokens")
        truncated = train_once(s, output_dir / "truncated", s.truncated_length, log=_quiet)
        results["truncated"] = truncated
        rows.append(("truncated", s.truncated_length, metric(truncated, "accuracy")))
        # The card shows the baseline next to the model's own figures.
        summary_file = output_dir / "long" / "model" / SUMMARY_FILE
        summary = json.loads(summary_file.read_text())
        summary["results"].append({**summary["results"][0],
                                   "metric": f"truncated_baseline_accuracy_{s.truncated_length}_tokens",
                                   "value": metric(truncated, "accuracy")})
        summary_file.write_text(json.dumps(summary, indent=2))

    log("[3/3] export to a Hub-ready folder and reload it")
    results["hub"] = export_and_reload(s, output_dir / "long" / "model", output_dir / "hub", long)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["finished"] = True
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")

    log(f"\ntest accuracy on {s.task} ({results['hub']['examples']} documents, none seen in training):")
    for name, length, accuracy in rows:
        log(f"  {name:<14} {length:>5} tokens  {accuracy:.3f}")
    log(f"  majority class              {metric(long, 'majority_baseline_accuracy'):.3f}")
    if len(rows) == 2:
        gain = rows[0][2] - rows[1][2]
        log(f"long context {'beats' if gain > 0 else 'does NOT beat'} the truncated baseline by "
            f"{gain * 100:+.1f} points")
    losses = long["train_losses"]  # logged every eval_steps (the mean loss when training is shorter)
    log(f"training: {long['train_seconds']:.0f} s long"
        + (f", {results['truncated']['train_seconds']:.0f} s truncated" if "truncated" in results else "")
        + (f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""))
    log(f"Hub-ready folder: {results['hub']['folder']} (model card with these results); reloaded as "
        f"{results['hub']['reloaded_type']}: same test accuracy, max |logit difference| "
        f"{results['hub']['max_abs_logit_diff']:.1e}")
    return results


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


# The arguments are defined in hf_longctx_cli.demo_arguments (defaults: DemoSettings').


def pick_threads(requested: int = 0) -> int:
    """``requested``, or the cores that other processes leave idle (by the 1-minute load average), at least 1.

    Why: on a busy machine, torch's OpenMP threads wait for each other at every op, and a descheduled thread stalls
    the rest; measured on 2 shared cores, 2 threads ran this model 3-10x slower than 1 thread.
    """
    if requested > 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def _prepare_output_dir(path: Path, overwrite: bool) -> str | None:
    """Empty ``path`` for a new run, or return why not (checked before minutes of training, not after)."""
    try:
        check_location(path)
    except FolderError as err:
        return str(err)
    if not path.exists():
        return None
    if not overwrite:
        return f"{path} already exists; pass --overwrite to replace it, or choose another --output-dir"
    if path.is_dir() and not any(path.iterdir()):
        return None
    try:  # only an earlier demo's folder, holding nothing the demo did not write (hf_longctx.folders)
        check_run_folder(path, RESULTS_FILE, DEMO_ENTRIES)
    except FolderError as err:
        return str(err)
    shutil.rmtree(path)
    return None


def run(args) -> int:
    output_dir = Path(args.output_dir)
    problem = _prepare_output_dir(output_dir, args.overwrite)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    settings = DemoSettings(
        task=args.task, max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_length=args.max_length, truncated_length=args.truncated_length, seed=args.seed,
    )
    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()  # a few lines of results read better than a dozen progress bars
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(pick_threads(args.threads))
    print(f"hf_longctx demo: {TASKS[args.task].description}")
    print(f"cpu: {torch.get_num_threads()} torch threads ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}{'' if args.threads else '; --threads overrides'})")
    try:
        results = run_demo(settings, output_dir)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the folder is still one --overwrite may replace
        print(f"\nhf-longctx demo: interrupted; start again with --overwrite (it replaces {output_dir})",
              file=sys.stderr)
        return 130
    trained = "long/model, truncated/model" if settings.truncated_length else "long/model"  # 0: no baseline
    print(f"everything is in {output_dir}/: {trained}, hub/, {RESULTS_FILE}")
    print(f"total wall time: {results['wall_seconds']:.0f} s")
    return 0
