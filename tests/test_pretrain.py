"""Pretraining on raw text: `hf-longctx train --task mlm|clm`, its masking, its data (no test split of
any shipped task is trained on), every variant with the head, --resume, export, and the --init-from chain into a
downstream classifier (with the checkpoint's own tokenizer, or a shipped checkpoint named by its folder)."""

import configparser
import fnmatch
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_longctx.collator import MaskedLMCollator, mask_tokens
from hf_longctx.data import raw_text
from hf_longctx.train import PRIVATE_RNG_FILE, TrainError, train

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"disable_tqdm": True}
TINY = dict(preset="tiny", max_length=128, batch_size=2, learning_rate=1e-3, max_train_samples=8, max_eval_samples=4,
            device="cpu", log=lambda message: None)


# ------------------------------------------------------------------ masking --------------------------------------


def test_masking_chooses_15_percent_of_maskable_tokens_and_replaces_them_80_10_10():
    generator = torch.Generator().manual_seed(0)
    n, vocab, mask_id = 400_000, 1000, 4
    ids = torch.randint(5, vocab, (4, n // 4), generator=generator)
    maskable = torch.rand(ids.shape, generator=generator) < 0.9  # the rest stands for padding and special tokens
    replaceable = torch.arange(5, vocab)
    inputs, labels = mask_tokens(ids, mask_token_id=mask_id, maskable=maskable, vocab_size=vocab,
                                 replaceable=replaceable, generator=generator)

    chosen = labels != -100
    assert not chosen[~maskable].any()  # never padding or a special token
    assert torch.equal(labels[chosen], ids[chosen])  # the label is the original token
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen tokens are left alone
    k, m = int(chosen.sum()), int(maskable.sum())
    # Binomial counts: 5 standard deviations of sampling error.
    assert abs(k / m - 0.15) < 5 * math.sqrt(0.15 * 0.85 / m)
    became_mask = (inputs[chosen] == mask_id).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    randomised = ((inputs[chosen] != mask_id) & (inputs[chosen] != ids[chosen])).float().mean().item()
    tolerance = 5 * math.sqrt(0.8 * 0.2 / k)
    assert abs(became_mask - 0.8) < tolerance
    # A random draw equal to the original token counts as kept: 1 in 995 of the random 10%.
    assert abs(kept - (0.1 + 0.1 / len(replaceable))) < tolerance
    assert abs(randomised - 0.1 * (1 - 1 / len(replaceable))) < tolerance
    assert set(inputs[chosen & (inputs != mask_id)].unique().tolist()) <= set(replaceable.tolist())


def test_masked_lm_collator_pads_global_mask_and_never_masks_padding_or_special_tokens():
    collator = MaskedLMCollator(pad_token_id=1, mask_token_id=4, special_ids=(0, 1, 2, 3, 4), vocab_size=50,
                                mlm_probability=0.5)
    examples = [{"input_ids": [0, *range(5, 45), 2], "global_attention_mask": [1] + [0] * 41},
                {"input_ids": [0, 7, 8, 2], "global_attention_mask": [1, 0, 0, 0]}]
    batch = collator(examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["global_attention_mask"].shape == (2, 42)
    assert batch["global_attention_mask"][1].tolist() == [1] + [0] * 41
    assert batch["attention_mask"][1].sum() == 4
    special = torch.tensor([0, 1, 2, 3, 4])
    padded_or_special = (batch["attention_mask"] == 0) | torch.isin(torch.tensor([e + [1] * (42 - len(e)) for e in (
        examples[0]["input_ids"], examples[1]["input_ids"])]), special)
    assert (batch["labels"][padded_or_special] == -100).all()
    assert (batch["labels"][0, 1:41] != -100).sum() > 5  # half of 40 tokens on average
    # A piece's masks depend on the piece, the seed and the epoch only: not on its batch-mates or the padding
    # (so a resumed run draws what the uninterrupted one drew), and they change every epoch.
    alone = collator(examples[1:])
    assert torch.equal(alone["labels"][0], batch["labels"][1, :4])
    assert torch.equal(collator(examples[:1])["labels"], batch["labels"][:1])
    collator.epoch = 1
    assert not torch.equal(collator(examples[:1])["labels"], batch["labels"][:1])
    # An evaluation batch brings its fixed masks: padded, not masked again.
    fixed = [{"input_ids": [0, 4, 9, 2], "labels": [-100, 6, -100, -100]}]
    out = collator(fixed)
    assert out["input_ids"].tolist() == [[0, 4, 9, 2]] and out["labels"].tolist() == [[-100, 6, -100, -100]]


# ------------------------------------------------------------------ data -----------------------------------------


@pytest.fixture(scope="module")
def bpe():
    from hf_longctx.data.tokenizers import kernel_docs_bpe

    return kernel_docs_bpe()


def test_chunk_documents_cuts_each_document_whole_and_never_joins_two(bpe):
    documents = ["alpha beta gamma " * 100, "short text here, then more words " * 3, "delta " * 7]
    pieces = raw_text.chunk_documents(documents, bpe, 64)
    assert all(len(p) <= 64 and p[0] == bpe.bos_token_id and p[-1] == bpe.eos_token_id for p in pieces)
    bodies = [p[1:-1] for p in pieces]
    ids = bpe(documents, add_special_tokens=False)["input_ids"]
    n_first = -(-len(ids[0]) // 62)  # pieces of the first document
    assert sum(bodies[:n_first], []) == ids[0]  # consecutive, nothing lost, nothing added
    assert bodies[n_first] == ids[1]  # the next document starts its own piece
    assert bodies[n_first + 1] == ids[2]  # a short document on its own is kept
    # With a limit, only that many pieces come back, drawn from shuffled documents.
    assert len(raw_text.chunk_documents(documents, bpe, 64, limit=3, seed=1)) == 3


MARKUP = set("<>{}|=*#`_")  # XML, wiki templates and tables, reStructuredText: text that documents share


def _line_pairs(text: str) -> set[str]:
    """Every two consecutive lines of ``text`` that are prose (no markup, at least 80 characters and 10 words):
    unique to their document, unlike a licence header or an XML tag, and cheap to look up in a set."""
    lines = [line.strip() for line in text.splitlines()]
    pairs = set()
    for a, b in zip(lines, lines[1:]):
        pair = f"{a}\n{b}"
        if len(pair) >= 80 and pair.count(" ") >= 9 and not MARKUP & set(pair):
            pairs.add(pair)
    return pairs


@pytest.fixture(scope="module")
def pretraining_text():
    documents = raw_text.shipped_documents()
    return documents, set().union(*map(_line_pairs, documents["train"]))


def _test_texts(task_name: str) -> list[str]:
    """The text of every test example of a shipped task."""
    from hf_longctx.tasks import TASKS

    if task_name == "kernel-docs":
        from hf_longctx.data.kernel_docs import load_kernel_docs

        return load_kernel_docs()["test"]["text"]
    if task_name == "shakespeare-genre":
        from hf_longctx.data import load_demo_dataset

        return load_demo_dataset()["test"]["text"]
    if task_name == "wiki-bytes":
        from hf_longctx.data.wiki_bytes import split_bytes

        return [split_bytes()["test"].decode("utf-8", errors="ignore")]
    # passkey: its test examples, decoded back to text, and the documents their filler is drawn from
    from hf_longctx.data.kernel_docs import read_records
    from hf_longctx.data.passkey import FILLER_SPLIT

    task = TASKS[task_name]
    tokenizer = task.tokenizer()
    data, _ = task.load(tokenizer, 512, 0)  # pass keys in 256 and 512 tokens of filler
    examples = [tokenizer.decode(ids, skip_special_tokens=True) for ids in data["test"]["input_ids"]]
    return examples + [r["text"] for r in read_records() if r["split"] == FILLER_SPLIT]


@pytest.mark.parametrize("task_name", ["kernel-docs", "shakespeare-genre", "wiki-bytes", "passkey"])
def test_no_test_split_text_of_any_shipped_task_is_in_the_pretraining_set(task_name, pretraining_text):
    """No test document is a pretraining document, and no two consecutive lines of test prose are in the
    pretraining text (a leaked document would bring all of its own). kernel-docs (and passkey, whose filler is the
    kernel-docs test split) share a few paragraphs between documents, such as the pinctrl bindings' boilerplate:
    under 2% of their pairs, where a few leaked documents would add their every pair."""
    from hf_longctx.tasks import TASKS

    assert set(TASKS) == {"kernel-docs", "shakespeare-genre", "wiki-bytes", "passkey"}  # a new task: add it here
    documents, train_pairs = pretraining_text
    train_documents = set(documents["train"])
    tests = _test_texts(task_name)
    probes = found = 0
    for text in tests:
        assert text not in train_documents, f"a test document of {task_name} is pretrained on: {text[:200]!r}"
        pairs = _line_pairs(text)
        probes, found = probes + len(pairs), found + len(pairs & train_pairs)
    assert probes >= 100  # the check looked at real text
    # Shared boilerplate: 62 of kernel-docs' 4,983 pairs (1.2%); 5 leaked documents bring it to 4.2%.
    assert found <= (0.02 * probes if task_name in ("kernel-docs", "passkey") else 0), (found, probes)
    # And the check finds what is there: every pair of a training document is found.
    assert _line_pairs(documents["train"][3]) and _line_pairs(documents["train"][3]) <= train_pairs


def test_shipped_corpora_train_split_is_exactly_their_training_splits():
    from hf_longctx.data.kernel_docs import load_kernel_docs

    kernel_only = raw_text.shipped_documents(["kernel-docs"])
    kernel = load_kernel_docs()
    for split in raw_text.SPLITS:
        assert kernel_only[split] == kernel[split]["text"]
    with pytest.raises(ValueError, match="unknown corpus passkey.*kernel-docs test split"):
        raw_text.shipped_documents(["passkey"])


def _write_raw_folder(folder: Path, n: int = 30) -> list[str]:
    from hf_longctx.data.shakespeare import read_records

    texts = [r["text"] for r in read_records() if r["split"] == "train"][:n]
    folder.mkdir(parents=True, exist_ok=True)
    half = n // 2
    for i, text in enumerate(texts[:half]):
        (folder / f"doc{i:02d}.txt").write_text(text)
    with open(folder / "more.jsonl", "w") as f:
        for text in texts[half:]:
            f.write(json.dumps({"text": text, "source": "shakespeare"}) + "\n")
        f.write(json.dumps({"text": texts[0]}) + "\n")  # a duplicate of doc00.txt
        f.write("\n")
    return texts


def test_text_folder_splits_by_hash_whatever_the_file_names(tmp_path):
    texts = _write_raw_folder(tmp_path / "a")
    splits = raw_text.read_text_folder(tmp_path / "a")
    assert sorted(sum(splits.values(), [])) == sorted(texts)  # every document once, the duplicate too
    assert splits["validation"] and splits["test"] and len(splits["train"]) >= 24
    assert not set(splits["test"]) & set(splits["train"])
    # The same documents under other file names (and in other files) split the same way.
    (tmp_path / "b").mkdir()
    for i, text in enumerate(reversed(texts)):
        (tmp_path / "b" / f"z{i}.txt").write_text(text)
    assert raw_text.read_text_folder(tmp_path / "b") == splits


def test_adding_documents_never_moves_training_text_into_validation_or_test(tmp_path):
    """The held-out documents were the top 5% by hash rank, so a growing folder moved earlier training documents
    into test: a checkpoint pretrained before was then scored on text it had trained on (found in review)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(40):
        (folder / f"a{i:03d}.txt").write_text(f"document number {i} " * 20)
    before = raw_text.read_text_folder(folder)
    for i in range(40, 400):
        (folder / f"b{i:03d}.txt").write_text(f"document number {i} " * 20)
    after = raw_text.read_text_folder(folder)
    assert not set(before["train"]) & (set(after["validation"]) | set(after["test"]))
    # 5% each of 400 documents, within sampling error, at a fixed threshold of the hash
    assert 5 <= len(after["validation"]) <= 40 and 5 <= len(after["test"]) <= 40
    for i in range(3, 40):  # fewer documents: each held-out split still gets one, and train keeps one
        small = tmp_path / f"small{i}"
        small.mkdir()
        for j in range(i):
            (small / f"{j}.txt").write_text(f"text {j} of {i}")
        splits = raw_text.read_text_folder(small)
        assert all(splits[name] for name in ("train", "validation", "test")), i
        assert sum(map(len, splits.values())) == i


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "holds no \\*.txt or \\*.jsonl"),
    (lambda d: (d / "x.jsonl").write_text('{"body": "no text key"}\n'), 'x.jsonl:1: no "text" key'),
    (lambda d: (d / "x.jsonl").write_text('{"text": 3}\n'), '"text" must be a string'),
    (lambda d: (d / "x.jsonl").write_text("not json\n"), "x.jsonl:1: not a JSON object"),
    (lambda d: (d / "x.txt").write_bytes(b"\xff\xfe bad"), "x.txt is not UTF-8"),
    (lambda d: (d / "x.txt").write_text("one document"), "1 distinct non-empty document.*at least 3"),
])
def test_text_folder_errors_name_the_problem(tmp_path, setup, message):
    folder = tmp_path / "raw"
    folder.mkdir()
    setup(folder)
    with pytest.raises(raw_text.DataError, match=message):
        raw_text.read_text_folder(folder)


# ------------------------------------------------------------------ training -------------------------------------


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    _write_raw_folder(folder)
    return folder


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory, raw_dir):
    """A tiny Longformer pretrained by masked LM on raw_dir, 4 steps with a checkpoint every 2."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("mlm") / "run"
    every_2 = {**QUIET, "save_strategy": "steps", "save_steps": 2, "save_total_limit": None, "eval_strategy": "no"}
    summary = train("mlm", run, data_dir=raw_dir, max_steps=4, overrides=every_2, **TINY)
    torch.set_num_threads(threads)
    return run, summary, every_2


def test_mlm_reports_masked_accuracy_and_perplexity_and_names_its_data(mlm_run, raw_dir, capsys):
    run, summary, _ = mlm_run
    metrics = {r["metric"]: r["value"] for r in summary["results"]}
    assert {"loss", "masked_accuracy", "perplexity"} <= set(metrics)
    assert 0.0 <= metrics["masked_accuracy"] <= 1.0
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-3)
    # A few steps from random weights over a vocabulary of thousands: far from solved, far from infinite.
    assert 100 < metrics["perplexity"] < 20_000
    assert raw_dir.name in summary["pretraining_data"] and "--task mlm --data-dir" in summary["training"]
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == ["LongctxLongformerForMaskedLM"]
    # `evaluate` scores the saved model on the same fixed masks: the figures of the run itself.
    from hf_longctx.train import evaluate_model

    again = evaluate_model(run / "model", "mlm", data_dir=raw_dir, max_samples=4, batch_size=2, device="cpu")
    assert again["test_masked_accuracy"] == pytest.approx(metrics["masked_accuracy"], abs=1e-4)
    assert again["test_perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-3)
    # ... and so does the command (its --task refused mlm / clm).
    from hf_longctx.__main__ import main

    assert main(["evaluate", str(run / "model"), "--task", "mlm", "--data-dir", str(raw_dir), "--max-samples", "4",
                 "--batch-size", "2", "--device", "cpu"]) == 0
    # --corpora narrows the shipped text, as for train (evaluate had no such flag)
    docs, wiki = (evaluate_model(run / "model", "mlm", corpora=[name], max_samples=2, batch_size=2, device="cpu")
                  for name in ("kernel-docs", "wiki-bytes"))
    assert docs["test_loss"] != wiki["test_loss"]  # other text scored: kernel docs are not Wikipedia
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--task", "kernel-docs", "--corpora", "wiki-bytes",
                 "--device", "cpu"]) == 1
    assert "--corpora chooses the text and tokenizer of pretraining" in capsys.readouterr().err


def test_mlm_resume_continues_to_the_weights_of_an_uninterrupted_run(mlm_run, raw_dir, tmp_path, one_thread):
    run, _, every_2 = mlm_run
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-4")
    shutil.rmtree(cut / "model")
    summary = train("mlm", cut, data_dir=raw_dir, max_steps=4, overrides=every_2, resume=True, **TINY)
    assert summary["resumed_from"].endswith("checkpoint-2")
    expected, resumed = load_file(str(run / "model" / "model.safetensors")), load_file(
        str(cut / "model" / "model.safetensors"))
    at_2 = load_file(str(run / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    for name in expected:  # the same masks were drawn after the resume (Trainer restores the RNG)
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-6, atol=1e-7, msg=name)
    assert any(not torch.equal(at_2[name], expected[name]) for name in expected)


def test_mlm_export_card_names_the_pretraining_data_and_metrics(mlm_run, raw_dir, tmp_path):
    from hf_longctx.export import export_model

    run, _, _ = mlm_run
    card = (export_model(run / "model", tmp_path / "hub") / "README.md").read_text()
    assert "fill-mask" in card and "masked_accuracy" in card and "perplexity" in card
    assert f"raw text in `{raw_dir.name}`" in card


def test_chain_mlm_to_classifier_uses_the_checkpoints_tokenizer_and_weights(mlm_run, tmp_path, one_thread,
                                                                             monkeypatch):
    """`train --data-dir D --init-from M` used to train a fresh BPE on D: other ids for the same text than the ones
    M was pretrained with. Here M is also named as a shipped checkpoint."""
    from transformers import AutoTokenizer

    import hf_longctx.pretrained as pretrained
    from hf_longctx.data.tokenizers import train_bpe

    run, _, _ = mlm_run
    shipped = tmp_path / "pretrained"
    shutil.copytree(run / "model", shipped / "tiny-mlm")
    (shipped / "not-a-model").mkdir()
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    assert list(pretrained.available()) == ["tiny-mlm"]

    from hf_longctx.data.shakespeare import read_records

    records = read_records()
    folder = tmp_path / "genre"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        rows = [r for label in ("comedy", "tragedy") for r in records if r["split"] == split and r["label"] == label]
        rows = rows[:3] + rows[-3:]  # both labels
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                                                       for r in rows))
    out = tmp_path / "cls"
    summary = train(None, out, data_dir=folder, init_from="tiny-mlm", max_steps=1, max_length=128, batch_size=2,
                    learning_rate=0.0, max_train_samples=4, max_eval_samples=4, device="cpu", log=lambda m: None,
                    overrides={**QUIET, "eval_strategy": "no"})
    mlm_vocab = AutoTokenizer.from_pretrained(run / "model").get_vocab()
    assert AutoTokenizer.from_pretrained(out / "model").get_vocab() == mlm_vocab
    folder_text = [json.loads(line)["text"] for line in (folder / "train.jsonl").read_text().splitlines()]
    assert train_bpe(folder_text, 8192).get_vocab() != mlm_vocab  # what the run would have used before
    # The encoder is the pretrained one (learning rate 0: nothing moved), the head is new.
    before, after = load_file(str(run / "model" / "model.safetensors")), load_file(
        str(out / "model" / "model.safetensors"))
    shared = [name for name in after if name in before]
    assert any("embeddings" in name for name in shared) and len(shared) > 10
    for name in shared:
        torch.testing.assert_close(after[name], before[name], msg=name)
    assert "Initialised from `tiny-mlm`" in summary["training"] and "--init-from tiny-mlm" in summary["training"]

    with pytest.raises(TrainError, match="no-such-model is not a model folder .*nor the name of a checkpoint "
                                         "shipped.*shipped: tiny-mlm"):
        train(None, tmp_path / "x", data_dir=folder, init_from="no-such-model", **TINY)


def test_chain_from_a_converted_short_model_continues_masked_lm_pretraining(raw_dir, bpe, tmp_path, one_thread):
    """`convert --from-short` -> `train --task mlm --init-from`: the converted RoBERTa's own tokenizer is kept."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    from hf_longctx_cli import main

    torch.manual_seed(0)
    short = RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(bpe), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64 + 2, pad_token_id=1, type_vocab_size=1))
    short.save_pretrained(tmp_path / "short")
    bpe.save_pretrained(tmp_path / "short")
    assert main(["convert", str(tmp_path / "short"), str(tmp_path / "long"), "--from-short", "--max-length", "128",
                 "--attention-window", "32"]) == 0
    summary = train("mlm", tmp_path / "run", data_dir=raw_dir, init_from=tmp_path / "long", max_steps=1,
                    overrides=QUIET, **{**TINY, "preset": "small"})
    assert AutoTokenizer.from_pretrained(tmp_path / "run" / "model").get_vocab() == bpe.get_vocab()
    metrics = {r["metric"]: r["value"] for r in summary["results"]}
    assert 0.0 <= metrics["masked_accuracy"] <= 1.0 and math.isfinite(metrics["perplexity"])


def _pretraining_cases():
    """(task, variant) for every head a variant registers; the Longformer's masked LM has a test of its own below."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from hf_longctx.variants import VARIANTS

    return [(task, v.name) for v in VARIANTS for task, head in (("clm", AutoModelForCausalLM),
                                                                 ("mlm", AutoModelForMaskedLM))
            if head in v.heads and (task, v.name) != ("mlm", "longformer")]


@pytest.mark.parametrize("task, variant", _pretraining_cases())
def test_every_variant_with_the_head_pretrains(task, variant, raw_dir, tmp_path, one_thread):
    summary = train(task, tmp_path / "run", data_dir=raw_dir, variant=variant, tokenizer="kernel-docs", max_steps=2,
                    overrides=QUIET, **TINY)
    metrics = {r["metric"]: r["value"] for r in summary["results"]}
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-3)
    if task == "clm":
        # Bits per byte: the loss over every predicted token spread over their bytes; BPE tokens hold ~3 bytes of
        # this text, so an untrained model over 8k ids is near log2(8192) / 3 ~ 4 and certainly within (1, 13).
        assert 1.0 < metrics["bits_per_byte"] < metrics["loss"] / math.log(2)
        assert [r["metric"] for r in summary["results"]].count("bits_per_byte") == 1
        from hf_longctx.train import evaluate_model

        again = evaluate_model(tmp_path / "run" / "model", "clm", data_dir=raw_dir, max_samples=4, batch_size=2,
                               device="cpu")
        assert again["test_bits_per_byte"] == pytest.approx(metrics["bits_per_byte"], rel=1e-3)
    else:
        assert 0.0 <= metrics["masked_accuracy"] <= 1.0
    from transformers import AutoModelForMaskedLM

    from hf_longctx.variants import BY_NAME

    if AutoModelForMaskedLM not in BY_NAME[variant].heads:  # and a checkpoint without the head is refused by name
        with pytest.raises(TrainError, match=f"--init-from .*model: a {variant} model has no MaskedLM head"):
            train("mlm", tmp_path / "mlm", data_dir=raw_dir, init_from=tmp_path / "run" / "model", max_length=128,
                  device="cpu", log=lambda m: None)


