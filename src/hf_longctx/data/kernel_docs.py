"""Long-document classification: Linux kernel documentation labelled by topic.

``kernel_docs.jsonl.gz`` next to this module is built by ``tools/build_data.py kernel-docs`` from the Debian package
``linux-doc-6.1``; ``PROVENANCE_kernel_docs.md`` gives its version, sha256, licence (GPL-2) and statistics. The
label of a document is the top-level folder of ``Documentation/`` it sits in (admin-guide, devicetree, ...): 100
documents of at least 2 KB per label (median ~5.6k characters, ~1.6k tokens of the packaged BPE; the longest
117k characters, ~32k tokens), split by document, stratified, 70/15/15 per label.
"""

from __future__ import annotations

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .files import read_packaged_jsonl

DATA_FILE = "kernel_docs.jsonl.gz"
PROVENANCE_FILE = "PROVENANCE_kernel_docs.md"
LABEL_NAMES = ("admin-guide", "devicetree", "driver-api", "filesystems", "hwmon", "networking")
SPLITS = ("train", "validation", "test")


def read_records() -> list[dict]:
    """Every document as a dict ``{"text", "label" (a name), "path", "split"}``, in file order."""
    return read_packaged_jsonl(DATA_FILE)


def load_kernel_docs() -> DatasetDict:
    """The kernel documentation set as a ``DatasetDict`` with ``train`` (420), ``validation`` (90), ``test`` (90).

    Columns: ``text`` (a whole reStructuredText document), ``label`` (a ``ClassLabel`` whose names are
    :data:`LABEL_NAMES`) and ``path`` (the file under ``Documentation/``; it starts with the label, so it is for
    bookkeeping only, never a model input). No document is in two splits. Reads only the packaged file.
    """
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=list(LABEL_NAMES)), "path": Value("string")}
    )
    columns = {split: {"text": [], "label": [], "path": []} for split in SPLITS}
    for record in read_records():
        split = columns[record["split"]]
        split["text"].append(record["text"])
        split["label"].append(LABEL_NAMES.index(record["label"]))
        split["path"].append(record["path"])
    return DatasetDict({split: Dataset.from_dict(columns[split], features=features) for split in SPLITS})


__all__ = ["DATA_FILE", "LABEL_NAMES", "PROVENANCE_FILE", "SPLITS", "load_kernel_docs", "read_records"]
