"""``hf-longctx compare`` (and ``make demo``): which long-context mechanism pays on my documents, at what cost, and
against simply truncating them?

Every variant, and a truncated baseline (the Longformer reading only the first ``truncated`` tokens), is trained by
``hf-longctx train``'s own phases (:func:`hf_longctx.train.plan_run` -> ``build_trainer`` -> ``finish_run``) under
one budget: the task's tokenizer, the same maximum length, steps, batch, AdamW, warm-up and linear schedule, and
models of matched size (:func:`matched_shapes` widens the feed-forward of a model, the baseline's included, whose
parameters are not within 10% of the largest's). Each run keeps its best validation checkpoint and scores the test
split: the task's accuracy for classification, bits per byte for causal language modelling, perplexity of the
masked tokens for masked language modelling. A variant without the head the task needs is listed as "no head".

Per variant, over seeds: the test metric (mean and standard deviation), the median time of a training step and its
tokens per second, the peak memory of one training step (:class:`StepMeter`), the parameters and the length it
read; and, for a classifier, whether it reads past its first window or segment at all (its predictions when the
document is cut there). Output folder: ``hf_longctx_compare.json`` (the arguments, for ``--resume``),
``runs/<label>-seed<k>/`` (train runs), ``compare.json``, ``compare.md``, ``compare.png`` and ``hub/`` (the best
model, exported and reloaded through the Auto classes: it must reproduce the test metric and the saved logits).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers import TrainerCallback

from .benchmarks.harness import status_kb
from .folders import FolderError, check_location, check_run_folder
from .variants import BY_NAME

COMPARE_FILE = "hf_longctx_compare.json"  # the arguments; also marks a folder --overwrite may delete
RESULTS_FILE = "compare.json"
ENTRIES = ("runs", "hub", RESULTS_FILE, "compare.md", "compare.png")  # what compare writes beside COMPARE_FILE
TRUNCATED = "truncated"  # the baseline's label
MATCH = 0.10  # parameters of every variant within 10% of the largest

# The head a task trains -> the test metric compare reports and whether higher is better.
SCORES = {
    "AutoModelForSequenceClassification": ("accuracy", True),
    "AutoModelForCausalLM": ("bits_per_byte", False),
    "AutoModelForMaskedLM": ("perplexity", False),
}


class CompareError(RuntimeError):
    """Arguments compare refuses before anything is trained or written; the message is one line."""


@dataclass(frozen=True)
class CompareSettings:
    """Everything that decides a compare's result; the defaults are ``hf-longctx compare`` and ``make demo``.

    Sized for 2 CPU cores shared with other work (one torch thread): each 1,024-token run reads 100 x 16
    documents (~1.5M tokens), about 2 minutes; the four runs, under 10.
    """

    task: str | None = "kernel-docs"
    data_dir: str | None = None
    variants: tuple[str, ...] = tuple(BY_NAME)
    max_length: int = 1024
    truncated: int = 128  # the baseline's length; 0: no baseline
    seeds: tuple[int, ...] = (0,)
    steps: int = 100
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup: float = 0.2  # fraction of the steps
    weight_decay: float = 0.01
    evaluations: int = 5  # validation passes per run; the best checkpoint is kept
    preset: str = "small"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    device: str = "auto"


# `--quick`: tiny models on the first 256 tokens of 96 documents: seconds, under 2 minutes on a busy machine
# (what the tests run).
QUICK = dict(preset="tiny", max_length=256, truncated=64, steps=30, batch_size=8, learning_rate=3e-3, evaluations=2,
             max_train_samples=96, max_eval_samples=32)


@dataclass
class Run:
    """One training run of the compare."""

    label: str  # the variant's name, or TRUNCATED
    variant: str
    length: int
    seed: int
    shape: dict = field(default_factory=dict)  # preset fields replaced to match sizes

    @property
    def name(self) -> str:
        return f"{self.label}-seed{self.seed}"


@dataclass
class Plan:
    settings: CompareSettings
    task: object
    metric: str
    higher_is_better: bool
    runs: list[Run]
    no_head: list[str]  # chosen variants without the task's head
    parameters: dict  # label -> parameters of the planned model
    window: int  # the preset's window: a Longformer's window, a Transformer-XL's segment (the reach probe)


# ------------------------------------------------------------------- planning -------------------------------------
# Everything that can be wrong is found here, before a folder is written or a step is trained.


def _task(settings: CompareSettings):
    from .tasks import FOLDER_TASK, PRETRAINING_TASKS, resolve_task

    s = settings
    try:
        return resolve_task(s.task, s.data_dir)
    except ValueError as err:
        text = " ".join(str(err).split())
        if s.data_dir is not None and s.task not in PRETRAINING_TASKS:
            raise CompareError(f"--data-dir {s.data_dir}: a classification compare ({FOLDER_TASK}) needs labelled "
                               f"documents: {text} (raw text: add --task clm)") from None
        raise CompareError(text) from None


def count_parameters(variant: str, preset: dict, tokenizer, length: int, task, labels) -> int:
    """Parameters of the new model ``hf-longctx train`` would build, counted on the meta device (nothing allocated)."""
    import torch
    import transformers

    config = BY_NAME[variant].build_config(preset, tokenizer, length, task, labels, 0.0)
    with torch.device("meta"):
        model = getattr(transformers, task.head).from_config(config)
    return sum(p.numel() for p in model.parameters())


def matched_shapes(counters: dict, preset: dict) -> dict[str, dict]:
    """Per run label, the preset fields to replace so that every model's parameters come within :data:`MATCH` of
    the largest's. ``counters`` maps a label to ``count(fields)``, the parameters of its model with ``fields``
    replaced. A model outside the band gets a wider feed-forward (parameters are linear in its width), in steps of
    8, up to the largest; the others keep the preset."""
    counts = {label: count({}) for label, count in counters.items()}
    target = max(counts.values())
    shapes = {}
    for label, count in counters.items():
        if counts[label] * (1 + MATCH) >= target:
            shapes[label] = {}
            continue
        width = preset["intermediate_size"]
        per_unit = (count({"intermediate_size": width + 64}) - counts[label]) / 64
        shapes[label] = {"intermediate_size": width + 8 * round((target - counts[label]) / per_unit / 8)}
    return shapes


def plan_compare(settings: CompareSettings) -> Plan:
    """Check the arguments, load a few documents at both lengths and size the models: a :class:`Plan`, or a
    :class:`CompareError` that says what is wrong."""
    import transformers

    import hf_longctx

    from .tasks import PRESETS
    from .train import TrainError, load_task

    s = settings
    unknown = [v for v in s.variants if v not in BY_NAME]
    if unknown:
        raise CompareError(f"unknown variant {unknown[0]!r}; choose from {', '.join(BY_NAME)}")
    if len(set(s.variants)) != len(s.variants):
        raise CompareError(f"--variants names one twice: {' '.join(s.variants)}")
    if s.preset not in PRESETS:
        raise CompareError(f"unknown preset {s.preset!r}; choose one of {', '.join(PRESETS)}")
    if s.truncated >= s.max_length:
        raise CompareError(f"--truncated {s.truncated} does not fit --max-length {s.max_length}: the baseline must "
                           "read fewer tokens than the variants (0: no baseline)")
    if s.steps < s.evaluations:
        raise CompareError(f"--steps {s.steps} is fewer than the {s.evaluations} validation passes of a run")
    task = _task(s)
    if task.head not in SCORES:
        heads = " or ".join(h.replace("AutoModelFor", "") for h in SCORES)
        raise CompareError(f"task {task.name} trains a {task.head.replace('AutoModelFor', '')} head; compare scores "
                           f"{heads} (classification, causal or masked language modelling)")
    metric, higher = SCORES[task.head]
    auto = getattr(transformers, task.head)
    has_head = {v: auto in hf_longctx.REGISTRY[BY_NAME[v].model_type][1] for v in s.variants}
    runnable = [v for v in s.variants if has_head[v]]
    if not runnable:
        raise CompareError(f"no variant of {', '.join(s.variants)} has the {task.head.replace('AutoModelFor', '')} "
                           f"head task {task.name} needs")
    tokenizer = task.tokenizer()
    labels = None
    for length in (s.max_length, s.truncated):  # a length the task cannot use, found on one document per split
        if length:
            try:
                _, labels = load_task(task, tokenizer, length, 0, {"train": 1, "validation": 1, "test": 1})
            except TrainError as err:
                flag = "--max-length" if length == s.max_length else "--truncated"
                raise CompareError(str(err).replace("--max-length", flag)) from None
    preset = PRESETS[s.preset]

    def count(variant, fields, length=s.max_length):
        try:
            return count_parameters(variant, {**preset, **fields}, tokenizer, length, task, labels)
        except ValueError as err:  # a config field the builder refuses at this length
            raise CompareError(f"cannot build a {variant} {s.preset} model of {length} tokens: {err}") from None

    # The baseline is matched too: at a short length its position table is smaller (a quarter of a byte-level
    # model's parameters at 1,024 tokens).
    counters = {v: (lambda fields, v=v: count(v, fields)) for v in runnable}
    if s.truncated:
        counters[TRUNCATED] = lambda fields: count("longformer", fields, s.truncated)
    shapes = matched_shapes(counters, preset)
    parameters = {label: counters[label](shapes[label]) for label in counters}
    if max(parameters.values()) > (1 + MATCH) * min(parameters.values()):
        raise CompareError(f"cannot match the models' sizes within {MATCH:.0%}: {parameters}")
    runs = []
    for seed in s.seeds:
        runs += [Run(v, v, s.max_length, seed, shapes[v]) for v in runnable]
        if s.truncated:
            runs.append(Run(TRUNCATED, "longformer", s.truncated, seed, shapes[TRUNCATED]))
    return Plan(s, task, metric, higher, runs, [v for v in s.variants if not has_head[v]], parameters,
                window=preset["window"])


def budget_overrides(settings: CompareSettings, metric: str, higher: bool) -> dict:
    """The ``TrainingArguments`` every run shares beyond ``train``'s own: warm-up, weight decay, validation every
    ``steps / evaluations`` steps with the best checkpoint kept, one log line per validation."""
    s = settings
    every = max(1, s.steps // s.evaluations)
    best = "loss" if metric in ("bits_per_byte", "perplexity") else metric  # both follow the validation loss
    return {"warmup_steps": s.warmup, "weight_decay": s.weight_decay, "eval_strategy": "steps", "eval_steps": every,
            "save_strategy": "steps", "save_steps": every, "save_total_limit": 1, "load_best_model_at_end": True,
            "metric_for_best_model": best, "greater_is_better": higher if best == metric else False,
            "logging_steps": every, "disable_tqdm": True}


# ------------------------------------------------------------------- measuring ------------------------------------


def _mmap_threshold(size: int, trim: bool = False) -> None:
    """glibc's M_MMAP_THRESHOLD: with 128 KiB, every tensor above it is its own mapping, returned to the system
    when freed, so the resident size follows the live tensors (the benchmarks' memory children set the same).
    ``trim``: also hand the heap's free pages back (``malloc_trim``); without it a step reuses the resident pages
    earlier steps freed, and its growth read 0 MB for a Transformer-XL step that needs ~250 MB."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
    if trim:
        libc.malloc_trim(0)


class StepMeter(TrainerCallback):
    """A ``TrainerCallback``: the wall time of every training step (forward, backward,
    optimizer; evaluation excluded) and the peak memory of step ``memory_step`` over the memory before it, on
    CUDA the allocator's peak, on the CPU the resident-size high-water mark (Linux; None elsewhere)."""

    def __init__(self, memory_step: int):
        self.memory_step = memory_step
        self.seconds: list[float] = []
        self.peak_mb: float | None = None
        self._start = 0.0
        self._baseline = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.memory_step:
            self._baseline = self._memory_begin(args.device)
        self._start = self._now(args.device)

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = self._now(args.device) - self._start
        if state.global_step == self.memory_step and self._baseline is not None:
            self.peak_mb = self._memory_end(args.device)  # under another allocator setting: this step is not timed
        else:
            self.seconds.append(elapsed)

    @staticmethod
    def _now(device) -> float:
        if device.type == "cuda":  # the step's kernels are queued, not done, when the Python calls return
            import torch

            torch.cuda.synchronize(device)
        return time.perf_counter()

    def _memory_begin(self, device):
        import gc

        import torch

        gc.collect()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return torch.cuda.memory_allocated(device) / 2**20
        try:
            _mmap_threshold(128 * 1024, trim=True)
            baseline = status_kb("VmRSS") / 1024
            Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark (Linux >= 4.0)
            return baseline
        except OSError:
            return None

    def _memory_end(self, device) -> float:
        import torch

        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20 - self._baseline
        peak = status_kb("VmHWM") / 1024
        _mmap_threshold(32 * 2**20)  # glibc's largest dynamic threshold, where training settles anyway
        return peak - self._baseline


def _mean_length(split) -> float:
    import pyarrow.compute as pc

    return pc.mean(pc.list_value_length(split.data.column("input_ids"))).as_py() or 0.0


def reach_probe(trainer, task, tokenizer, data, first: int, seed: int, max_eval_samples, metric: str) -> dict:
    """Does the model read past its first ``first`` tokens? Its test ``metric`` with each document cut there (a
    language model's text re-cut into pieces of ``first`` tokens), tokenized as the truncated baseline's is; for a
    classifier also the share of its test predictions that the cut changes."""
    import numpy as np

    from .tasks import language_model_metrics
    from .train import load_task, result_rows, subsample

    cut, _ = load_task(task, tokenizer, first, seed, {"train": 1, "validation": 1, "test": max_eval_samples})
    cut = subsample(cut, "test", max_eval_samples)["test"]
    if metric != "accuracy":
        scores = language_model_metrics(task, trainer.evaluate(cut, metric_key_prefix="test"), cut, "test")
        value = next(r["value"] for r in result_rows(task, scores, "", {"test": cut}) if r["metric"] == metric)
        return {"first_tokens": first, "metric_on_first_tokens": value, "changed_predictions": None}
    whole = trainer.predict(data["test"]).predictions.argmax(-1)
    short = trainer.predict(cut).predictions.argmax(-1)
    labels = np.asarray(data["test"]["labels"])
    return {"first_tokens": first, "metric_on_first_tokens": round(float((short == labels).mean()), 4),
            "changed_predictions": round(float((whole != short).mean()), 4)}


def _quiet(trainer) -> None:
    """No line of JSON per log and evaluation (the compare prints a line per run)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def train_run(plan: Plan, run: Run, folder: Path, *, resume: bool, overwrite: bool) -> dict:
    """One run through ``train``'s phases, with a :class:`StepMeter`; returns what the compare records of it."""
    from .train import build_trainer, finish_run, plan_run

    s = plan.settings
    train_plan = plan_run(
        s.task, folder, data_dir=s.data_dir, variant=run.variant, preset=s.preset, max_length=run.length,
        epochs=1.0, max_steps=s.steps, batch_size=s.batch_size, learning_rate=s.learning_rate, dropout=0.0,
        seed=run.seed, init_from=None, max_train_samples=s.max_train_samples, max_eval_samples=s.max_eval_samples,
        overrides=budget_overrides(s, plan.metric, plan.higher_is_better), device=s.device, bf16=False,
        push_to_hub=None, corpora=None, tokenizer=None, log=lambda message: None, shape=run.shape or None)
    trainer, data, resume_from = build_trainer(train_plan, overwrite=overwrite, resume=resume)
    _quiet(trainer)
    meter = StepMeter(memory_step=s.steps)
    trainer.add_callback(meter)
    start = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume_from)
    summary = finish_run(train_plan, trainer, data, outcome, time.perf_counter() - start, resume_from)
    value = next(r["value"] for r in summary["results"] if r["metric"] == plan.metric)
    seconds = statistics.median(meter.seconds) if meter.seconds else None
    tokens = s.batch_size * _mean_length(data["train"])
    record = {
        "name": run.name, "label": run.label, "variant": run.variant, "seed": run.seed, "reads": run.length,
        "shape": run.shape, "parameters": sum(p.numel() for p in trainer.model.parameters()),
        plan.metric: value, "validation_best": trainer.state.best_metric,
        "majority_baseline_accuracy": next((r["value"] for r in summary["results"]
                                            if r["metric"] == "majority_baseline_accuracy"), None),
        "seconds_per_step": None if seconds is None else round(seconds, 4),
        "tokens_per_second": None if seconds is None else round(tokens / seconds),
        "peak_step_memory_mb": None if meter.peak_mb is None else round(meter.peak_mb, 1),
        "train_losses": summary["train_losses"], "train_seconds": summary["train_seconds"],
        "resumed_from": resume_from, "training": summary["training"],
    }
    first = min(plan.window, run.length)
    if run.label != TRUNCATED and first < run.length:
        record["reach"] = reach_probe(trainer, train_plan.task, train_plan.tokenizer, data, first, run.seed,
                                      s.max_eval_samples, plan.metric)
    return record