def test_shipped_corpora_mlm_for_the_longformer_at_1024_tokens(tmp_path, one_thread):
    summary = train("mlm", tmp_path / "run", corpora=["shakespeare-genre", "wiki-bytes"], tokenizer="shakespeare-genre",
                    max_steps=1, overrides=QUIET, **{**TINY, "max_length": 1024, "max_train_samples": 2,
                                                      "max_eval_samples": 2})
    metrics = {r["metric"]: r["value"] for r in summary["results"]}
    assert {"masked_accuracy", "perplexity"} <= set(metrics)
    assert {r["dataset"] for r in summary["results"]} == {"shakespeare-genre+wiki-bytes"}
    assert "--corpora shakespeare-genre wiki-bytes" in summary["training"]
    assert "no validation or test text" in summary["pretraining_data"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(task_name="mlm", variant="transfo-xl"),
     "--variant transfo-xl: a transfo-xl model has no MaskedLM head \\(its heads: CausalLM, "
     "SequenceClassification\\); task mlm needs one: use longformer or reformer"),
    (dict(task_name="mlm", tokenizer="bytes"), "needs a tokenizer with a mask token"),
    (dict(task_name="mlm", tokenizer="nowhere"), "--tokenizer nowhere: neither"),
    (dict(task_name="kernel-docs", tokenizer="bytes", data_dir=None), "--tokenizer chooses.*--task mlm or clm"),
    (dict(task_name="kernel-docs", corpora=["wiki-bytes"], data_dir=None), "--corpora chooses"),
    (dict(task_name="clm", corpora=["wiki-bytes"]), "--corpora names shipped text and --data-dir your own"),
])
def test_bad_pretraining_arguments_are_refused_by_name(kwargs, message, raw_dir, tmp_path):
    kwargs = {"data_dir": raw_dir, **kwargs}
    with pytest.raises(TrainError, match=message):
        train(output_dir=tmp_path / "run", **kwargs, **TINY)
    assert not (tmp_path / "run").exists()


