"""The rule every command that writes a folder follows: ``--overwrite`` replaces only what hf_longctx wrote.

A user who points ``--overwrite`` at the wrong folder must lose nothing. So:

* ``export`` and ``convert`` leave a manifest, :data:`MANIFEST`, listing every file they wrote with its sha256.
  ``--overwrite`` replaces such a folder only while it holds exactly those files, unchanged; a file the user
  added (``notes.txt``) or edited (the model card) stops the command, and the message names it.
* ``train`` and ``demo`` folders are marked by their run record; ``--overwrite`` replaces one only while every
  entry at its top level is one the command writes (:func:`check_run_folder`).

New folders are written into a temporary sibling and renamed into place (:func:`replace_folder`), so an
interrupted command never leaves a half-written folder and a failed one keeps the old folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import SafetensorError

# What from_pretrained raises for a missing, damaged or half-written file in a saved folder: OSError (no weights, a
# config.json that is not JSON), ValueError (a tokenizer or other JSON file that does not parse) and safetensors'
# SafetensorError (a truncated model.safetensors), which derives from neither and escaped as a traceback.
LOAD_ERRORS = (OSError, ValueError, SafetensorError)


def load_error(err: BaseException) -> str:
    """One of :data:`LOAD_ERRORS` as one line; safetensors' own text ("incomplete metadata, file not fully
    covered") does not say which file, so a SafetensorError names the weights."""
    text = " ".join(str(err).split())
    if isinstance(err, SafetensorError):
        return f"its .safetensors weights are damaged or half-written ({text})"
    return text

MANIFEST = ".hf_longctx_written.json"


class FolderError(RuntimeError):
    """A folder that a command refuses to replace; the message says why and names the files at stake."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` as a relative POSIX path (the manifest excluded)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != MANIFEST)


def write_manifest(folder, command: str) -> None:
    """Record every file now in ``folder`` as written by ``hf-longctx command``."""
    folder = Path(folder)
    files = {name: _sha256(folder / name) for name in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"command": command, "files": files}, indent=1) + "\n")


def check_replaceable(dst, *, flag: str = "--overwrite") -> None:
    """Raise :class:`FolderError` unless ``dst`` is missing, empty, or holds exactly what hf_longctx wrote there."""
    dst = Path(dst)
    if not (dst.exists() or dst.is_symlink()):
        return
    if dst.is_symlink() or not dst.is_dir():
        raise FolderError(f"{dst} is not a folder hf_longctx wrote; refusing to replace it even with {flag}")
    present = _files(dst)
    if not present and not (dst / MANIFEST).exists():
        return  # an empty folder: nothing to lose
    try:
        manifest = json.loads((dst / MANIFEST).read_text())
        recorded = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
        raise FolderError(
            f"{dst} was not written by hf-longctx (no readable {MANIFEST}) and holds {shown}; refusing to replace "
            f"it even with {flag}: choose another folder, or move its contents away yourself"
        ) from None
    added = [name for name in present if name not in recorded]
    changed = [name for name in present if name in recorded and _sha256(dst / name) != recorded[name]]
    if added or changed:
        parts = [f"{label}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
                 for label, names in (("files it did not write", added), ("files changed since", changed)) if names]
        raise FolderError(
            f"{dst} was written by hf-longctx {manifest.get('command', '')}, but it now holds "
            + "; ".join(parts) + f". Refusing to replace it even with {flag}: move those files or choose another folder"
        )


def check_run_folder(dst, marker: str, known: tuple[str, ...], *, flag: str = "--overwrite") -> None:
    """A ``train``/``demo`` folder: raise :class:`FolderError` unless it has ``marker`` and nothing beside the
    ``known`` top-level entries (and the command's hidden staging folders, ``.NAME.*``)."""
    dst = Path(dst)
    if dst.is_symlink() or not dst.is_dir() or not (dst / marker).is_file():
        raise FolderError(f"{dst} is not an earlier hf-longctx run folder (no {marker}); refusing to delete it even "
                          f"with {flag}: choose another --output-dir")
    allowed = set(known) | {marker}
    foreign = sorted(p.name for p in dst.iterdir()
                     if p.name not in allowed and not any(p.name.startswith(f".{k}.") for k in known))
    if foreign:
        raise FolderError(f"{dst} holds files the run did not write ({', '.join(foreign[:10])}); refusing to delete "
                          f"it even with {flag}: move them or choose another --output-dir")


def check_location(dst) -> None:
    """Raise :class:`FolderError` when ``dst`` cannot be created: a file stands where it or one of its parent
    folders must be, or the nearest existing parent is not writable (these were OSError tracebacks)."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise FolderError(f"{dst} is a file, not a folder; choose another path")
    for parent in dst.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FolderError(f"cannot create {dst}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise FolderError(f"cannot create {dst}: no permission to write into {parent}")
            return


def staging_folder(dst: Path) -> Path:
    """A fresh temporary sibling of ``dst`` to write into before :func:`replace_folder`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dst.name}.writing-", dir=dst.parent))


def replace_folder(staging: Path, dst: Path) -> None:
    """Move ``staging`` to ``dst``; an existing ``dst`` (already checked) is swapped out and removed only after
    the new folder is in place, and put back if the swap fails."""
    if not (dst.exists() or dst.is_symlink()):
        os.replace(staging, dst)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent)) / "old"
    os.replace(dst, aside)
    try:
        os.replace(staging, dst)
    except BaseException:
        os.replace(aside, dst)
        raise
    shutil.rmtree(aside.parent, ignore_errors=True)


def save_model_staged(trainer, model_dir: Path, extra_files: dict[str, str], main: bool, barrier) -> None:
    """``trainer.save_model`` into ``model_dir`` through a staging folder beside it, renamed once complete, so an
    interrupted run never leaves a ``model/`` that loads half-written; ``extra_files`` (name -> text) go in with it.

    Distributed: one staging folder, made by the main process and named to all; every process calls
    ``save_model`` (FSDP and DeepSpeed gather the weights there), ``Trainer`` writes on the main one, which alone
    renames it. No process returns before ``model_dir`` is in place."""
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=model_dir.parent)) if main else None
    if trainer.args.world_size > 1:
        import torch.distributed

        named = [None if staging is None else str(staging)]
        torch.distributed.broadcast_object_list(named, src=0)
        staging = Path(named[0])
    try:
        trainer.save_model(str(staging))
        if main:
            for name, text in extra_files.items():
                (staging / name).write_text(text)
            if model_dir.exists():
                shutil.rmtree(model_dir)
            staging.rename(model_dir)
    finally:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
    barrier()
