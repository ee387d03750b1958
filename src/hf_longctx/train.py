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
import inspect
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .callbacks import PRIVATE_RNG_FILE, _epoch_callbacks, _private_rng_callbacks  # noqa: F401  (public here too)
from .export import SUMMARY_FILE
from .folders import LOAD_ERRORS, FolderError, check_location, check_run_folder, load_error, save_model_staged
from .run_arguments import (  # noqa: F401  (TrainError and the argument helpers stay importable from here)
    NO_EFFECT,
    OWNED_FIELDS,
    TrainError,
    _parse_overrides,
    check_overrides,
    check_positive,
    device_arguments,
    pick_device,
    training_arguments,
)
from .tasks import (
    PRESETS,
    PRETRAINING_TASKS,
    check_pretraining_tokenizer,
    compute_metrics_for,
    language_model_metrics,
    logits_for_metrics,
    resolve_task,
)
from .variants import BY_NAME, by_model_type, variant_name


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
RUN_ENTRIES = ("checkpoints", "model", "hub")  # what a run writes beside RUN_FILE (and staging folders .model.*)


def _prepare_run_dir(output_dir: Path, run_record: dict, *, overwrite: bool, resume: bool, main: bool = True,
                     barrier=lambda: None, check_only: bool = False) -> str | None:
    """Make ``output_dir`` ready for the run described by ``run_record``; return the checkpoint to resume from.

    Under several processes (torchrun, accelerate launch) every process runs the checks, on the folder as it was
    before any of them wrote, so all refuse the same bad arguments; ``barrier()`` (a wait for every process) then
    lets only the ``main`` one delete (``--overwrite``) and write, and a second ``barrier()`` holds the others until
    the folder is ready. (Each process preparing the folder made the second find the first's run file.)

    Checked before any data is loaded, so a wrong flag costs a second, not a training run:
    a fresh run needs an empty or missing folder; ``--overwrite`` deletes only a folder this command wrote
    (it has ``RUN_FILE``), never one a user pointed at by mistake; ``--resume`` needs a checkpoint and the same
    arguments as the run it continues (a different preset or task would fail later, deep inside ``load_state_dict``).
    ``check_only``: the refusals alone, no wait and no write (``train`` runs them before it tokenizes anything).
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
                             "saved every epoch by default; --set save_steps=N saves every N steps)")
        if check_only:
            return last
        barrier()  # nothing is written: every process reads the same checkpoint
        return last
    replace = output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir()))
    if replace:
        if not overwrite:
            raise TrainError(f"{output_dir} already exists and is not empty; pass --overwrite to replace an earlier "
                             "run, or --resume to continue it")
        try:  # only an earlier run's folder, holding nothing the run did not write (hf_longctx.folders)
            check_run_folder(output_dir, RUN_FILE, RUN_ENTRIES)
        except FolderError as err:
            raise TrainError(str(err)) from None
    if check_only:
        return None
    barrier()  # every process has checked the folder as it was
    if main:
        if replace:
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        record_file.write_text(json.dumps(run_record, indent=2) + "\n")
    barrier()  # the folder is ready for all
    return None


def command_line(run_record: dict) -> str:
    """The ``hf-longctx train`` command that repeats the run of ``run_record``, for the model card."""
    r = run_record
    parts = ["hf-longctx train"]
    if r["task"] in PRETRAINING_TASKS:
        parts.append(f"--task {r['task']}")
        if r.get("corpora"):
            parts.append("--corpora " + " ".join(r["corpora"]))
        if r.get("tokenizer"):
            parts.append(f"--tokenizer {r['tokenizer']}")
    if r["data_dir"] or r["task"] not in PRETRAINING_TASKS:
        parts.append(f"--data-dir {r['data_dir']}" if r["data_dir"] else f"--task {r['task']}")
    parts.append(f"--init-from {r['init_from']}" if r["init_from"]
                 else f"--variant {r['variant']} --preset {r['preset']}")
    parts.append(f"--max-length {r['max_length']}")
    parts.append(f"--max-steps {r['max_steps']}" if r["max_steps"] > 0 else f"--epochs {r['epochs']}")
    parts.append(f"--batch-size {r['batch_size']} --learning-rate {r['learning_rate']} --seed {r['seed']}")
    if r["dropout"] and not r["init_from"]:
        parts.append(f"--dropout {r['dropout']}")
    for flag in ("max_train_samples", "max_eval_samples"):
        if r[flag]:
            parts.append(f"--{flag.replace('_', '-')} {r[flag]}")
    parts += [f"--set {key}={json.dumps(value)}" for key, value in r["overrides"].items()]
    if r.get("shape"):  # no flag gives it: said as a comment
        parts.append("# preset fields " + " ".join(f"{key}={value}" for key, value in r["shape"].items()))
    return " ".join(parts)


def folder_sha256(data_dir, raw: bool = False) -> str:
    """One sha256 over a --data-dir folder's data files (a classification folder's three splits, or a raw-text
    folder's *.txt and *.jsonl), so --resume notices edited data."""
    digest = hashlib.sha256()
    folder = Path(data_dir)
    splits = [folder / f"{split}.jsonl" for split in ("train", "validation", "test")]
    if not raw:  # as before raw-text folders, so earlier runs' records still --resume
        for path in splits:
            digest.update(path.read_bytes())
        return digest.hexdigest()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".txt", ".jsonl")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
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