def test_the_cli_takes_the_pretraining_flags():
    from hf_longctx_cli import build_parser

    args = build_parser().parse_args(["train", "--task", "mlm", "--corpora", "kernel-docs", "wiki-bytes",
                                      "--tokenizer", "shakespeare-genre", "--output-dir", "x"])
    assert (args.task, args.corpora, args.tokenizer) == ("mlm", ["kernel-docs", "wiki-bytes"], "shakespeare-genre")


def test_setup_cfg_installs_a_shipped_checkpoint_folder():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["hf_longctx"].split(",")]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "PROVENANCE.md",
                 "modeling_longformer.py"):
        assert any(fnmatch.fnmatch(f"pretrained/tiny-mlm/{name}", p) for p in patterns), name
    assert (ROOT / "src" / "hf_longctx" / "pretrained" / "__init__.py").is_file()  # a package: find: includes it


def test_reformer_resume_draws_what_the_uninterrupted_run_drew(raw_dir, tmp_path, one_thread):
    """The Reformer draws LSH rotations and dropout from a private generator (never the global RNG, which Trainer
    restores): train saves that generator into each checkpoint and restores it on --resume, so the resumed run ends
    at the uninterrupted run's weights. Without the saved state it would draw again from the start: checked below
    by deleting the file, which must change the result."""
    every_2 = {**QUIET, "save_strategy": "steps", "save_steps": 2, "save_total_limit": None, "eval_strategy": "no"}
    settings = dict(TINY, variant="reformer", dropout=0.1, max_steps=4, overrides=every_2)
    run = tmp_path / "full"
    train("clm", run, data_dir=raw_dir, **settings)
    assert (run / "checkpoints" / "checkpoint-2" / PRIVATE_RNG_FILE).is_file()
    expected = load_file(str(run / "model" / "model.safetensors"))

    def resumed(name: str, keep_state: bool) -> tuple[dict, list[str]]:
        cut = tmp_path / name
        shutil.copytree(run, cut)
        shutil.rmtree(cut / "checkpoints" / "checkpoint-4")
        shutil.rmtree(cut / "model")
        if not keep_state:
            (cut / "checkpoints" / "checkpoint-2" / PRIVATE_RNG_FILE).unlink()
        said = []
        summary = train("clm", cut, data_dir=raw_dir, resume=True, **dict(settings, log=said.append))
        assert summary["resumed_from"].endswith("checkpoint-2")
        return load_file(str(cut / "model" / "model.safetensors")), said

    exact, said = resumed("cut", keep_state=True)
    for name in expected:
        torch.testing.assert_close(exact[name], expected[name], rtol=1e-6, atol=1e-7, msg=name)
    assert not any("private generator" in line for line in said)
    restarted, said = resumed("cut_without_state", keep_state=False)
    assert any(not torch.allclose(restarted[name], expected[name], rtol=1e-6, atol=1e-7) for name in expected)
    assert any(f"holds no {PRIVATE_RNG_FILE}" in line for line in said)  # an inexact resume says so
    # A damaged state file is refused by name, not with a pickling traceback.
    cut = tmp_path / "damaged"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-4")
    shutil.rmtree(cut / "model")
    (cut / "checkpoints" / "checkpoint-2" / PRIVATE_RNG_FILE).write_bytes(b"not a torch file")
    with pytest.raises(TrainError, match="cannot restore the private generator"):
        train("clm", cut, data_dir=raw_dir, resume=True, **settings)


