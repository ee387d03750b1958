"""What ``hf-longctx train`` hands to transformers: the ``TrainingArguments`` of a run, checked.

``--set KEY=VALUE`` overrides any field a flag does not own (the flag is named otherwise), fields that would do
nothing are refused, and the device and precision flags become ``TrainingArguments`` fields. Every problem is a
:class:`TrainError` that names it, raised before anything is written.
"""

from __future__ import annotations

import json


class TrainError(RuntimeError):
    """A run that cannot start; the message says why."""


# TrainingArguments fields that a flag of `train` sets (and the run record holds): --set must not change them
# behind the record's back (--set output_dir would send checkpoints outside the run folder).
OWNED_FIELDS = {
    "output_dir": "--output-dir", "logging_dir": "--output-dir", "overwrite_output_dir": "--overwrite",
    "resume_from_checkpoint": "--resume", "num_train_epochs": "--epochs", "max_steps": "--max-steps",
    "per_device_train_batch_size": "--batch-size", "per_device_eval_batch_size": "--batch-size",
    "learning_rate": "--learning-rate", "seed": "--seed", "use_cpu": "--device cpu", "bf16": "--bf16",
    "push_to_hub": "--push-to-hub REPO", **{f"hub_{k}": "--push-to-hub REPO" for k in (
        "model_id", "token", "private_repo", "strategy", "always_push", "revision")},
}


# Fields Trainer never reads (they are for example scripts): a --set of them would do nothing.
NO_EFFECT = {"do_train", "do_eval", "do_predict"}


# --set save_steps=N with the default save_strategy "epoch" would be silently ignored: a step count implies
# the "steps" strategy unless the user chose another one, which is then refused.
STEP_STRATEGIES = {"save_steps": "save_strategy", "eval_steps": "eval_strategy", "logging_steps": "logging_strategy"}


def _parse_overrides(pairs: list[str]) -> dict:
    """``["warmup_steps=0.1", "disable_tqdm=true"]`` -> TrainingArguments overrides, values parsed as JSON when
    they can be (checked by :func:`check_overrides` inside :func:`train`)."""
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


def _fits(value, annotation) -> bool:
    """Whether ``value`` (parsed from JSON) has the type of a TrainingArguments field."""
    import enum
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, dict):
        return isinstance(value, origin)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in [member.value for member in annotation]
    return True  # a type we do not check: TrainingArguments' own validation still runs


def check_overrides(overrides: dict) -> None:
    """Refuse a TrainingArguments override that a flag owns, that has no effect, or whose value has the wrong type
    (``gradient_accumulation_steps="two"`` failed with a TypeError deep inside Trainer)."""
    import typing

    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    for key, value in overrides.items():
        if key not in TrainingArguments.__dataclass_fields__:
            raise TrainError(f"--set {key}: not a TrainingArguments field")
        if key in OWNED_FIELDS:
            raise TrainError(f"--set {key}: train sets it itself and records it for --resume; use {OWNED_FIELDS[key]}")
        if key in NO_EFFECT:
            raise TrainError(f"--set {key}: Trainer ignores it, so it would have no effect")
        if key in hints and not _fits(value, hints[key]):
            raise TrainError(f"--set {key}={json.dumps(value)}: expected {getattr(hints[key], '__name__', hints[key])}")
    for steps_key, strategy in STEP_STRATEGIES.items():
        if steps_key in overrides and overrides.get(strategy, "steps") != "steps":
            raise TrainError(f"--set {steps_key} has no effect with {strategy}={overrides[strategy]}; drop one of them")


def training_arguments(base: dict, overrides: dict):
    """``TrainingArguments(**base, **overrides)``, a step count implying its "steps" strategy; bad values are a
    :class:`TrainError` (built before the run folder is, so a wrong --set costs nothing)."""
    from transformers import TrainingArguments

    kwargs = {**base, **overrides}
    for steps_key, strategy in STEP_STRATEGIES.items():
        if steps_key in overrides and strategy not in overrides:
            kwargs[strategy] = "steps"
    try:
        return TrainingArguments(**kwargs)
    except (TypeError, ValueError) as err:
        raise TrainError(f"these training arguments do not go together: {err}") from None


def pick_device(choice: str = "auto") -> str:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` for ``--device choice``; a device that is not there is a TrainError."""
    import torch

    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
           "cpu": True}
    if choice == "auto":
        return next(name for name in ("cuda", "mps", "cpu") if has[name])
    if choice not in has:
        raise TrainError(f"unknown device {choice!r}; choose auto, cpu, cuda or mps")
    if not has[choice]:
        raise TrainError(f"--device {choice}: this PyTorch sees no {choice.upper()} device; use --device cpu or auto")
    return choice


def device_arguments(choice: str = "auto", bf16: bool = False) -> dict:
    """The TrainingArguments that put a run on ``--device choice`` (Trainer picks CUDA, else MPS, unless
    ``use_cpu``), with bf16 mixed precision when asked and the device has it."""
    import torch

    device = pick_device(choice)
    if bf16 and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrainError("--bf16: this CUDA device has no bfloat16; leave --bf16 out")
    return {"use_cpu": device == "cpu", "bf16": bool(bf16)}


def check_positive(**values) -> None:
    """Numbers that must be positive (argparse checks the CLI's; this checks the Python API's)."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise TrainError(f"{name.replace('_', '-')} must be positive, got {value!r}")
