"""Raw text for (continued) pretraining: the shipped corpora's training text, or a user's folder of documents.

``hf-longctx train --task mlm`` / ``--task clm`` read documents from one of two places:

- :func:`shipped_documents`: the text of the shipped corpora (:data:`CORPORA`), each split taken from the same split
  of its corpus, so the pretraining ``train`` split holds training text only and no validation or test document of
  any shipped task is ever trained on (``tests/test_pretrain.py`` checks it for every task). ``passkey`` adds no
  text: its filler is the kernel-docs *test* split, which pretraining must never see.
- :func:`read_text_folder`: a user's ``--data-dir`` (see :data:`TEXT_FOLDER_FORMAT`), every document assigned to
  ``train`` / ``validation`` / ``test`` by a hash of its text, so the split does not depend on file names or order
  and a document repeated in two files lands in one split only.

:func:`chunk_documents` then cuts each whole document into pieces of at most ``max_length`` tokens (special tokens
included), never joining two documents in one piece.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from .files import DataError

SPLITS = ("train", "validation", "test")
TEXT_FIELD = "text"  # the key of a document in a *.jsonl file of a --data-dir
TEXT_FOLDER_FORMAT = (f'a folder of raw documents: *.txt files (one document per file) and/or *.jsonl files (one '
                      f'JSON object per line, the document under "{TEXT_FIELD}"; other keys are ignored)')
HELD_OUT_FRACTION = 0.05  # of a --data-dir's documents, for validation and again for test (at least one each)
MIN_PIECE_TOKENS = 16  # a document's last piece shorter than this (a redirect page, a trailing line) is dropped


def _kernel_docs() -> dict[str, list[str]]:
    from .kernel_docs import read_records

    return _by_split(read_records())


def _shakespeare_genre() -> dict[str, list[str]]:
    from .shakespeare import read_records

    return _by_split(read_records())


def _wiki_bytes() -> dict[str, list[str]]:
    """Each byte range as text, one document per ``<page>``. A range boundary may cut a UTF-8 character; its bytes
    are dropped (``errors="ignore"``), never moved into the neighbouring split."""
    from .wiki_bytes import split_bytes

    out = {}
    for split, data in split_bytes().items():
        pages = data.decode("utf-8", errors="ignore").split("</page>")
        out[split] = [page + "</page>" if i < len(pages) - 1 else page for i, page in enumerate(pages)]
        out[split] = [page for page in out[split] if page.strip()]
    return out


def _by_split(records: list[dict]) -> dict[str, list[str]]:
    out = {split: [] for split in SPLITS}
    for record in records:
        out[record["split"]].append(record["text"])
    return out


# The shipped corpora with text, by the name of their task; passkey is left out on purpose (see the module doc).
CORPORA = {"kernel-docs": _kernel_docs, "shakespeare-genre": _shakespeare_genre, "wiki-bytes": _wiki_bytes}


def shipped_documents(corpora=None) -> dict[str, list[str]]:
    """``{"train", "validation", "test"}`` -> the documents of that split of every corpus in ``corpora`` (default:
    all of :data:`CORPORA`), corpus after corpus in the order given."""
    corpora = list(CORPORA) if corpora is None else list(corpora)
    unknown = [name for name in corpora if name not in CORPORA]
    if unknown or not corpora:
        raise DataError(f"unknown corpus {', '.join(unknown) or '(none given)'}; the shipped text corpora are "
                        f"{', '.join(CORPORA)} (passkey's text is the kernel-docs test split, never pretrained on)")
    out = {split: [] for split in SPLITS}
    for name in dict.fromkeys(corpora):  # a corpus named twice is read once
        for split, documents in CORPORA[name]().items():
            out[split].extend(documents)
    return out


def _read_documents(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err})") from err
    if path.suffix == ".txt":
        return [text] if text.strip() else []
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not a JSON object ({err.msg}); expected {TEXT_FOLDER_FORMAT}") from err
        if not isinstance(record, dict) or TEXT_FIELD not in record:
            raise DataError(f'{path}:{number}: no "{TEXT_FIELD}" key; expected {TEXT_FOLDER_FORMAT}')
        if not isinstance(record[TEXT_FIELD], str):
            raise DataError(f'{path}:{number}: "{TEXT_FIELD}" must be a string, got '
                            f'{type(record[TEXT_FIELD]).__name__}')
        if record[TEXT_FIELD].strip():
            documents.append(record[TEXT_FIELD])
    return documents


def read_text_folder(folder) -> dict[str, list[str]]:
    """The documents of ``folder`` (:data:`TEXT_FOLDER_FORMAT`; files directly inside it, sorted by name) split by a
    sha256 of each document's text, read as a number in [0, 1): the top :data:`HELD_OUT_FRACTION` of that range is
    ``validation``, the next ``test``, the rest ``train``. A fixed threshold, not a rank: adding documents to the
    folder never moves a training document into validation or test (a rank did, so a checkpoint pretrained before
    the folder grew was then scored on text it had trained on). A small folder whose held-out range is empty lends
    it the training document of highest hash (train keeps at least one). Identical documents are kept once.
    Raises :class:`DataError` naming the file (and line) that is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; --data-dir with --task mlm or clm takes {TEXT_FOLDER_FORMAT}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".txt", ".jsonl"))
    if not files:
        raise DataError(f"{folder} holds no *.txt or *.jsonl file; --data-dir with --task mlm or clm takes "
                        f"{TEXT_FOLDER_FORMAT}")
    documents = {}
    for path in files:
        for document in _read_documents(path):
            documents.setdefault(hashlib.sha256(document.encode("utf-8")).hexdigest(), document)
    if len(documents) < 3:
        raise DataError(f"{folder} holds {len(documents)} distinct non-empty document(s); pretraining needs at least "
                        "3 (one each for train, validation and test)")
    splits = {"validation": [], "test": [], "train": []}
    for key in sorted(documents, reverse=True):  # highest hash first
        share = int(key, 16) / 16 ** len(key)
        split = ("validation" if share >= 1 - HELD_OUT_FRACTION else
                 "test" if share >= 1 - 2 * HELD_OUT_FRACTION else "train")
        splits[split].append(documents[key])
    for split in ("validation", "test"):
        if not splits[split]:  # lend the document nearest the held-out range, from a split that keeps one
            donor = next(d for d in ("train", "validation", "test") if len(splits[d]) > 1)
            splits[split].append(splits[donor].pop(0 if donor == "train" else -1))
    return splits


