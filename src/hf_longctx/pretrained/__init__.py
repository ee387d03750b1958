"""Checkpoints shipped inside the package, which ``hf-longctx train --init-from NAME`` accepts by name.

Each one is a folder ``hf_longctx/pretrained/<name>/`` written by ``save_pretrained`` (``config.json``, weights,
tokenizer) with a provenance note, built by a script under ``tools/``; setup.cfg's ``package_data`` installs it.
:func:`available` lists the ones present; :func:`resolve` turns an ``--init-from`` value into a folder.
"""

from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).resolve().parent


def available() -> dict[str, Path]:
    """``{name: folder}`` of every shipped checkpoint: the folders here that hold a ``config.json``."""
    if not PRETRAINED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(PRETRAINED_DIR.iterdir()) if (p / "config.json").is_file()}


def resolve(name_or_path) -> Path:
    """The folder ``name_or_path`` names: an existing path as it is, else a shipped checkpoint's name. Anything else
    is a ``ValueError`` that lists the shipped names (a path that exists wins over a shipped name, so a user's own
    folder is never shadowed)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = available()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    listing = ", ".join(shipped) if shipped else "none in this install"
    raise ValueError(f"{name_or_path} is not a model folder (nothing is there) nor the name of a checkpoint shipped "
                     f"with hf_longctx (shipped: {listing})")


__all__ = ["PRETRAINED_DIR", "available", "resolve"]