# ------------------------------------------------------------------- the table ------------------------------------


def summarise(plan: Plan, records: list[dict]) -> list[dict]:
    """One row per variant (and the baseline): the metric's mean and spread over seeds, the costs, a verdict."""
    metric, higher = plan.metric, plan.higher_is_better
    labels = [*dict.fromkeys(r.label for r in plan.runs)]
    rows = []
    for label in labels:
        mine = [r for r in records if r["label"] == label]
        if not mine:
            continue
        values = [r[metric] for r in mine]

        def mean_of(key):
            present = [r[key] for r in mine if r.get(key) is not None]
            return round(statistics.mean(present), 4) if present else None

        losses = [r["train_losses"] for r in mine]
        row = {"label": label, "variant": mine[0]["variant"], "reads": mine[0]["reads"],
               "parameters": mine[0]["parameters"], "seeds": [r["seed"] for r in mine], "values": values,
               "mean": round(statistics.mean(values), 4),
               "spread": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
               "seconds_per_step": mean_of("seconds_per_step"), "tokens_per_second": mean_of("tokens_per_second"),
               "peak_step_memory_mb": mean_of("peak_step_memory_mb"),
               # Does it learn at all: the logged training loss falls, and a classifier beats the majority class.
               "loss_first_last": [round(statistics.mean(x[0] for x in losses), 4),
                                   round(statistics.mean(x[-1] for x in losses), 4)],
               "last_loss_per_seed": [round(x[-1], 4) for x in losses]}
        majority = mine[0].get("majority_baseline_accuracy")
        row["learns"] = row["loss_first_last"][1] < 0.9 * row["loss_first_last"][0] and (
            majority is None or row["mean"] > majority)
        reach = [r["reach"] for r in mine if r.get("reach")]
        if reach:
            changed = [x["changed_predictions"] for x in reach if x["changed_predictions"] is not None]
            row["reach"] = {"first_tokens": reach[0]["first_tokens"],
                            "metric_on_first_tokens": round(statistics.mean(x["metric_on_first_tokens"]
                                                                            for x in reach), 4),
                            "changed_predictions": round(statistics.mean(changed), 4) if changed else None}
        rows.append(row)
    baseline = next((r for r in rows if r["label"] == TRUNCATED), None)
    for row in rows:
        if baseline is None or row is baseline:
            continue
        gain = (row["mean"] - baseline["mean"]) * (1 if higher else -1)
        row["gain_over_truncated"] = round(gain, 4)
        if gain <= 0:
            row["verdict"] = "does NOT beat truncation"
        elif min(len(row["values"]), len(baseline["values"])) < 2:
            row["verdict"] = "better than truncation (one seed: no spread to judge by)"
        elif gain > max(row["spread"], baseline["spread"]):
            row["verdict"] = "beats truncation"
        else:
            row["verdict"] = "better than truncation, within the spread"
    for name in plan.no_head:
        rows.append({"label": name, "variant": name, "no_head": True})
    return rows


