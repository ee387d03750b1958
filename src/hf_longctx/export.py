"""``hf-longctx export``: write a Hub-ready folder (weights, config with every Auto class, remote code, tokenizer,
a filled model card) from a trained or converted model folder. Written atomically; never overwrites by default, and
``--overwrite`` replaces only a folder an earlier export (or convert) wrote and nobody changed since
(:mod:`hf_longctx.folders`)."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

import hf_longctx

from .folders import (
    LOAD_ERRORS,
    FolderError,
    load_error,
    check_location,
    check_replaceable,
    replace_folder,
    staging_folder,
    write_manifest,
)
from .variants import BY_MODEL_TYPE

# The pipeline each head serves, for the card's metadata and the loading snippet.
PIPELINE_TAGS = {
    "Model": ("feature-extraction", "AutoModel"),
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
    "ForMultipleChoice": ("multiple-choice", "AutoModelForMultipleChoice"),
}

# Files a run may leave next to the model that describe it; the card reads them when present.
SUMMARY_FILE = "hf_longctx_summary.json"


class ExportError(RuntimeError):
    """A model folder that cannot be exported; the message says why."""


def model_class_for(config):
    """The hf_longctx class named by ``config.architectures`` (the bare model when none is recorded)."""
    if config.model_type not in hf_longctx.REGISTRY:
        raise ExportError(
            f"model_type {config.model_type!r} is not an hf_longctx model ({', '.join(hf_longctx.REGISTRY)}); "
            "convert it first with `hf-longctx convert`"
        )
    classes = {cls.__name__: cls for cls in hf_longctx.REGISTRY[config.model_type][1].values()}
    name = (config.architectures or [None])[0]
    if name is None:
        return next(iter(classes.values()))
    if name not in classes:
        raise ExportError(f"architecture {name!r} is not one of {sorted(classes)}")
    return classes[name]


def _head_suffix(class_name: str) -> str:
    for suffix in PIPELINE_TAGS:
        if suffix != "Model" and class_name.endswith(suffix):
            return suffix
    return "Model"


def render_card(config, class_name: str, *, repo_id=None, summary: dict | None = None,
                has_tokenizer: bool = True) -> ModelCard:
    """Fill the variant's template in ``model_cards/`` with the real configuration and results."""
    summary = summary or {}
    pipeline_tag, auto_class = PIPELINE_TAGS[_head_suffix(class_name)]
    results = summary.get("results", [])
    data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag=pipeline_tag,
        tags=["hf_longctx", config.model_type, "long-context"],
        # Hub data set ids only: a --data-dir folder's name (or a shipped task's) is no Hub data set, and naming
        # one here links the card to someone else's repository. The evaluation table names them all.
        datasets=summary.get("hub_datasets") or None,
        # Baselines (majority class, a truncated model) sit in the card's table, not among the model's metrics.
        metrics=sorted({r["metric"] for r in results if "baseline" not in r["metric"]}) or None,
        base_model=summary.get("base_model"),
    )
    record = BY_MODEL_TYPE.get(config.model_type)
    template = record and resources.files("hf_longctx.model_cards").joinpath(record.card_template)
    if not template or not template.is_file():
        raise ExportError(f"no model card template for {config.model_type} in model_cards/")
    fields = config.to_dict()
    fields.pop("model_name", None)
    return ModelCard.from_template(
        data, template_str=template.read_text(), auto_class=auto_class, repo_id=repo_id,
        training=summary.get("training"), results=results, base_model=summary.get("base_model"),
        converted_from_short=summary.get("converted_from_short", False), model_name=summary.get("model_name"),
        max_input_tokens=config.max_input_tokens, has_tokenizer=has_tokenizer, **fields,
    )


# Loading arguments transformers writes back into a saved tokenizer_config.json: a Hub folder that says
# local_files_only makes every later load on the user's side offline-only.
_LOCAL_LOADING_FIELDS = ("is_local", "local_files_only")


