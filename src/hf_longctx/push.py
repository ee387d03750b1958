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


def push_folder(folder, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str | None = None, api: HfApi | None = None) -> str:
    """Upload ``folder`` (an ``hf-longctx export`` output) to ``repo_id``; returns the commit URL."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        raise PushError(f"{folder} is not an exported model folder (missing {', '.join(missing) or 'folder'}); "
                        "run `hf-longctx export` first")
    if not any(folder.glob("*.safetensors")):
        raise PushError(f"{folder} holds no *.safetensors weights")
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise PushError("HF_HUB_OFFLINE is set, so the Hub cannot be reached; nothing was uploaded")
    api = api or HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), token=token,
            commit_message=commit_message or "Upload hf_longctx model",
            ignore_patterns=[MANIFEST],  # local bookkeeping of what export wrote, not part of the model
        )
    except Exception as err:  # network, auth and server errors all end the same way for the user
        raise PushError(f"could not push to {repo_id}: {type(err).__name__}: {err}; no commit was made") from err
    return str(getattr(info, "commit_url", info))


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="a folder written by `hf-longctx export`")
    parser.add_argument("repo_id", help="the Hub repository, e.g. user/my-longformer")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="a Hub token (default: HF_TOKEN or the saved login)")


def run(args) -> int:
    try:
        url = push_folder(args.folder, args.repo_id, private=args.private or None, token=args.token)
    except PushError as err:
        print(f"hf-longctx push: {err}", file=sys.stderr)
        return 1
    print(f"pushed: {url}")
    return 0