def diagnosis(row: dict, metric: str, higher: bool = True) -> str:
    """What a row that does not clearly beat truncation shows about why."""
    seeds = row["last_loss_per_seed"]
    per_seed = f"; last loss per seed {', '.join(f'{x:.2f}' for x in seeds)}" if len(seeds) > 1 else ""
    parts = ["learns (training loss {:.2f} -> {:.2f}{}{})".format(
        *row["loss_first_last"], per_seed, ", above the majority class" if metric == "accuracy" else "")
        if row["learns"] else
        "does not learn at this budget (training loss {:.2f} -> {:.2f}{})".format(*row["loss_first_last"], per_seed)]
    reach = row.get("reach")
    if reach:
        first, cut, changed = reach["first_tokens"], reach["metric_on_first_tokens"], reach["changed_predictions"]
        gain = (row["mean"] - cut) * (1 if higher else -1)  # what reading past the first tokens buys
        parts.append((f"cut to its first {first} tokens it changes {changed:.0%} of its test predictions"
                      if changed is not None else f"on pieces of its first {first} tokens")
                     + f" ({metric} {cut:.4f} against {row['mean']:.4f} reading {row['reads']:,})"
                     + (": it does not read past its first window/segment" if changed == 0 else
                        ": reading further does not pay" if gain <= 0 else ""))
    return "; ".join(parts)


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], metric: str) -> list[str]:
    """The rows as a markdown table (printed as it is, and written to compare.md)."""
    lines = [f"| run | reads (tokens) | parameters | test {metric} (mean ± sd) | seeds | s / step | tokens / s "
             "| peak step memory (MB) | vs truncated |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r.get("no_head"):
            lines.append(f"| {r['label']} | - | - | no head | - | - | - | - | - |")
            continue
        gain = r.get("gain_over_truncated")
        versus = "baseline" if r["label"] == TRUNCATED else "-" if gain is None else f"{gain:+.3f}: {r['verdict']}"
        speed = "-" if r["tokens_per_second"] is None else f"{r['tokens_per_second']:,.0f}"
        spread = f" ± {r['spread']:.3f}" if len(r["seeds"]) > 1 else ""  # no spread from one seed
        lines.append(f"| {r['label']} | {r['reads']:,} | {r['parameters']:,} | {r['mean']:.3f}{spread} "
                     f"| {len(r['seeds'])} | {_fmt(r['seconds_per_step'], 2)} | "
                     f"{speed} | "
                     f"{_fmt(r['peak_step_memory_mb'], 0)} | {versus} |")
    return lines


def write_plot(rows: list[dict], metric: str, path: Path) -> bool:
    """compare.png: the metric with its spread per run beside time per step and peak step memory."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install 'hf_longctx[bench]'): no compare.png", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if not r.get("no_head")]
    names = [f"{r['label']}\n{r['reads']} tok" for r in shown]
    colours = ["tab:grey" if r["label"] == TRUNCATED else "tab:blue" for r in shown]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = ((f"test {metric} (mean ± sd over seeds)", [r["mean"] for r in shown], [r["spread"] for r in shown]),
              ("seconds per training step", [r["seconds_per_step"] or 0 for r in shown], None),
              ("peak memory of a training step (MB)", [r["peak_step_memory_mb"] or 0 for r in shown], None))
    for axis, (title, values, errors) in zip(axes, panels):
        axis.bar(names, values, yerr=errors, capsize=6, color=colours)
        axis.set_title(title, fontsize=10)
        axis.tick_params(axis="x", labelsize=8)
    for i, r in enumerate(shown):  # every seed's figure over its bar
        axes[0].scatter([i] * len(r["values"]), r["values"], color="black", s=10, zorder=3)
    if shown and shown[-1]["label"] == TRUNCATED:
        axes[0].axhline(shown[-1]["mean"], color="tab:grey", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def write_report(out: Path, plan: Plan, results: dict) -> list[str]:
    """compare.md, compare.json and compare.png; returns the lines printed at the end."""
    s = plan.settings
    rows = results["rows"]
    what = s.data_dir or s.task
    lines = [f"# hf-longctx compare: {what}", "",
             f"Test {plan.metric} ({'higher' if plan.higher_is_better else 'lower'} is better) of every variant "
             f"reading {s.max_length:,} tokens"
             + (f" and of the Longformer reading the first {s.truncated:,} (truncated)" if s.truncated else "")
             + f"; preset {s.preset} with sizes matched, {s.steps} steps of {s.batch_size}, learning rate "
             f"{s.learning_rate}, seeds {', '.join(map(str, s.seeds))}; the best validation checkpoint of each run. "
             "vs truncated: how much better than the baseline's mean (negative: worse).",
             "", *table(rows, plan.metric), ""]
    for row in rows:
        if row.get("verdict") and row["verdict"] != "beats truncation":
            lines.append(f"- {row['label']} {row['verdict']}: {diagnosis(row, plan.metric, plan.higher_is_better)}.")
        elif row.get("reach"):
            lines.append(f"- {row['label']}: {diagnosis(row, plan.metric, plan.higher_is_better)}.")
    if results.get("hub"):
        lines += ["", f"Best: {results['best']['name']}, exported to {results['hub']['folder']} and reloaded "
                  f"(same test {plan.metric}; max |logit difference| {results['hub']['max_abs_logit_diff']:.1e})."]
    lines += ["", f"Wall time {results['wall_seconds']:.0f} s on {results['machine']}.", "", "![compare](compare.png)"]
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    if not write_plot(rows, plan.metric, out / "compare.png"):
        lines = lines[:-2]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    return lines


# ------------------------------------------------------------------- export ---------------------------------------


def export_and_reload(task, model_dir: Path, hub_dir: Path, *, max_length: int, seed: int, batch_size: int,
                      max_eval_samples, metric: str, expected: float, device: str = "cpu") -> dict:
    """Export ``model_dir`` to ``hub_dir``, reload it through ``AutoTokenizer`` and the task's Auto class, and check
    that it reproduces the test ``metric`` that training measured (``expected``, to 4 decimals) and the saved
    model's logits (within 1e-5), on the ``device`` training ran on. Raises :class:`CompareError` otherwise."""
    import tempfile

    import numpy as np
    import transformers
    from transformers import AutoTokenizer, Trainer

    from .export import export_model
    from .run_arguments import device_arguments, training_arguments
    from .tasks import compute_metrics_for, language_model_metrics
    from .train import collator_for, label_arguments, load_task, result_rows, subsample

    hub = export_model(model_dir, hub_dir, overwrite=True)
    tokenizer = AutoTokenizer.from_pretrained(hub)
    data, _ = load_task(task, tokenizer, max_length, seed, {"train": 1, "validation": 1, "test": max_eval_samples})
    data = subsample(data, "test", max_eval_samples)
    auto = getattr(transformers, task.head)
    scores, logits, classes = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="hf_longctx_compare_") as tmp:
        args = training_arguments({"output_dir": tmp, "per_device_eval_batch_size": batch_size, "report_to": "none",
                                   "disable_tqdm": True, **device_arguments(device, False), **label_arguments(task)},
                                  {})
        for name, folder in (("hub", hub), ("saved", model_dir)):
            model = auto.from_pretrained(folder)
            classes[name] = type(model).__name__
            trainer = Trainer(model=model, args=args, data_collator=collator_for(task, tokenizer),
                              compute_metrics=compute_metrics_for(task))
            _quiet(trainer)
            scores[name] = language_model_metrics(task, trainer.evaluate(data["test"], metric_key_prefix="test"),
                                                  data["test"], "test")
            first = data["test"].select(range(min(batch_size, len(data["test"]))))
            logits[name] = np.asarray(trainer.predict(first).predictions)
    value = next(r["value"] for r in result_rows(task, scores["hub"], "", data) if r["metric"] == metric)
    max_diff = float(np.abs(logits["hub"] - logits["saved"]).max())
    if value != expected:
        raise CompareError(f"the Hub-ready folder scores test {metric} {value}, training measured {expected}")
    if max_diff > 1e-5:
        raise CompareError(f"the Hub-ready folder's logits differ from the saved model's by {max_diff}")
    return {"folder": str(hub), "reloaded_type": classes["hub"], f"test_{metric}": value,
            "max_abs_logit_diff": max_diff, "examples": len(data["test"])}