def load_task(task, tokenizer, max_length: int, seed: int, limits: dict | None = None):
    """``task.load(...)``, its refusals (a damaged packaged file, a length too short for the task) as
    :class:`TrainError`, and every example checked to fit ``max_length``: a tokenizer cannot truncate below its
    special tokens, so ``--max-length 1`` left whole documents that failed inside the model after the run began.
    ``limits`` (split -> at most that many examples) lets a pretraining task tokenize only what it needs."""
    try:
        takes_limits = "limits" in inspect.signature(task.load).parameters  # the others are small or generated
        extra = {"limits": limits} if takes_limits and limits else {}
        data, labels = task.load(tokenizer, max_length, seed, **extra)
    except ValueError as err:  # DataError included
        raise TrainError(f"task {task.name}: {err}") from None
    import pyarrow.compute as pc

    for split, examples in data.items():
        # Through Arrow: a Python list of wiki-bytes' millions of ids would take seconds and hundreds of MB.
        longest = pc.max(pc.list_value_length(examples.data.column("input_ids"))).as_py() or 0
        if longest > max_length:
            raise TrainError(f"--max-length {max_length} is too short for task {task.name}: its {split} split still "
                             f"has {longest}-token examples (the tokenizer keeps its special tokens); pass more")
    return data, labels


def lengthen_advice(folder, max_length: int) -> str:
    """The command that makes the hf_longctx model in ``folder`` read ``max_length`` tokens."""
    return f"`hf-longctx convert {folder} LONGER_DIR --max-length {max_length}` lengthens its position table"


def _check_init_from(folder: Path, max_length: int, task, tokenizer):
    """A --init-from folder must hold an hf_longctx model of the task's kind that takes ``max_length`` tokens and
    ``tokenizer``'s ids (all checked before the run folder is created); returns its config."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise TrainError(f"--init-from {folder} is not a model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise TrainError(f"--init-from {folder}: cannot read its config: {err}") from None
    if not hasattr(config, "max_input_tokens"):
        raise TrainError(f"--init-from {folder} holds a {config.model_type!r} model, not an hf_longctx one; convert it "
                         "first with `hf-longctx convert`")
    longest = config.max_input_tokens
    if max_length > longest:
        raise TrainError(f"--max-length {max_length} is longer than the {longest} tokens --init-from {folder} takes; "
                         f"pass a smaller --max-length, or {lengthen_advice(folder, max_length)}")
    check_has_head(config.model_type, task, f"--init-from {folder}")
    causal_task = task.head == "AutoModelForCausalLM"
    # The Longformer's `causal` and the Reformer's `is_decoder` fix the attention for every head; a variant that is
    # causal whatever its head (the Transformer-XL: its classifier reads the last token) fits every task it has a
    # head for.
    causal = getattr(config, "causal", False) or getattr(config, "is_decoder", False)
    record = by_model_type(config.model_type)
    if not (record and record.always_causal) and causal != causal_task:
        kind = "a causal language model" if causal else "a bidirectional encoder"
        raise TrainError(f"--init-from {folder} holds {kind}, but task {task.name} needs "
                         f"{'a causal' if causal_task else 'a bidirectional'} model")
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, config)
    return config


def check_has_head(model_type: str, task, what: str) -> None:
    """A variant without the head ``task`` trains (the Transformer-XL has no masked-LM head) is refused by name,
    before anything is built (``AutoModelForMaskedLM.from_config`` said only "Unrecognized configuration class")."""
    import hf_longctx
    import transformers

    heads = hf_longctx.REGISTRY[model_type][1] if model_type in hf_longctx.REGISTRY else {}
    if heads and getattr(transformers, task.head) not in heads:
        have = sorted(cls.__name__.replace("AutoModelFor", "") for cls in heads if cls.__name__ != "AutoModel")
        others = [variant_name(t) for t, (_, h) in hf_longctx.REGISTRY.items()
                  if getattr(transformers, task.head) in h]
        raise TrainError(f"{what}: a {variant_name(model_type)} model has no "
                         f"{task.head.replace('AutoModelFor', '')} head (its heads: {', '.join(have)}); task "
                         f"{task.name} needs one: use {' or '.join(others) or 'another variant'}")


def init_tokenizer(folder: Path, task, tokenizer_choice: str | None = None):
    """The tokenizer a run from ``--init-from folder`` uses: the folder's own when it saved one (a model pretrained
    with one tokenizer must read its fine-tuning data with it: the task's shipped BPE gives other ids for the same
    text), else the task's. A task whose data are ids of its own tokenizer (wiki-bytes) keeps it."""
    from transformers import AutoTokenizer

    if task.fixed_tokenizer or not (folder / "tokenizer_config.json").is_file():
        return None
    if tokenizer_choice is not None:
        raise TrainError(f"--tokenizer {tokenizer_choice}: --init-from {folder} brings its own tokenizer, which the "
                         "run must use; leave --tokenizer out")
    try:
        return AutoTokenizer.from_pretrained(folder)
    except LOAD_ERRORS as err:
        raise TrainError(f"--init-from {folder}: cannot load its tokenizer: {load_error(err)}") from None


