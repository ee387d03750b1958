"""``hf-longctx train`` and ``hf-longctx evaluate``: the standard ``Trainer`` on a shipped task or a ``--data-dir``.

``train`` writes ``OUTPUT/hf_longctx_run.json`` (the arguments of the run, so ``--resume`` can check it continues
the same run and ``--overwrite`` can tell a run folder from anything else), ``OUTPUT/checkpoints/`` (Trainer
checkpoints, for ``--resume``) and, when training ends, ``OUTPUT/model/`` (model, tokenizer,
``hf_longctx_summary.json`` with the training configuration and test metrics, which ``hf-longctx export`` puts in
the model card). The model folder is written to a staging folder and renamed, so an interrupted run never leaves a
``model/`` that loads half-trained.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .data.files import DataError
from .export import SUMMARY_FILE
from .folders import FolderError, check_run_folder
from .tasks import PRESETS, TASKS, VARIANTS, compute_metrics_for, resolve_task


class TrainError(RuntimeError):
    """A run that cannot start; the message says why."""


def _parse_overrides(pairs: list[str]) -> dict:
    """``["learning_rate=3e-4", "bf16=true"]`` -> TrainingArguments overrides, values parsed as JSON when they can be."""
    from transformers import TrainingArguments

    known = set(TrainingArguments.__dataclass_fields__)
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise TrainError(f"--set takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        if key not in known:
            raise TrainError(f"--set {key}: not a TrainingArguments field")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def subsample(data, split: str, n: int | None):
    """At most ``n`` examples of ``split``, drawn at random with a fixed seed (the shipped files are sorted by
    label, so the first ``n`` would often be a single class)."""
    if n and n < len(data[split]):
        data[split] = data[split].shuffle(seed=0).select(range(n))
    return data


def majority_baseline(train_labels, test_labels) -> float:
    """Test accuracy of always answering the most frequent training label: the floor any classifier must beat."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    majority = np.bincount(train_labels).argmax()
    return float((test_labels == majority).mean())


def check_tokenizer_fits(tokenizer, config) -> None:
    """A tokenizer whose ids do not fit the model's vocabulary is a wrong pairing, not something to train on."""
    if len(tokenizer) > config.vocab_size:
        raise TrainError(
            f"the tokenizer has {len(tokenizer)} ids but the model's vocabulary has {config.vocab_size}: "
            "they do not belong together"
        )
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != config.pad_token_id:
        raise TrainError(f"tokenizer pad id {tokenizer.pad_token_id} != model pad_token_id {config.pad_token_id}")


RUN_FILE = "hf_longctx_run.json"  # the arguments of a run; also marks a folder as one that --overwrite may delete
RUN_ENTRIES = ("checkpoints", "model")  # what a run writes beside RUN_FILE (and its staging folders .model.*)


def _prepare_run_dir(output_dir: Path, run_record: dict, *, overwrite: bool, resume: bool) -> str | None:
    """Make ``output_dir`` ready for the run described by ``run_record``; return the checkpoint to resume from.

    Checked before any data is loaded, so a wrong flag costs a second, not a training run:
    a fresh run needs an empty or missing folder; ``--overwrite`` deletes only a folder this command wrote
    (it has ``RUN_FILE``), never one a user pointed at by mistake; ``--resume`` needs a checkpoint and the same
    arguments as the run it continues (a different preset or task would fail later, deep inside ``load_state_dict``).
    """
    if overwrite and resume:
        raise TrainError("--overwrite starts again and --resume continues: pass one of them")
    record_file = output_dir / RUN_FILE
    if resume:
        if not record_file.is_file():
            raise TrainError(f"nothing to resume in {output_dir}: it holds no {RUN_FILE}, so no train run wrote it")
        try:
            earlier = json.loads(record_file.read_text())
        except json.JSONDecodeError as err:
            raise TrainError(f"{record_file} is damaged ({err}); start again with --overwrite") from err
        changed = [f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in run_record.items()
                   if key not in ("epochs", "max_steps") and earlier.get(key) != value]
        if changed:
            raise TrainError(f"--resume continues the run in {output_dir} with its own arguments, but these differ: "
                             + "; ".join(changed))
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir / "checkpoints")) if (output_dir / "checkpoints").is_dir() else None
        if last is None:
            raise TrainError(f"nothing to resume in {output_dir}: no checkpoints/checkpoint-* yet (a checkpoint is "
                             "saved every epoch by default; --set save_strategy=steps --set save_steps=N saves more often)")
        return last
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        if not overwrite:
            raise TrainError(f"{output_dir} already exists and is not empty; pass --overwrite to replace an earlier "
                             "run, or --resume to continue it")
        try:  # only an earlier run's folder, holding nothing the run did not write (hf_longctx.folders)
            check_run_folder(output_dir, RUN_FILE, RUN_ENTRIES)
        except FolderError as err:
            raise TrainError(str(err)) from None
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record_file.write_text(json.dumps(run_record, indent=2) + "\n")
    return None


