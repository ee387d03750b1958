"""The shipped long-context data sets, tokenizers and long-document helpers: contents, splits, checksums, round trips.

Everything reads the files committed under ``src/hf_longctx/data/``; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
from importlib import resources

import pytest
from transformers import AutoTokenizer

from hf_longctx.data import kernel_docs, passkey, wiki_bytes
from hf_longctx.data.long_docs import (
    IGNORE_INDEX,
    global_mask_first_token,
    global_mask_question,
    global_mask_span,
    lm_labels,
    pack_blocks,
    pad_to_multiple,
    segment_with_stride,
    special_tokens_template,
)
from hf_longctx.data.tokenizers import BPE_DIR, SPECIAL_TOKENS, byte_tokenizer, kernel_docs_bpe, train_bpe

DATA = resources.files("hf_longctx.data")


def recorded_sha256(provenance: str) -> dict[str, str]:
    """``{file: sha256}`` from the "sha256 of `file`: `hex`" lines of a provenance note."""
    text = DATA.joinpath(provenance).read_text()
    return dict(re.findall(r"sha256 of `([^`]+)`: `([0-9a-f]{64})`", text))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def kernel():
    return kernel_docs.load_kernel_docs()


@pytest.fixture(scope="module")
def bpe():
    return kernel_docs_bpe()


# ---------------------------------------------------------------------------------------------------------------
# Checksums: the committed files are the ones the provenance notes describe
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provenance, files",
    [
        ("PROVENANCE_kernel_docs.md", ["kernel_docs.jsonl.gz"]),
        ("PROVENANCE_wiki_bytes.md", ["enwiki_sample.xml.gz"]),
        ("PROVENANCE_bpe_kernel_docs.md", ["bpe_kernel_docs/tokenizer.json", "bpe_kernel_docs/tokenizer_config.json"]),
        ("PROVENANCE_bpe_shakespeare_genre.md",
         ["bpe_shakespeare_genre/tokenizer.json", "bpe_shakespeare_genre/tokenizer_config.json"]),
    ],
)
def test_committed_files_match_provenance(provenance, files):
    recorded = recorded_sha256(provenance)
    for name in files:
        assert recorded[name] == sha256_of(DATA.joinpath(name).read_bytes()), f"{name} differs from {provenance}"
        assert DATA.joinpath(name).read_bytes().__len__() <= 3_000_000, f"{name} is over the 3 MB limit"


def test_wiki_content_checksum_and_licence():
    note = DATA.joinpath(wiki_bytes.PROVENANCE_FILE).read_text()
    content = re.search(r"sha256 of its decompressed content: `([0-9a-f]{64})`", note).group(1)
    assert sha256_of(wiki_bytes.read_bytes()) == content
    assert "CC BY-SA 3.0" in note and "https://creativecommons.org/licenses/by-sa/3.0/" in note
    assert "GNU General Public License version 2" in DATA.joinpath(kernel_docs.PROVENANCE_FILE).read_text()


def test_bpe_provenance_names_the_corpus_it_was_trained_on():
    from hf_longctx.data import shakespeare

    for corpus, module in (("kernel_docs", kernel_docs), ("shakespeare_genre", shakespeare)):
        note = DATA.joinpath(f"PROVENANCE_bpe_{corpus}.md").read_text()
        assert sha256_of(DATA.joinpath(module.DATA_FILE).read_bytes()) in note, corpus


def test_each_task_tokenizer_is_trained_on_its_own_text():
    from hf_longctx.data import load_demo_dataset
    from hf_longctx.data.tokenizers import shipped_bpe

    texts = list(load_demo_dataset()["test"]["text"][:20])
    own, borrowed = shipped_bpe("shakespeare_genre"), kernel_docs_bpe()
    assert own.get_vocab() != borrowed.get_vocab() and len(own) == len(borrowed) == 8192
    ids = own(texts)["input_ids"]
    assert [own.decode(i, skip_special_tokens=True) for i in ids] == texts
    # Held-out plays: ~20% fewer tokens with its own BPE (1.65k per 1,000-word training window, 2.2k borrowed).
    assert sum(map(len, ids)) < 0.85 * sum(map(len, borrowed(texts)["input_ids"]))
    with pytest.raises(ValueError, match="no shipped BPE for 'wiki'"):
        shipped_bpe("wiki")


# ---------------------------------------------------------------------------------------------------------------
# Kernel documentation: topic classification
# ---------------------------------------------------------------------------------------------------------------


def test_kernel_docs_splits_and_labels(kernel):
    assert {split: kernel[split].num_rows for split in kernel} == {"train": 420, "validation": 90, "test": 90}
    for split, per_label in (("train", 70), ("validation", 15), ("test", 15)):
        ds = kernel[split]
        assert ds.features["label"].names == list(kernel_docs.LABEL_NAMES)
        assert ds.column_names == ["text", "label", "path"]
        counts = [ds["label"].count(i) for i in range(len(kernel_docs.LABEL_NAMES))]
        assert counts == [per_label] * len(kernel_docs.LABEL_NAMES), split
        for text, label, path in zip(ds["text"], ds["label"], ds["path"]):
            # The label is the top-level folder of Documentation/, and every document is at least 2 KB.
            assert path.split("/")[0] == kernel_docs.LABEL_NAMES[label]
            assert path.endswith((".rst", ".txt"))
            assert len(text.encode("utf-8")) >= 2048


def test_kernel_docs_no_document_in_two_splits(kernel):
    paths = {split: set(kernel[split]["path"]) for split in kernel}
    texts = {split: {sha256_of(t.encode()) for t in kernel[split]["text"]} for split in kernel}
    for split in kernel:
        assert len(paths[split]) == kernel[split].num_rows and len(texts[split]) == kernel[split].num_rows
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not paths[a] & paths[b], (a, b)
        assert not texts[a] & texts[b], (a, b)


def test_kernel_docs_are_long_documents(kernel):
    lengths = sorted(len(t) for t in kernel["train"]["text"])
    assert lengths[len(lengths) // 2] > 4000  # median in characters: ~1.4k BPE tokens, past a 512-token model
    assert lengths[-1] > 50_000


# ---------------------------------------------------------------------------------------------------------------
# Wikipedia bytes: enwik8-style language modelling
# ---------------------------------------------------------------------------------------------------------------


def test_wiki_bytes_split_90_5_5_contiguous():
    data = wiki_bytes.read_bytes()
    assert len(data) == 6_089_746 and data.startswith(b"<mediawiki") and data.rstrip().endswith(b"</mediawiki>")
    splits = wiki_bytes.split_bytes()
    assert b"".join(splits[s] for s in ("train", "validation", "test")) == data
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [5_480_771, 304_487, 304_488]
    # The provenance note's table gives the same ranges.
    note = DATA.joinpath(wiki_bytes.PROVENANCE_FILE).read_text()
    for split in ("train", "validation", "test"):
        row = re.search(rf"\| {split} \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|", note)
        assert int(row.group(3).replace(",", "")) == len(splits[split])


def test_wiki_bytes_blocks_decode_to_the_corpus():
    splits = wiki_bytes.split_bytes()
    ds = wiki_bytes.load_wiki_bytes(block_size=1024)
    tokenizer = byte_tokenizer()
    for split, data in splits.items():
        assert ds[split].num_rows == len(data) // 1024
    first, last = ds["validation"][0]["input_ids"], ds["validation"][-1]["input_ids"]
    assert len(first) == 1024 and min(first) >= 3 and max(first) <= 258
    assert bytes(i - 3 for i in first) == splits["validation"][:1024]
    n = ds["validation"].num_rows
    assert bytes(i - 3 for i in last) == splits["validation"][(n - 1) * 1024:n * 1024]
    # byte_tokenizer's ids: decoding a train block gives the text back (the first block is pure ASCII XML).
    assert tokenizer.decode(ds["train"][0]["input_ids"]) == splits["train"][:1024].decode("utf-8")
    raw = wiki_bytes.load_wiki_bytes(block_size=64, id_offset=0)
    assert bytes(raw["test"][5]["input_ids"]) == splits["test"][5 * 64:6 * 64]
    with pytest.raises(ValueError, match="block_size"):
        wiki_bytes.load_wiki_bytes(block_size=0)


def test_bits_per_byte_helper():
    assert wiki_bytes.bits_per_byte(math.log(2)) == pytest.approx(1.0)
    assert wiki_bytes.bits_per_byte(1.0) == pytest.approx(1.4426950408889634)
    # 100 tokens at 2 ln 2 nats = 200 bits, over 400 bytes.
    assert wiki_bytes.bits_per_byte(2 * math.log(2), num_tokens=100, num_bytes=400) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both"):
        wiki_bytes.bits_per_byte(1.0, num_tokens=10)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------

SAMPLE = "Kernel  driver\n\tuses DMA — ünïcode 🙂 and tabs\t\tand trailing spaces   \n"


def test_byte_tokenizer_offline_round_trip():
    tokenizer = byte_tokenizer()
    assert len(tokenizer) == 259
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer(SAMPLE)["input_ids"]
    assert ids[:-1] == [b + 3 for b in SAMPLE.encode("utf-8")] and ids[-1] == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == SAMPLE


def test_packaged_bpe_reloads_through_autotokenizer(bpe, kernel):
    assert len(bpe) == 8192
    assert bpe.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert (bpe.bos_token_id, bpe.pad_token_id, bpe.eos_token_id, bpe.sep_token_id, bpe.unk_token_id,
            bpe.mask_token_id) == (0, 1, 2, 2, 3, 4)
    same = AutoTokenizer.from_pretrained(str(DATA.joinpath(BPE_DIR)))
    text = kernel["test"][0]["text"]
    ids = bpe(text)["input_ids"]
    assert ids == same(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids  # byte-level: nothing is <unk>
    assert bpe.decode(ids, skip_special_tokens=True) == text
    assert bpe.decode(bpe(SAMPLE)["input_ids"], skip_special_tokens=True) == SAMPLE
    # Trained on kernel documentation: it compresses held-out documents well (3.4 characters per token on test).
    texts = list(kernel["test"]["text"])
    n_tokens = sum(map(len, bpe(texts, add_special_tokens=False)["input_ids"]))
    assert sum(map(len, texts)) / n_tokens > 3.0
    assert bpe("a", "b")["input_ids"][0] == 0 and bpe("a", "b")["input_ids"].count(2) == 3


def test_train_bpe_saves_a_tokenizer_autotokenizer_reloads(tmp_path):
    import pydoc_data.topics

    texts = list(pydoc_data.topics.topics.values())
    trained = train_bpe(texts, vocab_size=600, out_dir=tmp_path)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(trained) == len(reloaded) == 600
    assert reloaded.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert reloaded.pad_token_id == 1 and reloaded.sep_token_id == 2 and reloaded.eos_token_id == 2
    for text in (texts[0], SAMPLE):
        ids = reloaded(text)["input_ids"]
        assert ids == trained(text)["input_ids"]
        assert reloaded.decode(ids, skip_special_tokens=True) == text
    # <mask> takes the space before it, as RoBERTa's does.
    assert reloaded.convert_ids_to_tokens(reloaded("a <mask>")["input_ids"]) == ["<s>", "a", "<mask>", "</s>"]
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(texts, vocab_size=100)


# ---------------------------------------------------------------------------------------------------------------
# Passkey retrieval
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bpe", "bytes"])
@pytest.mark.parametrize("question_first", [False, True])
def test_passkey_span_is_the_key_at_the_recorded_depth(which, question_first, bpe):
    tokenizer = bpe if which == "bpe" else byte_tokenizer()
    ds = passkey.make_passkey_dataset(tokenizer, n_per_length=2, seed=0, question_first=question_first)
    prefix, middle, suffix = special_tokens_template(tokenizer, pair=True)
    question = tokenizer(passkey.QUESTION, add_special_tokens=False)["input_ids"]
    head = tokenizer(passkey.NEEDLE[0], add_special_tokens=False)["input_ids"]
    assert ds["length"] == [n for n in passkey.DEFAULT_LENGTHS for _ in range(2)]
    for row in ds:
        ids, start, end = row["input_ids"], row["start_positions"], row["end_positions"]
        assert len(ids) == len(row["attention_mask"]) == len(row["global_attention_mask"]) == row["length"]
        assert set(row["attention_mask"]) == {1}
        assert re.fullmatch(r"\d{5}", row["answer"])
        assert tokenizer.decode(ids[start:end + 1]).strip() == row["answer"]
        # The needle starts depth * filler tokens into the context.
        context_start = len(prefix) + (len(question) + len(middle) if question_first else 0)
        assert start == context_start + round(row["depth"] * row["filler_tokens"]) + len(head)
        assert tokenizer.decode(ids[start - len(head):start]) == passkey.NEEDLE[0]
        # The key is the only answer in the text, and the question is where the layout puts it, with global attention.
        assert tokenizer.decode(ids, skip_special_tokens=True).count(row["answer"]) == 1
        globals_ = [i for i, g in enumerate(row["global_attention_mask"]) if g]
        if question_first:
            assert ids[:len(prefix) + len(question)] == prefix + question
            assert globals_ == list(range(len(prefix) + len(question)))
            if middle:
                assert row["global_attention_mask"] == global_mask_question(ids, middle[0])
        else:
            q_start = len(ids) - len(suffix) - len(question)
            assert ids[q_start - len(middle):] == middle + question + suffix
            assert globals_ == list(range(q_start, q_start + len(question)))
    depths = ds["depth"]
    assert min(depths) < 0.5 < max(depths) and all(0 <= d <= 1 for d in depths)


def test_passkey_is_deterministic_in_the_seed(bpe):
    a = passkey.make_passkey_dataset(bpe, lengths=(1024, 2048), n_per_length=3, seed=0)
    b = passkey.make_passkey_dataset(bpe, lengths=(1024, 2048), n_per_length=3, seed=0)
    c = passkey.make_passkey_dataset(bpe, lengths=(1024, 2048), n_per_length=3, seed=1)
    assert a.to_dict() == b.to_dict()
    assert a["answer"] != c["answer"] and a["input_ids"] != c["input_ids"]
    # Each example has its own generator: asking for fewer examples leaves the first ones unchanged.
    d = passkey.make_passkey_dataset(bpe, lengths=(1024,), n_per_length=1, seed=0)
    assert d[0] == a[0]


def test_passkey_rejects_a_length_too_short(bpe):
    with pytest.raises(ValueError, match="too short"):
        passkey.make_passkey_dataset(bpe, lengths=(8,), n_per_length=1)


def test_passkey_filler_never_mentions_a_pass_key():
    lines = passkey.filler_lines()
    assert len(lines) > 10_000 and all(line.endswith("\n") for line in lines)
    assert "pass key" not in "".join(lines).lower()


# ---------------------------------------------------------------------------------------------------------------
# Long-document helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, window, stride", [(11, 4, 3), (10, 4, 3), (3, 4, 2), (16, 4, 4), (100, 32, 7), (5, 5, 1)])
def test_segment_with_stride_covers_every_token_and_lm_labels_score_each_once(n, window, stride):
    ids = list(range(100, 100 + n))
    windows = segment_with_stride(ids, window, stride)
    covered, scored = set(), []
    for k, w in enumerate(windows):
        assert w.input_ids == ids[w.start:w.start + len(w.input_ids)]
        assert len(w.input_ids) == min(window, n)
        if k:
            assert w.start <= windows[k - 1].start + stride  # overlap of at least window - stride tokens
            assert w.start + len(w.input_ids) > windows[k - 1].start + len(windows[k - 1].input_ids)
        covered.update(w.input_ids)
        scored += [t for t in lm_labels(w) if t != IGNORE_INDEX]
    assert covered == set(ids)
    assert scored == ids  # every token scored exactly once, in order
    assert windows[-1].start + len(windows[-1].input_ids) == n


def test_segment_with_stride_example_and_errors():
    windows = segment_with_stride(list(range(11)), window=4, stride=3)
    assert [(w.start, w.new_tokens) for w in windows] == [(0, 4), (3, 3), (6, 3), (7, 1)]
    assert lm_labels(windows[1]) == [-100, 4, 5, 6]
    assert segment_with_stride([], 4, 2) == []
    with pytest.raises(ValueError, match="stride"):
        segment_with_stride([1, 2, 3], window=2, stride=3)


def test_pack_blocks_and_pad_to_multiple():
    blocks = pack_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4, separator=[0])
    assert blocks == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert pack_blocks([[1, 2, 3]], block_size=2) == [[1, 2]]
    assert pad_to_multiple([5, 6, 7], 4, pad_value=1) == [5, 6, 7, 1]
    assert pad_to_multiple([5, 6, 7, 8], 4, pad_value=1) == [5, 6, 7, 8]
    assert pad_to_multiple([5], 512, pad_value=0) == [5] + [0] * 511


def test_global_masks():
    assert global_mask_first_token(4) == [1, 0, 0, 0]
    assert global_mask_span(6, 2, 4) == [0, 0, 1, 1, 0, 0]
    # <s> q q </s></s> c c </s>: everything before the first separator.
    assert global_mask_question([0, 7, 8, 2, 2, 9, 9, 2], sep_token_id=2) == [1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="separator"):
        global_mask_question([0, 7, 8], sep_token_id=2)
    with pytest.raises(ValueError):
        global_mask_span(4, 3, 5)


def test_special_tokens_template(bpe):
    assert special_tokens_template(bpe) == ([0], [2])
    assert special_tokens_template(bpe, pair=True) == ([0], [2, 2], [2])
    assert special_tokens_template(byte_tokenizer()) == ([], [1])
    assert special_tokens_template(byte_tokenizer(), pair=True) == ([], [1], [1])
    text = "a longer text"
    prefix, suffix = special_tokens_template(bpe)
    assert bpe(text)["input_ids"] == prefix + bpe(text, add_special_tokens=False)["input_ids"] + suffix


def test_kernel_docs_window_with_specials_fits_a_model(bpe, kernel):
    # A document far longer than a 512-token model, cut into windows that keep <s> ... </s> and a multiple of 64.
    text = max(kernel["validation"]["text"], key=len)
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    prefix, suffix = special_tokens_template(bpe)
    windows = segment_with_stride(ids, window=512 - len(prefix) - len(suffix), stride=384)
    assert len(windows) > 5
    inputs = [pad_to_multiple(prefix + w.input_ids + suffix, 64, bpe.pad_token_id) for w in windows]
    assert all(len(x) == 512 for x in inputs)
    assert bpe.decode(inputs[0], skip_special_tokens=True) == bpe.decode(windows[0].input_ids)