def card_text(plan: Plan, results: dict, record: dict) -> str:
    """The card's training section for the exported model: its run, and the compare that chose it."""
    return (f"{record['training']}\n\nChosen by `hf-longctx compare` as the best of "
            f"{len([r for r in results['rows'] if not r.get('no_head')])} runs (mean test {plan.metric} over seeds; "
            f"this is seed {record['seed']}, the best on validation), all under the same budget:\n\n"
            + "\n".join(table(results["rows"], plan.metric)))


def export_best(out: Path, plan: Plan, results: dict, records: list[dict]) -> dict:
    """Export the best row's run (its seed with the best validation figure) with the compare in its card."""
    from .export import SUMMARY_FILE

    higher = plan.higher_is_better
    rows = [r for r in results["rows"] if not r.get("no_head")]
    best_row = (max if higher else min)(rows, key=lambda r: r["mean"])
    mine = [r for r in records if r["label"] == best_row["label"]]
    validation = [r for r in mine if r["validation_best"] is not None]
    record = (max if higher else min)(validation, key=lambda r: r["validation_best"]) if validation else mine[0]
    model_dir = out / "runs" / record["name"] / "model"
    summary_file = model_dir / SUMMARY_FILE
    summary = json.loads(summary_file.read_text())
    summary["training"] = card_text(plan, results, record)
    baseline = next((r for r in rows if r["label"] == TRUNCATED), None)
    name = f"truncated_baseline_{plan.metric}_{plan.settings.truncated}_tokens"
    if baseline is not None and best_row is not baseline and not any(r["metric"] == name for r in summary["results"]):
        summary["results"].append({**summary["results"][0], "metric": name, "value": baseline["mean"]})
    summary_file.write_text(json.dumps(summary, indent=2))
    results["best"] = {"name": record["name"], "label": record["label"], plan.metric: record[plan.metric]}
    s = plan.settings
    return export_and_reload(plan.task, model_dir, out / "hub", max_length=record["reads"], seed=record["seed"],
                             batch_size=s.batch_size, max_eval_samples=s.max_eval_samples, metric=plan.metric,
                             expected=record[plan.metric], device=s.device)


