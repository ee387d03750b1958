"""``hf-longctx convert``: one command for every checkpoint family, picked by the source's ``model_type``.

Each family has a module under :mod:`hf_longctx.conversion` with ``convert(src, dst, *, overwrite=False)``;
:data:`CONVERTERS` maps the ``model_type`` in ``SRC/config.json`` to it. Short-context RoBERTa/BERT models take
``--from-short`` (the Longformer paper's warm start, :func:`hf_longctx.conversion.longformer.convert_from_short`).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from .conversion.longformer import convert_from_short, convert_longformer, extend_position_embeddings

# model_type of a source folder -> the module under hf_longctx.conversion that converts it
CONVERTERS = {
    "longformer": "longformer",
    "reformer": "reformer",
    "transfo-xl": "transfo_xl",
}
SHORT_MODEL_TYPES = ("roberta", "bert")  # --from-short


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


def convert(src, dst, *, overwrite: bool = False) -> Path:
    """Convert a saved transformers model of any supported family into an hf_longctx folder; returns ``dst``."""
    model_type = source_model_type(src)
    if model_type in SHORT_MODEL_TYPES:
        raise ValueError(f"{src} is a short-context {model_type} model: convert it with --from-short "
                         "(convert_from_short), which extends its position table")
    if model_type not in CONVERTERS:
        raise ValueError(f"{src} holds a model of type {model_type!r}; supported: {', '.join(sorted(CONVERTERS))} "
                         f"(convert) and {', '.join(SHORT_MODEL_TYPES)} (--from-short)")
    module = importlib.import_module(f"hf_longctx.conversion.{CONVERTERS[model_type]}")
    return module.convert(src, dst, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------------------------
# CLI: hf-longctx convert SRC DST [--from-short] [--max-length N] [--attention-window W] [--overwrite]
# ----------------------------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("src", help="folder written by transformers' save_pretrained (Longformer, Reformer, "
                                    "TransfoXL; RoBERTa/BERT with --from-short)")
    parser.add_argument("dst", help="folder to create (must not exist unless --overwrite)")
    parser.add_argument("--from-short", action="store_true",
                        help="SRC is a short-context RoBERTa/BERT: extend its positions (Longformer paper, section 5)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="with --from-short: longest input in tokens (default 4096)")
    parser.add_argument("--attention-window", type=int, default=None,
                        help="with --from-short: even sliding-window size of every layer (default 512)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST if an earlier hf-longctx command wrote it and nothing in it changed since")


def run(args) -> int:
    try:
        if args.from_short:
            options = {name: value for name, value in
                       (("max_length", args.max_length), ("attention_window", args.attention_window))
                       if value is not None}
            dst = convert_from_short(args.src, args.dst, overwrite=args.overwrite, **options)
        else:
            if args.max_length is not None or args.attention_window is not None:
                raise ValueError("--max-length and --attention-window only apply with --from-short")
            dst = convert(args.src, args.dst, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"hf-longctx convert: error: {error}", file=sys.stderr)
        return 1
    config = json.loads((dst / "config.json").read_text())
    length = config.get("max_position_embeddings")
    print(f"wrote {dst} ({config['architectures'][0]}" + (f", max_position_embeddings={length})" if length else ")"))
    return 0


__all__ = ["convert", "convert_longformer", "convert_from_short", "extend_position_embeddings", "CONVERTERS",
           "add_arguments", "run"]