def test_train_seeds_the_private_generator_from_its_seed():
    """The callback seeds every owner of a private generator from train's --seed when training begins (other seeds:
    other LSH rotations and dropout masks), and adds nothing for models without one."""
    from hf_longctx import LongctxLongformerConfig, LongctxLongformerModel, LongctxReformerConfig, LongctxReformerModel
    from hf_longctx.train import _private_rng_callbacks

    config = LongctxReformerConfig(vocab_size=32, hidden_size=16, num_attention_heads=2, attention_head_size=8,
                                   attn_layers=["lsh"], axial_pos_embds=False, max_position_embeddings=64)
    model, reference = LongctxReformerModel(config), LongctxReformerModel(config)
    (callback,) = _private_rng_callbacks(model, 7, None, log=lambda m: None)
    callback.on_train_begin(None, None, None)
    reference.seed_private_rng(7)
    assert torch.equal(model.private_rng_state(), reference.private_rng_state())
    reference.seed_private_rng(8)
    assert not torch.equal(model.private_rng_state(), reference.private_rng_state())
    longformer = LongctxLongformerModel(LongctxLongformerConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                                                num_attention_heads=2, intermediate_size=32,
                                                                attention_window=4, max_position_embeddings=34))
    assert _private_rng_callbacks(longformer, 7, None) == []