def _task(name, data_dir=None, label_names=None, **pretraining):
    try:
        return resolve_task(name, data_dir, label_names, **pretraining)
    except ValueError as err:  # an unknown task, or a --data-dir folder that is missing or malformed (DataError)
        raise TrainError(str(err)) from err


def _cleanup_refused_run(output_dir: Path, existed: bool) -> None:
    """Remove what a fresh run wrote when it stops before training starts: a refused run leaves nothing behind."""
    if not existed:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for name in (RUN_FILE, *RUN_ENTRIES):
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def result_rows(task, test_metrics: dict, dataset_name: str, data) -> list[dict]:
    """The card's result rows from ``trainer.evaluate(..., metric_key_prefix="test")``: every metric, bits per
    byte for byte-level language modelling (wiki-bytes' headline figure), and a classifier's majority baseline."""
    row = {"task": task.head.replace("AutoModelFor", ""), "dataset": dataset_name, "split": "test"}
    skip = ("test_runtime", "test_samples_per_second", "test_steps_per_second")
    results = [{**row, "metric": key[len("test_"):], "value": round(float(value), 4)}
               for key, value in test_metrics.items() if key.startswith("test_") and key not in skip]
    if "bits_per_byte" in task.metrics and "test_loss" in test_metrics and "test_bits_per_byte" not in test_metrics:
        from .data.wiki_bytes import bits_per_byte

        results.append({**row, "metric": "bits_per_byte", "value": round(bits_per_byte(test_metrics["test_loss"]), 4)})
    if task.head == "AutoModelForSequenceClassification":
        results.append({**row, "metric": "majority_baseline_accuracy",
                        "value": round(majority_baseline(data["train"]["labels"], data["test"]["labels"]), 4)})
    return results


def _seconds(value: float) -> str:
    """A duration for a person: tenths under ten seconds (a short run read "0 s")."""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def label_arguments(task) -> dict:
    """``label_names`` for a language model, named rather than read from forward's signature (Trainer takes every
    argument with "label" in its name as one that each batch must carry, or it reports no loss)."""
    return {"label_names": ["labels"]} if task.head in ("AutoModelForCausalLM", "AutoModelForMaskedLM") else {}


def collator_for(task, tokenizer, seed: int = 0):
    """The batching of ``task``: masking for masked LM (:class:`~hf_longctx.collator.MaskedLMCollator`), padding
    alone otherwise."""
    from .collator import LongContextCollator, MaskedLMCollator
    from .tasks import MLM_PROBABILITY

    if task.head == "AutoModelForMaskedLM":
        return MaskedLMCollator(pad_token_id=tokenizer.pad_token_id, mask_token_id=tokenizer.mask_token_id,
                                special_ids=tuple(tokenizer.all_special_ids), vocab_size=len(tokenizer),
                                mlm_probability=MLM_PROBABILITY, seed=seed)
    return LongContextCollator(pad_token_id=tokenizer.pad_token_id)


def _shipped_corpora() -> list[str]:
    from .data.raw_text import CORPORA

    return list(CORPORA)