# ------------------------------------------------------------------- the whole compare ----------------------------


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole} s" if whole < 90 else f"{whole // 60} min {whole % 60:02d} s"


def prepare_folder(out: Path, record: dict, *, overwrite: bool, resume: bool) -> dict:
    """``train``'s folder rules for the whole compare: a fresh compare needs a missing or empty folder;
    ``--overwrite`` deletes only an earlier compare's folder holding nothing else; ``--resume`` continues one made
    with the same arguments. Returns the finished runs' records (name -> record) to keep. Writes nothing."""
    if overwrite and resume:
        raise CompareError("--overwrite starts again and --resume continues: pass one of them")
    try:
        check_location(out)
    except FolderError as err:
        raise CompareError(f"--output-dir: {err}") from None
    if resume:
        try:
            earlier = json.loads((out / COMPARE_FILE).read_text())
        except (OSError, ValueError):
            raise CompareError(f"nothing to resume in {out}: it holds no readable {COMPARE_FILE}") from None
        changed = [f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in record.items()
                   if earlier.get(key) != value]
        if changed:
            raise CompareError(f"--resume continues the compare in {out} with its own arguments, but these differ: "
                               + "; ".join(changed) + " (another --output-dir keeps both)")
        try:
            finished = json.loads((out / RESULTS_FILE).read_text())["runs"]
        except (OSError, ValueError, KeyError):
            finished = []
        return {r["name"]: r for r in finished if (out / "runs" / r["name"] / "model").is_dir()}
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CompareError(f"{out} already exists and is not empty; pass --overwrite to replace an earlier "
                               "compare, or --resume to continue it")
        try:
            check_run_folder(out, COMPARE_FILE, ENTRIES)
        except FolderError as err:
            raise CompareError(str(err)) from None
    return {}


def run_compare(settings: CompareSettings, out, *, overwrite: bool = False, resume: bool = False, log=print,
                plan: Plan | None = None) -> dict:
    """Plan (unless ``plan`` is given), train every run (skipping those a resumed compare finished), write the
    table, the plot and the JSON, export the best model. Returns what compare.json holds."""
    start = time.perf_counter()
    out = Path(out)
    plan = plan or plan_compare(settings)
    record = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}
    done = prepare_folder(out, record, overwrite=overwrite, resume=resume)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    from .benchmarks.harness import load_average

    import torch

    results = {"settings": record, "metric": plan.metric, "higher_is_better": plan.higher_is_better,
               "no_head": plan.no_head, "planned_parameters": plan.parameters, "runs": [], "rows": [],
               "finished": False, "machine": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
                                             f"load average {load_average()} at the start"}
    log(f"hf-longctx compare: {len(plan.runs)} runs of {settings.steps} steps, parameters "
        + ", ".join(f"{label} {n:,}" for label, n in plan.parameters.items())
        + "".join(f"; {v}: no {plan.task.head.replace('AutoModelFor', '')} head" for v in plan.no_head))
    records, spent, trained = [], 0.0, 0
    for i, run in enumerate(plan.runs, 1):
        folder = out / "runs" / run.name
        if run.name in done:
            records.append(done[run.name])
            log(f"[run {i}/{len(plan.runs)}] {run.name}: finished earlier, test {plan.metric} "
                f"{done[run.name][plan.metric]}")
            continue
        again = folder.is_dir() and any((folder / "checkpoints").glob("checkpoint-*"))
        log(f"[run {i}/{len(plan.runs)}] {run.name}: {run.variant} reading {run.length:,} tokens"
            + (f", feed-forward {run.shape['intermediate_size']}" if run.shape else "")
            + (", resumed from its last checkpoint" if again else ""))
        run_start = time.perf_counter()
        rec = train_run(plan, run, folder, resume=again, overwrite=folder.exists() and not again)
        records.append(rec)
        took = time.perf_counter() - run_start
        spent, trained = spent + took, trained + 1
        left = sum(1 for r in plan.runs[i:] if r.name not in done)
        elapsed = time.perf_counter() - start
        log(f"[run {i}/{len(plan.runs)}] {run.name}: test {plan.metric} {rec[plan.metric]:.4f} in {_duration(took)}"
            f" | overall {i}/{len(plan.runs)} runs, {_duration(elapsed)} elapsed, about "
            f"{_duration(spent / trained * left)} left")
        results["runs"] = records
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")  # what --resume keeps
    results["runs"] = records
    results["rows"] = summarise(plan, records)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_report(out, plan, results)  # the table exists even if the export below fails
    log("exporting the best model and reloading it through the Auto classes")
    results["hub"] = export_best(out, plan, results, records)
    results["finished"] = True
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    for line in write_report(out, plan, results):
        if not line.startswith("![") and not line.startswith("# "):
            log(line)
    return results