def chunk_documents(documents: list[str], tokenizer, max_length: int, *, limit: int | None = None,
                    seed: int = 0, end_token: bool = False) -> list[list[int]]:
    """Every document tokenized whole and cut into consecutive pieces of at most ``max_length`` tokens, each wrapped
    in the tokenizer's special tokens (``<s> ... </s>`` for a RoBERTa-style BPE); a last piece under
    :data:`MIN_PIECE_TOKENS` tokens of text is dropped unless it is the whole document.

    With ``limit``, documents are read in a seeded random order only until ``limit`` pieces are found, and ``limit``
    of them are returned (so ``--max-train-samples`` does not tokenize a whole corpus); without, every piece in
    document order.

    ``end_token``: every piece ends with the tokenizer's end token even if its template adds none (causal LM:
    a causal model saves a tokenizer that adds no end token to prompts, and evaluating it must read the pieces
    it was trained on).
    """
    from .long_docs import special_tokens_template

    prefix, suffix = special_tokens_template(tokenizer)
    eos = tokenizer.eos_token_id
    if end_token and eos is not None and suffix[-1:] != [eos]:
        suffix = suffix + [eos]
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise ValueError(f"--max-length {max_length} leaves no room for text beside the tokenizer's "
                         f"{len(prefix) + len(suffix)} special tokens")
    order = list(range(len(documents)))
    if limit is not None:
        random.Random(seed).shuffle(order)
    pieces: list[list[int]] = []
    batch = 16 if limit is not None else 256  # with a limit, tokenize little more than needed
    for start in range(0, len(order), batch):
        texts = [documents[i] for i in order[start:start + batch]]
        # verbose=False: whole documents are longer than the model, on purpose (the warning says otherwise).
        for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
            for offset in range(0, len(ids), body):
                piece = ids[offset:offset + body]
                if len(piece) < MIN_PIECE_TOKENS and offset > 0:
                    continue
                pieces.append(prefix + piece + suffix)
        if limit is not None and len(pieces) >= limit:
            random.Random(seed).shuffle(pieces)  # not only the first documents' pieces
            return pieces[:limit]
    return pieces


__all__ = ["CORPORA", "HELD_OUT_FRACTION", "MIN_PIECE_TOKENS", "SPLITS", "TEXT_FIELD", "TEXT_FOLDER_FORMAT",
           "chunk_documents", "read_text_folder", "shipped_documents"]