def _data_sentence(task, init_from) -> str:
    """What the card says the model read: the pretraining text, and what an --init-from checkpoint was pretrained
    on (from its own summary)."""
    text = f". Trained on {task.source}." if task.source else "."
    if init_from is not None:
        try:
            earlier = json.loads((Path(init_from) / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            earlier = {}
        if earlier.get("pretraining_data"):
            text += f" Initialised from `{Path(init_from).name}`, pretrained on {earlier['pretraining_data']}."
    return text


def train(task_name: str | None, output_dir, *, data_dir=None, variant: str = "longformer", preset: str = "small",
          max_length: int = 1024, epochs: float = 1.0, max_steps: int = -1, batch_size: int = 4,
          learning_rate: float = 5e-4, dropout: float = 0.0, seed: int = 0, init_from=None, overwrite: bool = False,
          resume: bool = False, max_train_samples: int | None = None, max_eval_samples: int | None = None,
          overrides: dict | None = None, device: str = "auto", bf16: bool = False, push_to_hub: str | None = None,
          corpora: list[str] | None = None, tokenizer: str | None = None, shape: dict | None = None,
          log=print) -> dict:
    """Train ``variant`` on the shipped task ``task_name``, or on the classification folder ``data_dir``
    (:data:`hf_longctx.data.files.FOLDER_FORMAT`); returns the summary written next to the model. With
    ``push_to_hub``, the model is then exported to ``output_dir/hub`` and pushed to that Hub repository.
    With ``init_from`` (a folder, or the name of a checkpoint in :mod:`hf_longctx.pretrained`), the checkpoint's
    config replaces ``variant``, ``preset`` and ``dropout``, and its tokenizer (when it saved one) the task's.

    ``task_name`` ``"mlm"`` or ``"clm"`` pretrains on raw text (:data:`hf_longctx.tasks.PRETRAINING_TASKS`): the
    ``data_dir`` folder of ``*.txt`` / ``*.jsonl`` documents, or the shipped ``corpora`` (default all);
    ``tokenizer`` names its tokenizer (:func:`hf_longctx.tasks.pretraining_tokenizer`). ``shape`` replaces some
    of the preset's fields in a new model (``hf-longctx compare`` widens a feed-forward to match model sizes).

    Three phases: :func:`plan_run` finds everything that can be wrong with the arguments before the run folder or
    the data is touched; :func:`build_trainer` tokenizes, prepares the folder and builds the model and ``Trainer``;
    :func:`finish_run` tests, saves ``model/`` and summarises, after ``Trainer.train``."""
    # Every argument but the two that decide the folder goes to plan_run, by name: one list of options, this signature.
    plan = plan_run(**{k: v for k, v in locals().items() if k not in ("overwrite", "resume")})
    # A resume that does not match, or a folder that is not ours to replace, is refused before tokenizing (the
    # folder is prepared, and written, in build_trainer, once the model's config is known to build).
    _prepare_run_dir(plan.output_dir, plan.run_record, overwrite=overwrite, resume=resume, check_only=True)
    trainer, data, resume_from = build_trainer(plan, overwrite=overwrite, resume=resume)
    if resume_from:
        plan.log(f"resuming from {resume_from}")
    start = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume_from)
    return finish_run(plan, trainer, data, outcome, time.perf_counter() - start, resume_from)


@dataclass
class RunPlan:
    """What a ``train`` run decided before touching its folder or its data (:func:`plan_run`)."""

    task: object
    output_dir: Path
    data_dir: object
    variant: str
    preset: str
    max_length: int
    dropout: float
    seed: int
    init_from: object  # the resolved folder, or None
    init_config: object  # its config, or None
    tokenizer: object
    args: object  # TrainingArguments
    run_record: dict
    corpora: list[str] | None
    push_to_hub: str | None
    log: object
    main: bool = True  # the process that writes (rank 0)
    barrier: object = None  # waits for every process (a no-op on one)
    shape: dict | None = None  # preset fields replaced in a new model


def plan_run(task_name, output_dir, *, data_dir, variant, preset, max_length, epochs, max_steps, batch_size,
             learning_rate, dropout, seed, init_from, max_train_samples, max_eval_samples, overrides, device, bf16,
             push_to_hub, corpora, tokenizer, log, shape=None) -> RunPlan:
    """Check every argument and resolve the task, the checkpoint, the tokenizer and the ``TrainingArguments``:
    everything that can be wrong is found here, before the run folder is touched or any data is tokenized.

    Long on purpose: one check after another, in the order a user meets them."""
    from transformers import set_seed

    check_positive(max_length=max_length, epochs=epochs, batch_size=batch_size, max_train_samples=max_train_samples,
                   max_eval_samples=max_eval_samples)
    if not learning_rate >= 0:  # 0 is allowed: it trains nothing, which tests and frozen baselines use
        raise TrainError(f"learning-rate must be 0 or more, got {learning_rate!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or (max_steps < 1 and max_steps != -1):
        raise TrainError(f"max-steps must be a positive number of steps, or -1 to use epochs; got {max_steps!r}")
    if not 0.0 <= dropout < 1.0:
        raise TrainError(f"dropout must be in [0, 1), got {dropout!r}")
    if dropout and init_from is not None:  # it would be silently ignored: the checkpoint's config decides
        raise TrainError(f"dropout describes a new model, but --init-from {init_from} brings its own config")
    overrides = dict(overrides or {})
    check_overrides(overrides)
    task = _task(task_name, data_dir, corpora=corpora, tokenizer=tokenizer)  # a --data-dir folder is read here
    tokenizer_choice = tokenizer
    init_name = init_from  # as given (a shipped checkpoint's name stays a name in the run record)
    if init_from is not None:
        from .pretrained import resolve

        try:
            init_from = resolve(init_from)
        except ValueError as err:
            raise TrainError(f"--init-from {err}") from None
    if variant not in BY_NAME:
        raise TrainError(f"unknown variant {variant!r}; choose one of {', '.join(BY_NAME)}")
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if shape and (set(shape) - set(PRESETS[preset]) or init_from is not None):
        raise TrainError(f"shape {shape} must replace fields of the preset ({', '.join(PRESETS[preset])}) of a new "
                         "model")
    output_dir = Path(output_dir)
    try:
        check_location(output_dir)
    except FolderError as err:
        raise TrainError(f"--output-dir: {err}") from None
    for flag, path in (("--init-from", init_from), ("--data-dir", data_dir)):
        if path is not None and Path(path).resolve().is_relative_to(output_dir.resolve()):
            raise TrainError(f"{flag} {path} lies inside --output-dir {output_dir}, which the run writes (and "
                             "--overwrite deletes); choose another --output-dir")
    args = training_arguments({
        "output_dir": str(output_dir / "checkpoints"), "num_train_epochs": epochs, "max_steps": max_steps,
        "per_device_train_batch_size": batch_size, "per_device_eval_batch_size": batch_size,
        "learning_rate": learning_rate, "warmup_steps": 0.1, "lr_scheduler_type": "linear",
        "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1, "logging_steps": 10,
        "report_to": "none", "seed": seed, **device_arguments(device, bf16),
        # Every parameter of our models takes part in every step, so DDP needs no extra graph pass.
        "ddp_find_unused_parameters": False, **label_arguments(task),
    }, overrides)
    # Under torchrun / accelerate launch, TrainingArguments has joined the process group: only the main process
    # writes the run folder, the model and the export, and logs; the others wait for it where it writes.
    main = args.process_index == 0
    barrier = args.distributed_state.wait_for_everyone if args.world_size > 1 else (lambda: None)
    if push_to_hub is not None:
        from .push import PushError, check_can_push

        try:
            check_can_push(push_to_hub)
        except PushError as err:
            raise TrainError(f"--push-to-hub: {err}") from None
    set_seed(seed)
    tokenizer = None if init_from is None else init_tokenizer(Path(init_from), task, tokenizer_choice)
    tokenizer = task.tokenizer() if tokenizer is None else tokenizer
    try:
        check_pretraining_tokenizer(task, tokenizer)
    except ValueError as err:
        raise TrainError(str(err)) from None
    init_config = None if init_from is None else _check_init_from(Path(init_from), max_length, task, tokenizer)
    run_record = {
        "task": task.name, "data_dir": None if data_dir is None else str(data_dir),
        "data_sha256": None if data_dir is None else folder_sha256(data_dir, raw=task.name in PRETRAINING_TASKS),
        "variant": variant, "preset": preset,
        "max_length": max_length, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "learning_rate": learning_rate, "dropout": dropout, "seed": seed,
        "init_from": None if init_name is None else str(init_name), "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples, "overrides": overrides,
    }
    if task.name in PRETRAINING_TASKS:  # only then, so that earlier runs' records still --resume
        run_record.update(corpora=None if corpora is None else list(corpora), tokenizer=tokenizer_choice)
    if shape:  # likewise
        run_record["shape"] = dict(shape)
    return RunPlan(task=task, output_dir=output_dir, data_dir=data_dir, variant=variant, preset=preset,
                   max_length=max_length, dropout=dropout, seed=seed, init_from=init_from, init_config=init_config,
                   tokenizer=tokenizer, args=args, run_record=run_record, corpora=corpora, push_to_hub=push_to_hub,
                   log=log if main else (lambda message: None), main=main, barrier=barrier, shape=shape)


def build_trainer(plan: RunPlan, *, overwrite: bool, resume: bool):
    """Tokenize the data, build the new model's config (a field it refuses stops the run before the folder is
    written), prepare the run folder, then load or build the model and the ``Trainer``. Returns the trainer, the
    tokenized splits and the checkpoint to resume from (None for a fresh run). A fresh run refused here leaves no
    folder behind."""
    import transformers
    from transformers import Trainer

    task, tokenizer, record = plan.task, plan.tokenizer, plan.run_record
    limits = {"train": record["max_train_samples"], "validation": record["max_eval_samples"],
              "test": record["max_eval_samples"]}
    data, labels = load_task(task, tokenizer, plan.max_length, plan.seed, limits)
    data = subsample(data, "train", limits["train"])
    data = subsample(subsample(data, "validation", limits["validation"]), "test", limits["test"])
    if plan.init_from is None:
        try:  # a config field the builder refuses (ValueError naming it) stops the run here, not after the folder
            config = BY_NAME[plan.variant].build_config({**PRESETS[plan.preset], **(plan.shape or {})}, tokenizer,
                                                        plan.max_length, task, labels, plan.dropout)
        except ValueError as err:
            raise TrainError(f"cannot build a {plan.variant} {plan.preset} model: {err}") from None
        check_has_head(config.model_type, task, f"--variant {plan.variant}")
        check_tokenizer_fits(tokenizer, config)
    existed = plan.output_dir.exists()
    resume_from = _prepare_run_dir(plan.output_dir, record, overwrite=overwrite, resume=resume, main=plan.main,
                                   barrier=plan.barrier)
    auto_class = getattr(transformers, task.head)
    try:
        if plan.init_from is not None:
            model = _load_init_model(plan, auto_class, labels)
        else:
            model = auto_class.from_config(config)
        check_tokenizer_fits(tokenizer, model.config)
        collator = collator_for(task, tokenizer, plan.seed)
        trainer = Trainer(
            model=model, args=plan.args, train_dataset=data["train"], eval_dataset=data["validation"],
            data_collator=collator, processing_class=tokenizer,
            callbacks=_epoch_callbacks(collator) + _private_rng_callbacks(model, plan.seed, resume_from, plan.log),
            compute_metrics=compute_metrics_for(task), preprocess_logits_for_metrics=logits_for_metrics(task),
        )
    except BaseException:
        if resume_from is None and plan.main:  # nothing trained yet: a refused run leaves no folder behind
            _cleanup_refused_run(plan.output_dir, existed)
        raise
    return trainer, data, resume_from


def _load_init_model(plan: RunPlan, auto_class, labels):
    """The ``--init-from`` checkpoint with the task's head. A classification task gives its labels: a masked-LM or
    converted checkpoint has none, and a classifier trained on other labels gets a new head
    (``ignore_mismatched_sizes``) instead of a shape error."""
    init_from, init_config = plan.init_from, plan.init_config
    label_args = {} if labels is None else dict(
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, ignore_mismatched_sizes=True)
    try:
        model = auto_class.from_pretrained(init_from, **label_args)
    except LOAD_ERRORS as err:  # missing, damaged or half-written weights
        raise TrainError(f"--init-from {init_from}: cannot load the model: {load_error(err)}") from None
    # The label names a classifier checkpoint was trained on (other heads have none that matter).
    is_classifier = any(a.endswith("ForSequenceClassification") for a in init_config.architectures or [])
    earlier = [init_config.id2label[i] for i in range(init_config.num_labels)] if is_classifier else None
    if labels is not None and earlier is not None and earlier != list(labels):
        # Same number of labels but other names (or order): the old head would be silently reused.
        _reset_linear_layers(model.classifier, model.config.initializer_range)
        plan.log(f"--init-from {init_from} was trained on labels {earlier}; its classifier head is re-initialised "
                 f"for {list(labels)}")
    return model


def finish_run(plan: RunPlan, trainer, data, outcome, train_seconds: float, resume_from) -> dict:
    """After ``Trainer.train``: score the test split, write ``model/`` (staged, so it never loads half-written)
    with the summary beside it, print the last line of JSON and push when asked. Returns the summary."""
    task, args, record = plan.task, plan.args, plan.run_record
    test = language_model_metrics(task, trainer.evaluate(data["test"], metric_key_prefix="test"), data["test"], "test")
    dataset_name = task.name if plan.data_dir is None else Path(plan.data_dir).resolve().name
    if task.name in PRETRAINING_TASKS and plan.data_dir is None:
        dataset_name = "+".join(dict.fromkeys(plan.corpora or _shipped_corpora()))
    results = result_rows(task, test, dataset_name, data)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "task": task.name, "variant": plan.variant, "preset": plan.preset, "max_length": plan.max_length,
        "training": f"`{command_line(record)}`: {trainer.state.global_step} steps, {_seconds(train_seconds)} on "
                    + (f"{args.device}" if args.world_size == 1
                       else f"{args.world_size} processes ({args.device.type})") + _data_sentence(task, plan.init_from),
        "world_size": args.world_size,
        "results": results, "train_seconds": round(train_seconds, 1),
        "resumed_from": resume_from,
        # Logged every logging_steps; a shorter run logs none, so its mean training loss stands in.
        "train_losses": losses or [round(float(outcome.training_loss), 4)],
        # A --data-dir folder is no Hub data set: the card's metadata must not name it as one.
        "hub_datasets": [],
    }
    if task.source:
        summary["pretraining_data"] = task.source
    model_dir = plan.output_dir / "model"
    # The saved tokenizer must know the model's length (with model_max_length 1e30, `truncation=True` does
    # nothing and a pipeline fails on long text).
    plan.tokenizer.model_max_length = trainer.model.config.max_input_tokens
    if task.head == "AutoModelForCausalLM":  # a prompt must not end with the end-of-text token
        from .data.tokenizers import causal_prompt_tokenizer

        trainer.processing_class = causal_prompt_tokenizer(plan.tokenizer)
    save_model_staged(trainer, model_dir, {SUMMARY_FILE: json.dumps(summary, indent=2)}, plan.main, plan.barrier)
    # One line of JSON, the last of the run, naming the split its figures come from.
    plan.log(json.dumps({"model": str(model_dir), "split": "test", **{r["metric"]: r["value"] for r in results}}))
    if plan.push_to_hub is not None and plan.main:
        summary["pushed"] = _export_and_push(model_dir, plan.output_dir / "hub", plan.push_to_hub, plan.log)
    return summary


def _export_and_push(model_dir: Path, hub_dir: Path, repo_id: str, log) -> str:
    from .export import ExportError, export_model
    from .push import PushError, push_folder

    try:
        export_model(model_dir, hub_dir, repo_id=repo_id, overwrite=True)
        url = push_folder(hub_dir, repo_id)
    except (ExportError, PushError) as err:
        raise TrainError(f"the run finished and {model_dir} is saved, but --push-to-hub failed: {err}; push it "
                         f"with `hf-longctx push {hub_dir} {repo_id}`") from None
    log(f"pushed {hub_dir} to {repo_id}: {url}")
    return url


def check_model_fits_task(config, task, labels, model_dir) -> None:
    """A model evaluated on a task must have the task's head and labels: a 3-label model on kernel-docs' 6 labels
    would print accuracy 0.0 on a few samples and crash with an IndexError on the whole split."""
    suffix = task.head.replace("AutoModel", "")
    architectures = config.architectures or []
    if architectures and not any(a.endswith(suffix) for a in architectures):
        raise TrainError(f"{model_dir} holds a {architectures[0]}, but task {task.name} needs a model {suffix}")
    if labels is None:
        return
    names = [config.id2label[i] for i in range(config.num_labels)]
    if config.num_labels != len(labels):
        raise TrainError(f"{model_dir} predicts {config.num_labels} labels ({', '.join(map(str, names))}) but task "
                         f"{task.name} has {len(labels)} ({', '.join(map(str, labels))}): it was trained for another task")
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(names))  # transformers' placeholder names
    if not generic and names != list(labels):
        raise TrainError(f"{model_dir} was trained on labels {names}, but task {task.name} has {list(labels)}")