def test_reformer_private_generator_follows_the_seed_and_leaves_the_global_rng_alone():
    from hf_longctx import LongctxReformerConfig, LongctxReformerModel

    config = LongctxReformerConfig(vocab_size=32, hidden_size=16, num_attention_heads=2, attention_head_size=8,
                                   attn_layers=["lsh"], axial_pos_embds=False, max_position_embeddings=64,
                                   lsh_attn_chunk_length=8, num_buckets=4, feed_forward_size=32)
    model = LongctxReformerModel(config).train()
    ids = torch.randint(0, 32, (1, 32), generator=torch.Generator().manual_seed(0))

    def draws(seed):
        model.seed_private_rng(seed)
        return [model(ids).last_hidden_state for _ in range(2)]

    global_state = torch.get_rng_state()
    a, again, other = draws(1), draws(1), draws(2)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1])  # the same seed: the same rotations
    assert not torch.equal(a[0], a[1])  # redrawn every forward
    assert not torch.equal(a[0], other[0])  # another seed: other rotations
    model.seed_private_rng(1)
    model(ids)
    state = model.private_rng_state()
    second = model(ids).last_hidden_state
    model.set_private_rng_state(state)
    assert torch.equal(model(ids).last_hidden_state, second)
    with pytest.raises(ValueError, match="seed must be an integer"):
        model.seed_private_rng("1")
    with pytest.raises(ValueError, match="uint8 tensor"):
        model.set_private_rng_state(torch.zeros(3))
    with pytest.raises(ValueError, match="uint8 tensor of shape"):
        model.set_private_rng_state(torch.zeros(3, dtype=torch.uint8))


def test_resume_notices_an_edited_raw_text_folder(raw_dir, tmp_path):
    import hashlib

    from hf_longctx.train import folder_sha256

    copy = tmp_path / "raw"
    shutil.copytree(raw_dir, copy)
    before = folder_sha256(copy, raw=True)
    (copy / "doc03.txt").write_text((copy / "doc03.txt").read_text() + " and one word more")
    assert folder_sha256(copy, raw=True) != before
    # A classification folder's checksum is what it was before raw folders, so older runs still --resume.
    for split in ("train", "validation", "test"):
        (copy / f"{split}.jsonl").write_text(f'{{"text": "{split}", "label": "a"}}\n')
    old = hashlib.sha256(b"".join((copy / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")))
    assert folder_sha256(copy) == old.hexdigest()