def _drop_local_loading_fields(path: Path) -> None:
    saved = json.loads(path.read_text())
    if any(key in saved for key in _LOCAL_LOADING_FIELDS):
        path.write_text(json.dumps({k: v for k, v in saved.items() if k not in _LOCAL_LOADING_FIELDS}, indent=2,
                                   ensure_ascii=False) + "\n")


def export_model(model_dir, out_dir, *, overwrite: bool = False, repo_id: str | None = None,
                 formats: tuple[str, ...] = ()) -> Path:
    """Export ``model_dir`` to ``out_dir`` and return it. Raises :class:`ExportError` with the reason.

    ``formats=("onnx",)`` also writes ``model.onnx`` in the folder (:func:`hf_longctx.onnx_export.to_onnx`,
    checked with onnxruntime at lengths it was not exported at); a model that cannot be exported is refused
    before anything is written."""
    from transformers import AutoConfig, AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model folder (no config.json)")
    try:
        check_location(out_dir)
    except FolderError as err:
        raise ExportError(str(err)) from None
    if out_dir.exists() or out_dir.is_symlink():
        if not overwrite:
            raise ExportError(f"{out_dir} already exists; pass --overwrite to replace it")
        if out_dir.resolve() == model_dir.resolve() or out_dir.resolve() in model_dir.resolve().parents:
            raise ExportError(f"refusing to replace {out_dir}: it holds the model folder {model_dir}")
        try:
            check_replaceable(out_dir)
        except FolderError as err:
            raise ExportError(str(err)) from None
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read the config in {model_dir}: {err}") from err
    model_class = model_class_for(config)
    # Everything is read before the staging folder exists: a damaged file in model_dir leaves nothing behind.
    try:
        model = model_class.from_pretrained(model_dir)
    except LOAD_ERRORS as err:  # missing or half-written weights
        raise ExportError(f"cannot load the model in {model_dir}: {load_error(err)}") from None
    tokenizer = None
    if (model_dir / "tokenizer_config.json").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except LOAD_ERRORS as err:
            raise ExportError(f"cannot load the tokenizer in {model_dir}: {load_error(err)}") from None
    summary_path = model_dir / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except ValueError as err:
        raise ExportError(f"{summary_path} is not valid JSON ({err}); fix or delete it") from None

    if "onnx" in formats:  # refused (by name) before the staging folder exists, like a damaged model_dir
        from .onnx_export import ONNX_FILE, OnnxExportError, check_exportable, to_onnx

        try:
            check_exportable(model)
        except OnnxExportError as err:
            raise ExportError(str(err)) from None

    staging = staging_folder(out_dir)
    try:
        if "onnx" in formats:
            try:
                check = to_onnx(model, staging / ONNX_FILE)
            except OnnxExportError as err:
                raise ExportError(str(err)) from None
            summary = dict(summary, onnx=check)
        model.save_pretrained(staging)
        if tokenizer is not None:
            # A tokenizer without a length limit (model_max_length 1e30) makes `truncation=True` a no-op, and the
            # pipeline then fails on long text: cap it at what the model accepts.
            tokenizer.model_max_length = model.config.max_input_tokens
            tokenizer.save_pretrained(staging)
            _drop_local_loading_fields(staging / "tokenizer_config.json")
        if summary:
            (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        render_card(model.config, model_class.__name__, repo_id=repo_id, summary=summary,
                    has_tokenizer=(staging / "tokenizer_config.json").is_file()).save(staging / "README.md")
        write_manifest(staging, "export")
        replace_folder(staging, out_dir)  # an existing out_dir is swapped out only once the new one is complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# The arguments are defined in hf_longctx_cli.export_arguments.


def run(args) -> int:
    import sys

    try:
        out = export_model(args.model_dir, args.out_dir, overwrite=args.overwrite, repo_id=args.repo_id,
                           formats=tuple(args.format or ()))
    except ExportError as err:
        print(f"hf-longctx export: {err}", file=sys.stderr)
        return 1
    print(f"Hub-ready folder: {out}")
    if args.format:
        print(f"ONNX graph: {out / 'model.onnx'} (inputs and the onnxruntime check: {SUMMARY_FILE})")
    return 0
