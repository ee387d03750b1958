"""``hf-longctx convert``: one command for every checkpoint family, picked by the source's ``model_type``.

Each family has a module under :mod:`hf_longctx.conversion` with ``convert(src, dst, *, overwrite=False)``;
:data:`CONVERTERS` maps the ``model_type`` in ``SRC/config.json`` to it. Short-context RoBERTa/BERT models take
``--from-short`` (the Longformer paper's warm start, :func:`hf_longctx.conversion.longformer.convert_from_short`);
an hf_longctx Longformer takes ``--max-length N``, which lengthens its position table the same way
(:func:`hf_longctx.conversion.longformer.lengthen_longformer`). ``SRC`` is a local folder or a Hub model id,
downloaded with huggingface_hub (:func:`resolve_source`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

from .conversion.longformer import (
    convert_from_short,
    convert_longformer,
    extend_position_embeddings,
    lengthen_longformer,
)
from .folders import FolderError, check_location, check_replaceable
from .variants import VARIANTS

# model_type of a source folder -> the module under hf_longctx.conversion that converts it (the variant table's)
CONVERTERS = {v.source_model_type: v.converter for v in VARIANTS}
SHORT_MODEL_TYPES = ("roberta", "bert")  # --from-short
LENGTHEN = {"longctx_longformer": lengthen_longformer}  # hf_longctx models whose position table --max-length grows
# What a conversion reads from a Hub repository: config, tokenizer and one copy of the weights.
HUB_FILES = ("*.json", "*.txt", "*.model", "*.jinja", "vocab.*", "merges.txt")


def resolve_source(src, revision: str | None = None) -> Path:
    """``src`` as a local folder: an existing path, or a Hub model id downloaded with huggingface_hub
    (config, tokenizer and weights only). Offline, unknown or unreachable ids are a ``FileNotFoundError`` that
    says which."""
    path = Path(src)
    if path.exists():
        if revision is not None:
            raise ValueError(f"--revision applies to a Hub id, but {src} is a local folder")
        return path
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(src))
    except HFValidationError:
        raise FileNotFoundError(f"source folder {src} does not exist (nor is it a Hub model id)") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        if offline:  # only the local cache: take whatever weights it holds
            patterns = [*HUB_FILES, "*.safetensors", "*.bin"]
        else:  # one copy of the weights: safetensors when the repository has them
            files = HfApi().list_repo_files(str(src), revision=revision)
            weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
            patterns = [*HUB_FILES, weights]
        folder = Path(snapshot_download(str(src), revision=revision, allow_patterns=patterns))
    except Exception as err:  # not found, gated, offline without a cached copy, no network: all end here
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        if offline:
            why = "HF_HUB_OFFLINE is set and it is not in the local cache; download it once online, or pass a folder"
        elif isinstance(err, RevisionNotFoundError):
            why = f"it has no revision {revision!r}"
        elif isinstance(err, GatedRepoError):
            why = "it is gated: accept its terms on the Hub and log in (`hf auth login`)"
        elif isinstance(err, RepositoryNotFoundError):
            why = "no such model on the Hub (or it is private: log in with `hf auth login`)"
        else:
            why = f"{type(err).__name__}: {err}"
        raise FileNotFoundError(f"{src} is not a local folder, and it cannot be downloaded from the Hub: {why}") from None
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the Hub repository {src} has no config.json: it is not a transformers model")
    return folder


def check_destination(dst, overwrite: bool) -> None:
    """Refuse a ``dst`` that may not be written before anything is downloaded or built."""
    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"destination {dst} already exists; pass --overwrite to replace it")
    try:
        check_location(dst)
        if overwrite:
            check_replaceable(dst)
    except FolderError as err:
        raise ValueError(str(err)) from None


def source_model_type(src) -> str | None:
    """The ``model_type`` in ``src/config.json`` (``None`` when it has none); errors name the problem."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist" if not src.exists() else f"{src} is not a folder")
    path = src / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{src} has no config.json: is it a folder written by save_pretrained?")
    try:
        return json.loads(path.read_text()).get("model_type")
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def convert(src, dst, *, overwrite: bool = False, max_length: int | None = None, revision: str | None = None) -> Path:
    """Convert a saved transformers model of any supported family (a local folder or a Hub id) into an hf_longctx
    folder, or lengthen an hf_longctx Longformer to ``max_length`` tokens; returns ``dst``."""
    check_destination(dst, overwrite)
    src = resolve_source(src, revision)
    model_type = source_model_type(src)
    if model_type in LENGTHEN:
        if max_length is None:
            raise ValueError(f"{src} is already an hf_longctx model: pass --max-length N to lengthen it to N tokens")
        return LENGTHEN[model_type](src, dst, max_length=max_length, overwrite=overwrite)
    if model_type in SHORT_MODEL_TYPES:
        raise ValueError(f"{src} is a short-context {model_type} model: convert it with --from-short "
                         "(convert_from_short), which extends its position table")
    if model_type not in CONVERTERS:
        lengthen = f", and hf_longctx models {', '.join(LENGTHEN)} (--max-length)"
        raise ValueError(f"{src} holds a model of type {model_type!r}; supported: {', '.join(sorted(CONVERTERS))} "
                         f"(convert), {', '.join(SHORT_MODEL_TYPES)} (--from-short){lengthen}")
    if max_length is not None:
        raise ValueError(f"--max-length applies with --from-short or to an hf_longctx Longformer, not to a "
                         f"{model_type} model")
    module = importlib.import_module(f"hf_longctx.conversion.{CONVERTERS[model_type]}")
    return module.convert(src, dst, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------------------------
# CLI: hf-longctx convert SRC DST [--from-short] [--max-length N] [--attention-window W] [--revision R] [--overwrite]
# (arguments defined in hf_longctx_cli.convert_arguments)
# ----------------------------------------------------------------------------------------------------------------


def run(args) -> int:
    try:
        if args.from_short:
            options = {name: value for name, value in
                       (("max_length", args.max_length), ("attention_window", args.attention_window))
                       if value is not None}
            check_destination(args.dst, args.overwrite)
            dst = convert_from_short(resolve_source(args.src, args.revision), args.dst, overwrite=args.overwrite,
                                     **options)
        else:
            if args.attention_window is not None:
                raise ValueError("--attention-window only applies with --from-short")
            dst = convert(args.src, args.dst, overwrite=args.overwrite, max_length=args.max_length,
                          revision=args.revision)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"hf-longctx convert: error: {error}", file=sys.stderr)
        return 1
    config = json.loads((dst / "config.json").read_text())
    length = config.get("max_position_embeddings")
    print(f"wrote {dst} ({config['architectures'][0]}" + (f", max_position_embeddings={length})" if length else ")"))
    return 0


__all__ = ["convert", "convert_longformer", "convert_from_short", "extend_position_embeddings", "lengthen_longformer",
           "resolve_source", "CONVERTERS", "run"]