def command_line(run_record: dict) -> str:
    """The ``hf-longctx train`` command that repeats the run of ``run_record``, for the model card."""
    r = run_record
    parts = ["hf-longctx train", f"--data-dir {r['data_dir']}" if r["data_dir"] else f"--task {r['task']}"]
    parts.append(f"--init-from {r['init_from']}" if r["init_from"]
                 else f"--variant {r['variant']} --preset {r['preset']}")
    parts.append(f"--max-length {r['max_length']}")
    parts.append(f"--max-steps {r['max_steps']}" if r["max_steps"] > 0 else f"--epochs {r['epochs']}")
    parts.append(f"--batch-size {r['batch_size']} --lr {r['learning_rate']} --seed {r['seed']}")
    if r["dropout"]:
        parts.append(f"--dropout {r['dropout']}")
    for flag in ("max_train_samples", "max_eval_samples"):
        if r[flag]:
            parts.append(f"--{flag.replace('_', '-')} {r[flag]}")
    parts += [f"--set {key}={json.dumps(value)}" for key, value in r["overrides"].items()]
    return " ".join(parts)


def folder_sha256(data_dir) -> str:
    """One sha256 over a --data-dir folder's three files, so --resume notices edited data."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        digest.update((Path(data_dir) / f"{split}.jsonl").read_bytes())
    return digest.hexdigest()


def _reset_linear_layers(module, std: float) -> None:
    """Fresh N(0, std) weights and zero biases, as at initialisation. (``model._init_weights`` would skip them:
    transformers 5 marks loaded parameters as initialised and its init functions leave those alone.)"""
    import torch

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, std)
                if layer.bias is not None:
                    layer.bias.zero_()


def _check_init_from(folder: Path, max_length: int):
    """A --init-from folder must hold a model that takes ``max_length`` tokens (checked before the run starts);
    returns its config."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise TrainError(f"--init-from {folder} is not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(folder)
    if not hasattr(config, "max_input_tokens"):
        raise TrainError(f"--init-from {folder} holds a {config.model_type!r} model, not an hf_longctx one; convert it "
                         "first with `hf-longctx convert`")
    longest = config.max_input_tokens
    if max_length > longest:
        raise TrainError(f"--max-length {max_length} is longer than the {longest} tokens --init-from {folder} takes; "
                         "pass a smaller --max-length, or extend the model with `hf-longctx convert --from-short`")
    return config


def _task(name, data_dir=None, label_names=None):
    try:
        return resolve_task(name, data_dir, label_names)
    except ValueError as err:  # an unknown task, or a --data-dir folder that is missing or malformed (DataError)
        raise TrainError(str(err)) from err