# ------------------------------------------------------------------- CLI ------------------------------------------
# The arguments are defined in hf_longctx_cli.compare_arguments; a flag left out takes --quick's value or the
# CompareSettings default.


def settings_from(args) -> CompareSettings:
    """The settings of the command line: a flag given wins, then ``--quick``'s value, then the default."""
    base = replace(CompareSettings(), **QUICK) if args.quick else CompareSettings()
    given = {"max_length": args.max_length, "truncated": args.truncated, "steps": args.steps,
             "batch_size": args.batch_size, "learning_rate": args.learning_rate, "device": args.device,
             "variants": None if args.variants is None else tuple(args.variants),
             "seeds": None if args.seeds is None else tuple(args.seeds)}
    # With --data-dir and no --task, the folder's own classification task.
    task = args.task if args.data_dir is not None else args.task or base.task
    return replace(base, task=task, data_dir=args.data_dir, **{k: v for k, v in given.items() if v is not None})


def run(args) -> int:
    import datasets
    import transformers

    # A few lines of progress read better than dozens of bars. The switches are global to the process, so they
    # are put back on the way out: a later Trainer in the same process (a test, a notebook) that found the bars
    # off printed its metrics as Python dicts on stdout.
    bars = (datasets.is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled())
    verbosity = transformers.utils.logging.get_verbosity()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        return _run(args)
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            transformers.utils.logging.enable_progress_bar()
        transformers.utils.logging.set_verbosity(verbosity)


def _run(args) -> int:
    from .demo import pick_threads

    settings = settings_from(args)
    out = Path(args.output_dir)
    try:
        plan = plan_compare(settings)  # every refusal before a thread is set or a file written
        record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}
        prepare_folder(out, record, overwrite=args.overwrite, resume=args.resume)
    except CompareError as err:
        print(f"hf-longctx compare: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(pick_threads(args.threads))
    from .train import TrainError

    try:
        results = run_compare(settings, out, overwrite=args.overwrite, resume=args.resume, plan=plan)
    except (CompareError, TrainError) as err:
        print(f"hf-longctx compare: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nhf-longctx compare: interrupted; the finished runs and the last checkpoint of the current one are "
              f"kept: go on with the same command and --resume (folder {out})", file=sys.stderr)
        return 130
    print(f"everything is in {out}/: compare.md, compare.json, compare.png, runs/, hub/ "
          f"(total wall time {_duration(results['wall_seconds'])})")
    return 0


__all__ = ["CompareError", "CompareSettings", "QUICK", "matched_shapes", "plan_compare", "run_compare"]
