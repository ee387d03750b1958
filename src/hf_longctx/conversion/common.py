"""What every checkpoint conversion shares: checking the folders, reading weights safely, building a model that
holds exactly the checkpoint's tensors, and writing the result atomically.

A family module (``longformer.py``, ``reformer.py``, ``transfo_xl.py``) maps a source folder's config and weight
names onto an hf_longctx model and calls these; ``hf_longctx.convert`` picks the module by the source's
``model_type``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..folders import FolderError, check_location, check_replaceable, replace_folder, staging_folder, write_manifest

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "chat_template.jinja",
    "vocab.pkl",
)


def check_paths(src, dst, overwrite: bool) -> tuple[Path, Path]:
    """``(src, dst)`` as paths once ``src`` is a model folder and ``dst`` may be written.

    ``FileNotFoundError`` for a missing source; ``FileExistsError`` for an existing ``dst`` without ``overwrite``;
    ``ValueError`` for a ``dst`` that holds the source or that hf_longctx did not write (``--overwrite`` replaces
    only folders it wrote, unchanged: see :mod:`hf_longctx.folders`).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist" if not src.exists() else f"{src} is not a folder")
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json: is it a folder written by save_pretrained?")
    s, d = src.resolve(), dst.resolve()
    if d == s or d in s.parents:
        raise ValueError(f"refusing to write {dst}: it holds the source {src}")
    try:
        check_location(dst)
    except FolderError as err:
        raise ValueError(str(err)) from None
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"destination {dst} already exists; pass overwrite=True (--overwrite) to replace it")
        try:
            check_replaceable(dst)
        except FolderError as err:
            raise ValueError(str(err)) from None
    return src, dst


def read_config(src: Path) -> dict:
    try:
        return json.loads((src / "config.json").read_text())
    except ValueError as err:
        raise ValueError(f"{src}/config.json is not valid JSON: {err}") from None


def load_weights(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: model.safetensors, pytorch_model.bin, or either sharded with an index file.

    Legacy ``.bin`` files are read with ``torch.load(weights_only=True)``: nothing else is unpickled.
    """
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (src / single).is_file():
            return load_file(src / single)
        if (src / index).is_file():
            shards = sorted(set(json.loads((src / index).read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(load_file(src / shard))
            return state
    raise FileNotFoundError(
        f"{src} has no weights: looked for model.safetensors, pytorch_model.bin and their .index.json shards"
    )


def load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that weights_only refuses
        raise ValueError(f"cannot read the weights in {path}: {type(err).__name__}: {err}") from None


def _tied_targets(model, config, state: dict) -> dict[str, str]:
    """Tied weights (output embeddings <- input embeddings, ...) that the checkpoint may omit: target -> source."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output_names = {name + ".weight" for name, module in model.named_modules() if output is not None and module is output}
    return {target: source for target, source in tied.items()
            if source in state and (target not in output_names or getattr(config, "tie_word_embeddings", True))}


def build_exact(model_class: type, config, state: dict[str, torch.Tensor], *,
                may_start_fresh: Callable[[str], bool] = lambda key: False,
                may_drop: Callable[[str, object], bool] = lambda key, model: False):
    """``model_class(config)`` holding exactly ``state`` (in ``state``'s floating dtype), in eval mode.

    ``may_start_fresh(key)``: a missing weight that may keep its random init (a pooler a head checkpoint lacks),
    with a warning. ``may_drop(key, model)``: a checkpoint weight the class has no place for that may be dropped
    (a head the architecture lacks), with a warning. Anything else missing, unexpected or misshapen is a
    ``ValueError`` that lists every key.
    """
    model = model_class(config).eval()
    expected = model.state_dict()
    tied = _tied_targets(model, config, state)
    missing = sorted(k for k in expected if k not in state and k not in tied)
    fresh = [k for k in missing if may_start_fresh(k)]
    if fresh:
        logger.warning("the checkpoint has no %s: these start from random weights", ", ".join(fresh))
        missing = [k for k in missing if k not in fresh]
    unused = sorted(k for k in state if k not in expected and may_drop(k, model))
    if unused:
        logger.warning("dropping weights %s has no place for: %s", model_class.__name__, ", ".join(unused))
        state = {k: v for k, v in state.items() if k not in unused}
    unexpected = sorted(k for k in state if k not in expected)
    misshapen = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                       if k in state and state[k].shape != v.shape)
    if missing or unexpected or misshapen:
        parts = [f"{label}: {', '.join(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape (checkpoint vs model)", misshapen))
                 if keys]
        raise ValueError(f"the checkpoint does not fit {model_class.__name__}; " + "; ".join(parts))
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
        params = model.state_dict()
        for target, source in tied.items():
            if target not in state:
                params[target].copy_(state[source])
    return model.to(dtype)


def save_converted(model, src: Path, dst: Path, *, overwrite: bool, tokenizer_class: str | None = None,
                   model_max_length: int | None = None, command: str = "convert") -> None:
    """Write ``model`` (remote code and ``auto_map`` included) and ``src``'s tokenizer files into ``dst``.

    Written into a temporary sibling and renamed into place, so ``dst`` is never half written; an existing
    ``dst`` is replaced only with ``overwrite`` and only when hf_longctx wrote it (checked again here, in case it
    appeared while the model was built). ``tokenizer_class`` is set in ``tokenizer_config.json`` when it names
    none (AutoTokenizer would otherwise look one up by our model_type); ``model_max_length`` caps the tokenizer.
    """
    if dst.exists() or dst.is_symlink():
        if not overwrite:  # created by someone else while we converted
            raise FileExistsError(f"destination {dst} already exists; pass overwrite=True to replace it")
        try:
            check_replaceable(dst)
        except FolderError as err:
            raise ValueError(str(err)) from None
    tmp = staging_folder(dst)
    try:
        model.save_pretrained(tmp)
        copy_tokenizer(src, tmp, tokenizer_class, model_max_length)
        write_manifest(tmp, command)
        replace_folder(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_tokenizer(src: Path, dst: Path, tokenizer_class: str | None, model_max_length: int | None) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    config_path = dst / "tokenizer_config.json"
    if config_path.is_file():
        tok_config = json.loads(config_path.read_text())
        if tokenizer_class is not None:
            tok_config.setdefault("tokenizer_class", tokenizer_class)
        if model_max_length is not None:
            tok_config["model_max_length"] = model_max_length
        config_path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
