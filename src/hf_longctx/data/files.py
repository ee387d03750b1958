"""Reading data files, the packaged ones and a user's own, with errors that say which file and line is wrong.

- :func:`read_packaged_jsonl`: a gzipped JSON-lines file shipped in this package (a damaged install gives a
  :class:`DataError` that names the file and how to restore it, not a ``zlib`` traceback).
- :func:`load_classification_folder`: your own long-document classification data, as a folder with
  ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl``, one ``{"text": ..., "label": ...}`` object per line;
  what ``hf-longctx train --data-dir`` reads.
"""

from __future__ import annotations

import gzip
import json
import zlib
from importlib import resources
from pathlib import Path

SPLITS = ("train", "validation", "test")
FOLDER_FORMAT = ('a folder with train.jsonl, validation.jsonl and test.jsonl, one JSON object per line: '
                 '{"text": "<the document>", "label": "<its class>"}')


class DataError(ValueError):
    """Data that cannot be read or does not have the expected shape; the message names the file (and line)."""


def read_packaged_jsonl(file_name: str) -> list[dict]:
    """Every line of the packaged ``hf_longctx/data/<file_name>`` (gzipped JSON lines) as a dict."""
    path = resources.files(__package__).joinpath(file_name)
    if not path.is_file():
        raise DataError(f"the packaged data file {file_name} is missing from {path}; reinstall hf_longctx "
                        "(pip install --force-reinstall) or rebuild it with the script named in its PROVENANCE note")
    try:
        with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            return [json.loads(line) for line in lines]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"the packaged data file {path} is damaged ({type(err).__name__}: {err}); reinstall "
                        "hf_longctx or rebuild it with the script named in its PROVENANCE note") from err


def _read_split(path: Path) -> tuple[list[str], list]:
    texts, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err})") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not a JSON object ({err.msg}); expected {FOLDER_FORMAT}") from err
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError(f'{path}:{number}: needs the keys "text" and "label"; expected {FOLDER_FORMAT}')
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DataError(f'{path}:{number}: "text" must be a non-empty string')
        if isinstance(record["label"], bool) or not isinstance(record["label"], (str, int)):
            raise DataError(f'{path}:{number}: "label" must be a string or an integer, got {record["label"]!r}')
        texts.append(record["text"])
        labels.append(record["label"])
    if not texts:
        raise DataError(f"{path} holds no examples")
    return texts, labels


def load_classification_folder(folder, label_names: list[str] | None = None):
    """``folder`` (see :data:`FOLDER_FORMAT`) as a ``DatasetDict`` with a ``text`` and a ``ClassLabel`` ``label``.

    The label names are the sorted distinct labels of ``train.jsonl`` (integers in numeric order, then written
    as strings), unless ``label_names`` gives
    them (a trained model's, when evaluating); a validation or test label outside them is an error, not a
    silently wrong metric.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; --data-dir takes {FOLDER_FORMAT}")
    missing = [f"{split}.jsonl" for split in SPLITS if not (folder / f"{split}.jsonl").is_file()]
    if missing:
        raise DataError(f"{folder} has no {', '.join(missing)}; --data-dir takes {FOLDER_FORMAT}")
    splits = {split: _read_split(folder / f"{split}.jsonl") for split in SPLITS}
    kinds = {type(label).__name__ for _, labels in splits.values() for label in labels}
    if len(kinds) > 1:  # 1 and "1" would silently become one class
        raise DataError(f"{folder}: labels mix integers and strings; use one kind")
    if label_names is None:
        train_labels = set(splits["train"][1])
        label_names = [str(label) for label in sorted(train_labels)]  # integers in numeric order: 2 before 10
        if len(label_names) < 2:
            raise DataError(f"{folder / 'train.jsonl'} has a single label ({label_names[0]!r}); a classifier "
                            "needs at least two")
    index = {name: i for i, name in enumerate(label_names)}
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    out = {}
    for split, (texts, labels) in splits.items():
        unknown = sorted({str(label) for label in labels} - index.keys())
        if unknown:
            raise DataError(f"{folder / f'{split}.jsonl'} has labels {unknown} that are not among {label_names}")
        out[split] = Dataset.from_dict({"text": texts, "label": [index[str(label)] for label in labels]},
                                       features=features)
    return DatasetDict(out)


__all__ = ["DataError", "FOLDER_FORMAT", "SPLITS", "load_classification_folder", "read_packaged_jsonl"]
