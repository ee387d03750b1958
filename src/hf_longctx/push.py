"""``hf-longctx push``: upload an exported folder to the Hugging Face Hub in one commit.

The token comes from ``--token``, ``HF_TOKEN`` or the huggingface_hub login. Without a token, or without a
network, the command fails with a clear message before anything is written; the upload itself is a single
commit, so an interrupted push leaves the repository as it was.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from huggingface_hub import HfApi, get_token

from .folders import MANIFEST

REQUIRED_FILES = ("config.json", "README.md")


class PushError(RuntimeError):
    """A push that cannot happen; the message says why. Nothing was uploaded."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PushError(f"{repo_id!r} is not a Hub repository id (user/name): {err}") from None


def check_can_push(repo_id: str, token: str | None = None) -> str:
    """The token a push to ``repo_id`` would use; :class:`PushError` when the id is malformed, no token is found
    or the Hub is out of reach (``train --push-to-hub`` checks this before it trains)."""
    check_repo_id(repo_id)
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded")
    if _offline():
        raise PushError("HF_HUB_OFFLINE is set, so the Hub cannot be reached; nothing was uploaded")
    return token


def files_to_push(folder) -> list[str]:
    """What a push of ``folder`` uploads: every file but export's local bookkeeping."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST and ".cache" not in p.relative_to(folder).parts)


def card_repo_id(folder: Path) -> str | None:
    """The repository id the exported card's loading snippet names (``repo = "..."``), or None."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    for line in card.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith('repo = "') and line.endswith('"'):
            return line[len('repo = "'):-1]
    return None


def push_folder(folder, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str | None = None, revision: str | None = None, dry_run: bool = False,
                api: HfApi | None = None) -> str | list[str]:
    """Upload ``folder`` (an ``hf-longctx export`` output) to ``repo_id`` in one commit; returns the commit URL.

    ``revision`` is the branch to commit to (created from the default branch when missing). ``dry_run`` checks
    the folder and returns the files that would be uploaded, without a token or a network.
    """
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise PushError(f"{folder} is not an exported model folder (missing {', '.join(missing) or 'folder'}); "
                        "run `hf-longctx export` first")
    if not any(folder.glob("*.safetensors")):
        raise PushError(f"{folder} holds no *.safetensors weights")
    if dry_run:
        check_repo_id(repo_id)
        return files_to_push(folder)
    token = check_can_push(repo_id, token)
    api = api or HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), token=token, revision=revision,
            commit_message=commit_message or "Upload hf_longctx model",
            ignore_patterns=[MANIFEST],  # local bookkeeping of what export wrote, not part of the model
        )
    except Exception as err:  # network, auth and server errors all end the same way for the user
        raise PushError(f"could not push to {repo_id}: {type(err).__name__}: {err}; no commit was made") from err
    return str(getattr(info, "commit_url", info))


# The arguments are defined in hf_longctx_cli.push_arguments.


def run(args) -> int:
    try:
        result = push_folder(args.folder, args.repo_id, private=args.private or None, token=args.token,
                             commit_message=args.commit_message, revision=args.revision, dry_run=args.dry_run)
    except PushError as err:
        print(f"hf-longctx push: {err}", file=sys.stderr)
        return 1
    named = card_repo_id(Path(args.folder))
    if named not in (None, "PATH_OR_REPO", args.repo_id):  # (PATH_OR_REPO: exported without --repo-id)
        print(f"hf-longctx push: warning: the card in {args.folder} loads {named!r}, not {args.repo_id!r}; "
              f"re-export with --repo-id {args.repo_id} so that its snippet loads this repository", file=sys.stderr)
    if args.dry_run:
        print(f"would upload to {args.repo_id}" + (f" (branch {args.revision})" if args.revision else "")
              + f", in one commit ({args.commit_message!r}):")
        for name in result:
            print(f"  {name}")
        return 0
    print(f"pushed: {result}")
    return 0