def evaluate_model(model_dir, task_name: str | None, *, data_dir=None, split: str = "test",
                   max_length: int | None = None, batch_size: int = 4, max_samples: int | None = None,
                   device: str = "auto", bf16: bool = False, corpora: list[str] | None = None) -> dict:
    """Metrics of a saved model on a split of a shipped task or of a ``data_dir`` folder (the model's own tokenizer
    is used when it saved one); ``corpora`` narrows ``mlm`` / ``clm`` to some shipped corpora, as for ``train``."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer, Trainer

    check_positive(max_length=max_length, batch_size=batch_size, max_samples=max_samples)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainError(f"{model_dir} is not a model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise TrainError(f"cannot read the config in {model_dir}: {err}") from None
    if not hasattr(config, "max_input_tokens"):
        raise TrainError(f"{model_dir} holds a {config.model_type!r} model, not an hf_longctx one; convert it first "
                         "with `hf-longctx convert`")
    if max_length is not None and max_length > config.max_input_tokens:
        raise TrainError(f"--max-length {max_length} is longer than the {config.max_input_tokens} tokens {model_dir} "
                         f"takes; leave --max-length out, or {lengthen_advice(model_dir, max_length)}")
    device_args = device_arguments(device, bf16)
    label_names = [config.id2label[i] for i in range(config.num_labels)] if data_dir is not None else None
    pretraining = {"corpora": corpora} if corpora is not None else {}  # refused by name for other tasks
    task = _task(task_name, data_dir, label_names if task_name not in PRETRAINING_TASKS else None, **pretraining)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir) if (model_dir / "tokenizer_config.json").is_file() \
            else task.tokenizer()
    except LOAD_ERRORS as err:  # a damaged tokenizer file was a JSONDecodeError traceback
        raise TrainError(f"cannot load the tokenizer in {model_dir}: {load_error(err)}") from None
    check_tokenizer_fits(tokenizer, config)
    max_length = max_length or config.max_input_tokens
    try:
        check_pretraining_tokenizer(task, tokenizer)
    except ValueError as err:
        raise TrainError(str(err)) from None
    # A pretraining task tokenizes only what is scored (one piece of each other split: the corpora are ~5M tokens).
    data, labels = load_task(task, tokenizer, max_length, 0,
                             {name: max_samples if name == split else 1 for name in ("train", "validation", "test")})
    if split not in data:
        raise TrainError(f"task {task.name} has splits {list(data)}, not {split!r}")
    check_model_fits_task(config, task, labels, model_dir)
    data = subsample(data, split, max_samples)
    try:
        model = getattr(transformers, task.head).from_pretrained(model_dir)
    except LOAD_ERRORS as err:  # missing, damaged or half-written weights
        raise TrainError(f"cannot load the model in {model_dir}: {load_error(err)}") from None
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments({"output_dir": tmp, "per_device_eval_batch_size": batch_size, "report_to": "none",
                                   **device_args, **label_arguments(task)}, {})
        trainer = Trainer(model=model, args=args, data_collator=collator_for(task, tokenizer),
                          compute_metrics=compute_metrics_for(task),
                          preprocess_logits_for_metrics=logits_for_metrics(task))
        metrics = language_model_metrics(task, trainer.evaluate(data[split], metric_key_prefix=split), data[split],
                                         split)
    if "bits_per_byte" in task.metrics and f"{split}_bits_per_byte" not in metrics:  # wiki-bytes: a token is a byte
        from .data.wiki_bytes import bits_per_byte

        metrics[f"{split}_bits_per_byte"] = bits_per_byte(metrics[f"{split}_loss"])
    return metrics


# ---------------------------------------------------------------- CLI --------------------------------------------------
# The arguments are defined in hf_longctx_cli.train_arguments (a module light enough for a fast --help).


def _interrupted(args) -> int:
    """Ctrl-C during a run: say what is kept and how to go on, instead of a KeyboardInterrupt traceback."""
    output_dir = Path(args.output_dir)
    checkpoints = output_dir / "checkpoints"
    saved = sorted(checkpoints.glob("checkpoint-*")) if checkpoints.is_dir() else []
    if saved and (output_dir / RUN_FILE).is_file():
        advice = ("its last checkpoint is kept; go on with the same command and --resume"
                  + (" instead of --overwrite" if args.overwrite else ""))
    elif (output_dir / RUN_FILE).is_file():
        advice = ("no checkpoint was saved yet (one is saved every epoch, or every N steps with --set save_steps=N); "
                  "start again with --overwrite")
    else:
        advice = "nothing was written"
    print(f"\nhf-longctx train: interrupted; {advice} (run folder {output_dir})", file=sys.stderr)
    return 130


# What --variant, --preset and --dropout are when not given; with --init-from the checkpoint decides them.
NEW_MODEL_DEFAULTS = {"variant": "longformer", "preset": "small", "dropout": 0.0}


def run(args) -> int:
    given = [f"--{name}" for name in NEW_MODEL_DEFAULTS if getattr(args, name) is not None]
    if args.init_from is not None and given:
        print(f"hf-longctx train: {' and '.join(given)} describe{'s' if len(given) == 1 else ''} a new model, but --init-from {args.init_from} "
              "brings its own; leave them out", file=sys.stderr)
        return 1
    new_model = {name: default if getattr(args, name) is None else getattr(args, name)
                 for name, default in NEW_MODEL_DEFAULTS.items()}
    try:
        overrides = _parse_overrides(args.set)
        if getattr(args, "compile", False):
            overrides.setdefault("torch_compile", True)
            if pick_device(args.device) == "cpu":
                print("hf-longctx train: --compile on a CPU: compiled training steps measured 0.79-1.22x the speed of "
                      "eager ones here (faster only for the Reformer without dropout; docs/graphs.md), after a compile "
                      "of up to a minute or more", file=sys.stderr)
        train(args.task, args.output_dir, data_dir=args.data_dir, variant=new_model["variant"],
              preset=new_model["preset"], max_length=args.max_length,
              epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
              learning_rate=args.learning_rate, dropout=new_model["dropout"], seed=args.seed, init_from=args.init_from,
              overwrite=args.overwrite, resume=args.resume, max_train_samples=args.max_train_samples,
              max_eval_samples=args.max_eval_samples, overrides=overrides, device=args.device,
              bf16=args.bf16, push_to_hub=args.push_to_hub, corpora=getattr(args, "corpora", None),
              tokenizer=getattr(args, "tokenizer", None))
    except TrainError as err:
        print(f"hf-longctx train: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted(args)
    return 0