def train(task_name: str | None, output_dir, *, data_dir=None, variant: str = "longformer", preset: str = "small",
          max_length: int = 1024, epochs: float = 1.0, max_steps: int = -1, batch_size: int = 4,
          learning_rate: float = 5e-4, dropout: float = 0.0, seed: int = 0, init_from=None, overwrite: bool = False,
          resume: bool = False, max_train_samples: int | None = None, max_eval_samples: int | None = None,
          overrides: dict | None = None, log=print) -> dict:
    """Train ``variant`` on the shipped task ``task_name``, or on the classification folder ``data_dir``
    (:data:`hf_longctx.data.files.FOLDER_FORMAT`); returns the summary written next to the model."""
    import transformers
    from transformers import Trainer, TrainingArguments, set_seed

    from .collator import LongContextCollator

    # Everything that can be wrong with the arguments or the data is found before the run folder is touched.
    task = _task(task_name, data_dir)  # a --data-dir folder is read and checked here
    if variant not in VARIANTS:
        raise TrainError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    output_dir = Path(output_dir)
    for flag, path in (("--init-from", init_from), ("--data-dir", data_dir)):
        if path is not None and Path(path).resolve().is_relative_to(output_dir.resolve()):
            raise TrainError(f"{flag} {path} lies inside --output-dir {output_dir}, which the run writes (and "
                             "--overwrite deletes); choose another --output-dir")
    if init_from is not None:
        init_config = _check_init_from(Path(init_from), max_length)
    set_seed(seed)
    tokenizer = task.tokenizer()
    try:
        data, labels = task.load(tokenizer, max_length, seed)
    except DataError as err:  # a damaged packaged file
        raise TrainError(str(err)) from err
    data = subsample(data, "train", max_train_samples)
    data = subsample(subsample(data, "validation", max_eval_samples), "test", max_eval_samples)
    run_record = {
        "task": task.name, "data_dir": None if data_dir is None else str(data_dir),
        "data_sha256": None if data_dir is None else folder_sha256(data_dir), "variant": variant, "preset": preset,
        "max_length": max_length, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "learning_rate": learning_rate, "dropout": dropout, "seed": seed,
        "init_from": None if init_from is None else str(init_from), "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples, "overrides": overrides or {},
    }
    resume_from = _prepare_run_dir(output_dir, run_record, overwrite=overwrite, resume=resume)
    auto_class = getattr(transformers, task.head)
    if init_from is not None:
        # A classification task gives its labels: a masked-LM or converted checkpoint has none, and a
        # classifier trained on other labels gets a new head (ignore_mismatched_sizes) instead of a shape error.
        label_args = {} if labels is None else dict(
            num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
            ignore_mismatched_sizes=True)
        model = auto_class.from_pretrained(init_from, **label_args)
        # The label names a classifier checkpoint was trained on (other heads have none that matter).
        is_classifier = any(a.endswith("ForSequenceClassification") for a in init_config.architectures or [])
        earlier = [init_config.id2label[i] for i in range(init_config.num_labels)] if is_classifier else None
        if labels is not None and earlier is not None and earlier != list(labels):
            # Same number of labels but other names (or order): the old head would be silently reused.
            _reset_linear_layers(model.classifier, model.config.initializer_range)
            log(f"--init-from {init_from} was trained on labels {earlier}; its classifier head is re-initialised "
                f"for {list(labels)}")
    else:
        config = VARIANTS[variant](PRESETS[preset], tokenizer, max_length, task, labels, dropout)
        model = auto_class.from_config(config)
    check_tokenizer_fits(tokenizer, model.config)

    args = TrainingArguments(**{
        "output_dir": str(output_dir / "checkpoints"), "num_train_epochs": epochs, "max_steps": max_steps,
        "per_device_train_batch_size": batch_size, "per_device_eval_batch_size": batch_size,
        "learning_rate": learning_rate, "warmup_steps": 0.1, "lr_scheduler_type": "linear",
        "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1, "logging_steps": 10,
        "report_to": "none", "use_cpu": True, "seed": seed,
        **(overrides or {}),
    })
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
        data_collator=LongContextCollator(pad_token_id=tokenizer.pad_token_id), processing_class=tokenizer,
        compute_metrics=compute_metrics_for(task),
    )
    if resume_from:
        log(f"resuming from {resume_from}")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - start
    test = trainer.evaluate(data["test"], metric_key_prefix="test")
    dataset_name = task.name if data_dir is None else Path(data_dir).resolve().name
    results = [
        {"task": task.head.replace("AutoModelFor", ""), "dataset": dataset_name, "split": "test",
         "metric": key[len("test_"):], "value": round(float(value), 4)}
        for key, value in test.items()
        if key.startswith("test_") and key not in ("test_runtime", "test_samples_per_second", "test_steps_per_second")
    ]
    if task.head == "AutoModelForSequenceClassification":
        results.append({"task": "SequenceClassification", "dataset": dataset_name, "split": "test",
                        "metric": "majority_baseline_accuracy",
                        "value": round(majority_baseline(data["train"]["labels"], data["test"]["labels"]), 4)})
    summary = {
        "task": task.name, "variant": variant, "preset": preset, "max_length": max_length,
        "training": f"`{command_line(run_record)}`: {trainer.state.global_step} steps, {train_seconds:.0f} s on "
                    f"{args.device}",
        "results": results, "train_seconds": round(train_seconds, 1),
        "resumed_from": resume_from,
        "train_losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    model_dir = output_dir / "model"
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=output_dir))
    try:
        trainer.save_model(str(staging))
        (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(json.dumps({"model": str(model_dir), **{r["metric"]: r["value"] for r in results}}))
    return summary


def evaluate_model(model_dir, task_name: str | None, *, data_dir=None, split: str = "test",
                   max_length: int | None = None, batch_size: int = 4, max_samples: int | None = None) -> dict:
    """Metrics of a saved model on a split of a shipped task or of a ``data_dir`` folder (the model's own tokenizer
    is used when it saved one)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer, Trainer, TrainingArguments

    from .collator import LongContextCollator

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"{model_dir} is not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    label_names = [config.id2label[i] for i in range(config.num_labels)] if data_dir is not None else None
    task = _task(task_name, data_dir, label_names)
    tokenizer = AutoTokenizer.from_pretrained(model_dir) if (model_dir / "tokenizer_config.json").is_file() \
        else task.tokenizer()
    check_tokenizer_fits(tokenizer, config)
    max_length = max_length or config.max_input_tokens
    try:
        data, _ = task.load(tokenizer, max_length, 0)
    except DataError as err:  # a damaged packaged file
        raise TrainError(str(err)) from err
    if split not in data:
        raise TrainError(f"task {task.name} has splits {list(data)}, not {split!r}")
    data = subsample(data, split, max_samples)
    model = getattr(transformers, task.head).from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model, args=TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size,
                                                report_to="none", use_cpu=True),
            data_collator=LongContextCollator(pad_token_id=tokenizer.pad_token_id),
            compute_metrics=compute_metrics_for(task),
        )
        metrics = trainer.evaluate(data[split], metric_key_prefix=split)
    if task.head == "AutoModelForCausalLM":
        from .data.wiki_bytes import bits_per_byte

        metrics[f"{split}_bits_per_byte"] = bits_per_byte(metrics[f"{split}_loss"])
    return metrics


# ---------------------------------------------------------------- CLI --------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=sorted(TASKS), help="a shipped task to train on (see `hf-longctx data list`)")
    parser.add_argument("--data-dir", help="or your own documents: a folder with train.jsonl, validation.jsonl and "
                        'test.jsonl, one {"text": ..., "label": ...} per line (a BPE is trained on its train split)')
    parser.add_argument("--variant", default="longformer", help=f"model family: {', '.join(VARIANTS)}")
    parser.add_argument("--preset", default="small", help=f"model size: {', '.join(PRESETS)}")
    parser.add_argument("--output-dir", required=True, help="run folder: hf_longctx_run.json, checkpoints/ and, at "
                        "the end, model/")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per example (longer ones are truncated)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4, dest="learning_rate")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", help="start from this saved or converted model instead of a random one")
    parser.add_argument("--max-train-samples", type=int, help="use only N training examples (a seeded random draw)")
    parser.add_argument("--max-eval-samples", type=int,
                        help="evaluate on N validation/test examples (a seeded random draw)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainingArguments field, e.g. --set gradient_accumulation_steps=4")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint "
                        "(same arguments; --epochs and --max-steps may grow)")
    parser.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first if an earlier train run "
                        "wrote it (any other folder is never deleted)")


def run(args) -> int:
    try:
        train(args.task, args.output_dir, data_dir=args.data_dir, variant=args.variant, preset=args.preset,
              max_length=args.max_length,
              epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
              learning_rate=args.learning_rate, dropout=args.dropout, seed=args.seed, init_from=args.init_from,
              overwrite=args.overwrite, resume=args.resume, max_train_samples=args.max_train_samples,
              max_eval_samples=args.max_eval_samples,
              overrides=_parse_overrides(args.set))
    except TrainError as err:
        print(f"hf-longctx train: {err}", file=sys.stderr)
        return 1
    return 0
