"""Tasks and size presets behind ``hf-longctx train`` / ``evaluate``: data, tokenizer, head and metrics per task.

The shipped tasks are :data:`TASKS`; :func:`folder_task` makes one from a user's ``--data-dir`` folder.

A task turns one of the shipped data sets into tokenized ``train`` / ``validation`` / ``test`` splits for one
kind of head; a preset sizes a variant's config. Both are model-agnostic where they can be: a new variant adds
one builder here, named by its record in :mod:`hf_longctx.variants`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import variants as _variant_table
from .data import long_docs


@dataclass(frozen=True)
class Task:
    name: str
    head: str  # the Auto class name of the head it trains
    description: str
    load: Callable[..., tuple]  # (tokenizer, max_length, seed) -> (tokenized DatasetDict, label names or None)
    tokenizer: Callable[[], object]
    metrics: tuple[str, ...]
    # What the model is trained on, for the model card (pretraining tasks; a shipped task's name says it already).
    source: str = ""
    # Its examples are ids of its own tokenizer, made without calling it (wiki-bytes' bytes + 3): a checkpoint's
    # tokenizer given by --init-from cannot replace it. Every other task tokenizes its text with the one it is given.
    fixed_tokenizer: bool = False


def _classification(load_raw):
    def load(tokenizer, max_length: int, seed: int, limits: dict | None = None):
        raw = load_raw()
        raw = type(raw)(raw)  # a copy to draw from: a --data-dir task hands out the same DatasetDict every call
        for split, n in (limits or {}).items():
            # The draw train.subsample makes (it depends only on the split's length), before tokenizing: a run
            # with --max-train-samples 8 tokenized all 600 kernel documents first (13 of its 16 s).
            if n and split in raw and n < len(raw[split]):
                raw[split] = raw[split].shuffle(seed=0).select(range(n))

        def encode(batch):
            enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
            enc["global_attention_mask"] = [long_docs.global_mask_first_token(len(ids)) for ids in enc["input_ids"]]
            enc["labels"] = batch["label"]
            return enc

        columns = raw["train"].column_names
        return raw.map(encode, batched=True, remove_columns=columns), raw["train"].features["label"].names

    return load


def _kernel_docs():
    from .data.kernel_docs import load_kernel_docs

    return load_kernel_docs()


def _shakespeare():
    from .data import load_demo_dataset

    return load_demo_dataset()


def _wiki_bytes(tokenizer, max_length: int, seed: int):
    from .data.wiki_bytes import load_wiki_bytes

    data = load_wiki_bytes(block_size=max_length)
    return data.map(lambda b: {"labels": b["input_ids"], "attention_mask": [[1] * max_length] * len(b["input_ids"])},
                    batched=True), None


def _passkey(tokenizer, max_length: int, seed: int):
    from datasets import DatasetDict

    from .data.passkey import make_passkey_dataset

    lengths = [n for n in (256, 512, 1024, 2048, 4096, 8192, 16384) if n <= max_length] or [max_length]
    splits = {}
    for offset, (split, n) in enumerate((("train", 64), ("validation", 8), ("test", 16))):
        data = make_passkey_dataset(tokenizer, lengths=lengths, n_per_length=n, seed=seed * 10 + offset,
                                    question_first=True)
        splits[split] = data
    return DatasetDict(splits), None


def _bpe():
    from .data.tokenizers import kernel_docs_bpe

    return kernel_docs_bpe()


def _shakespeare_bpe():
    from .data.tokenizers import shipped_bpe

    return shipped_bpe("shakespeare_genre")


def _bytes():
    from .data.tokenizers import byte_tokenizer

    return byte_tokenizer()


TASKS = {
    "kernel-docs": Task("kernel-docs", "AutoModelForSequenceClassification",
                        "Linux kernel documentation, 6 topics (long-document classification)",
                        _classification(_kernel_docs), _bpe, ("accuracy", "macro_f1")),
    "shakespeare-genre": Task("shakespeare-genre", "AutoModelForSequenceClassification",
                              "genre of ~1,000-word Shakespeare windows, split by work (context matters)",
                              _classification(_shakespeare), _shakespeare_bpe, ("accuracy", "macro_f1")),
    "wiki-bytes": Task("wiki-bytes", "AutoModelForCausalLM",
                       "byte-level language modelling on real Wikipedia XML (enwik8-style), bits per byte",
                       _wiki_bytes, _bytes, ("bits_per_byte",), fixed_tokenizer=True),
    "passkey": Task("passkey", "AutoModelForQuestionAnswering",
                    "find a 5-digit pass key hidden at a random depth of real text (extractive QA)",
                    _passkey, _bpe, ("squad_span",)),
}

FOLDER_TASK = "text-classification"  # the task of a user's --data-dir folder
FOLDER_BPE_VOCAB = 8192  # as the shipped BPEs; train_bpe stops earlier on a folder too small to fill it


def folder_task(data_dir, label_names: list[str] | None = None) -> Task:
    """Long-document classification on a user's folder (see :data:`hf_longctx.data.files.FOLDER_FORMAT`).

    The folder is read (and checked) here, before anything trains. Its tokenizer is a byte-level BPE trained on its
    own ``train.jsonl`` (seconds; saved with the model, so ``evaluate`` reuses it). ``label_names`` fixes the label
    order to a trained model's.
    """
    from .data.files import load_classification_folder

    raw = load_classification_folder(data_dir, label_names)

    def tokenizer():
        from .data.tokenizers import train_bpe

        return train_bpe(raw["train"]["text"], FOLDER_BPE_VOCAB)

    return Task(FOLDER_TASK, "AutoModelForSequenceClassification", f"text classification of the documents in {data_dir}",
                _classification(lambda: raw), tokenizer, ("accuracy", "macro_f1"))


def resolve_task(name: str | None, data_dir=None, label_names: list[str] | None = None, *, corpora=None,
                 tokenizer: str | None = None) -> Task:
    """The shipped task ``name``, the folder task of ``data_dir``, or a pretraining task (``name`` in
    :data:`PRETRAINING_TASKS`, on ``data_dir``'s raw text or the shipped ``corpora``); ``ValueError`` says what is
    wrong."""
    if name in PRETRAINING_TASKS:
        return pretraining_task(name, data_dir=data_dir, corpora=corpora, tokenizer=tokenizer)
    for flag, value in (("--corpora", corpora), ("--tokenizer", tokenizer)):
        if value is not None:
            given = "--data-dir" if name is None else f"--task {name}"
            raise ValueError(f"{flag} chooses the text and tokenizer of pretraining: it goes with --task "
                             f"{' or '.join(PRETRAINING_TASKS)}, not {given}")
    if data_dir is not None:
        if name not in (None, FOLDER_TASK):
            raise ValueError(f"--data-dir is a {FOLDER_TASK} folder; it does not go with --task {name} (pretraining "
                             f"on your own raw text: --task {' or --task '.join(PRETRAINING_TASKS)} --data-dir)")
        return folder_task(data_dir, label_names)
    if name is None:
        raise ValueError(f"pass --task (one of {', '.join([*TASKS, *PRETRAINING_TASKS])}) or --data-dir with your own "
                         "documents")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join([*TASKS, *PRETRAINING_TASKS])}, or "
                         "--data-dir")
    return TASKS[name]


# ------------------------------------------------------------- pretraining ---------------------------------------
# Masked and causal language modelling on raw text: whole documents cut into --max-length pieces
# (hf_longctx.data.raw_text), for `train --task mlm|clm` and as the first step of an --init-from chain.

PRETRAINING_TASKS = {
    "mlm": ("AutoModelForMaskedLM", "masked language modelling (RoBERTa's 15% masking) on raw text: the shipped "
            "corpora's training splits, or --data-dir"),
    "clm": ("AutoModelForCausalLM", "causal language modelling on raw text: the shipped corpora's training splits, "
            "or --data-dir"),
}
MLM_PROBABILITY = 0.15  # BERT's and RoBERTa's
EVAL_MASK_SEED = 0  # validation and test pieces are masked once with this seed: every run is scored on the same masks
PRETRAINING_TOKENIZERS = ("kernel-docs", "shakespeare-genre", "bytes")  # --tokenizer names; else a folder


def pretraining_tokenizer(choice: str | None, train_documents: list[str]):
    """The tokenizer of ``--tokenizer choice``: a shipped BPE (kernel-docs, shakespeare-genre), ``bytes``
    (ByT5's, 259 ids), a folder holding a saved tokenizer, or (``None``) a byte-level BPE of
    :data:`FOLDER_BPE_VOCAB` ids trained on ``train_documents`` (deterministic: the same text gives the same
    vocabulary, so ``--resume`` rebuilds the same one)."""
    from .data.tokenizers import byte_tokenizer, shipped_bpe, train_bpe

    if choice is None:
        return train_bpe(train_documents, FOLDER_BPE_VOCAB)
    if choice == "bytes":
        return byte_tokenizer()
    if choice in PRETRAINING_TOKENIZERS:
        return shipped_bpe(choice.replace("-", "_"))
    from pathlib import Path

    from transformers import AutoTokenizer

    if not (Path(choice) / "tokenizer_config.json").is_file():
        raise ValueError(f"--tokenizer {choice}: neither one of {', '.join(PRETRAINING_TOKENIZERS)} nor a folder "
                         "with a saved tokenizer (tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(choice)


def pretraining_task(name: str, *, data_dir=None, corpora=None, tokenizer: str | None = None) -> Task:
    """Masked (``"mlm"``) or causal (``"clm"``) language modelling on the raw text of ``data_dir``
    (:data:`hf_longctx.data.raw_text.TEXT_FOLDER_FORMAT`) or of the shipped ``corpora`` (default: all of
    :data:`hf_longctx.data.raw_text.CORPORA`, their training splits for training, their validation and test splits
    for evaluation). The documents are read (and checked) here; tokenizing waits for ``load``."""
    from .data import raw_text

    head, description = PRETRAINING_TASKS[name]
    if data_dir is not None:
        if corpora is not None:
            raise ValueError("--corpora names shipped text and --data-dir your own: pass one of them")
        documents = raw_text.read_text_folder(data_dir)
        from pathlib import Path

        source = f"the raw text in `{Path(data_dir).resolve().name}` ({len(documents['train'])} training documents)"
    else:
        documents = raw_text.shipped_documents(corpora)
        names = list(dict.fromkeys(corpora or raw_text.CORPORA))
        source = (f"the training splits of the shipped corpora {', '.join(names)} ({len(documents['train'])} "
                  "documents; no validation or test text of any shipped task)")
    if tokenizer is not None:  # checked here, before the run: building it may take a while
        from pathlib import Path

        if not isinstance(tokenizer, str) or (tokenizer not in PRETRAINING_TOKENIZERS
                                              and not (Path(tokenizer) / "tokenizer_config.json").is_file()):
            raise ValueError(f"--tokenizer {tokenizer}: neither one of {', '.join(PRETRAINING_TOKENIZERS)} nor a "
                             "folder with a saved tokenizer (tokenizer_config.json)")
        if name == "mlm" and tokenizer == "bytes":
            raise ValueError("masked language modelling needs a tokenizer with a mask token; --tokenizer bytes has "
                             "none (leave --tokenizer out, or name a BPE)")

    def load(tok, max_length: int, seed: int, limits: dict | None = None):
        return _pretraining_splits(name, documents, tok, max_length, seed, limits or {}), None

    metrics = ("masked_accuracy", "perplexity") if name == "mlm" else ("perplexity", "bits_per_byte")
    return Task(name, head, description, load, lambda: pretraining_tokenizer(tokenizer, documents["train"]), metrics,
                source=source)


def check_pretraining_tokenizer(task: Task, tokenizer) -> None:
    """Masked LM needs a ``<mask>`` token; ByT5's byte tokenizer has none."""
    if task.name == "mlm" and tokenizer.mask_token_id is None:
        raise ValueError(f"masked language modelling needs a tokenizer with a mask token; {type(tokenizer).__name__} "
                         "has none (use a BPE: leave --tokenizer out, or name a shipped one)")


def _pretraining_splits(name, documents, tokenizer, max_length, seed, limits):
    import torch
    from datasets import Dataset, DatasetDict

    from .collator import mask_tokens
    from .data import raw_text

    splits = {}
    for split in raw_text.SPLITS:
        # The evaluation draw does not follow the run's seed: runs of several seeds are scored on the same pieces.
        pieces = raw_text.chunk_documents(documents[split], tokenizer, max_length, limit=limits.get(split),
                                          seed=seed if split == "train" else 0, end_token=name == "clm")
        if not pieces:
            raise ValueError(f"the {split} documents give no piece of text at --max-length {max_length}")
        columns = {"input_ids": pieces}
        if name == "mlm":
            columns["global_attention_mask"] = [long_docs.global_mask_first_token(len(p)) for p in pieces]
            if split != "train":  # masked once, reproducibly; training pieces are masked afresh in every batch
                generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
                special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
                ids = torch.arange(len(tokenizer))
                replaceable = ids[~torch.isin(ids, special)]
                masked, labels = [], []
                for piece in pieces:
                    piece = torch.tensor(piece)
                    inputs, target = mask_tokens(
                        piece, mask_token_id=tokenizer.mask_token_id, maskable=~torch.isin(piece, special),
                        vocab_size=len(tokenizer), replaceable=replaceable, mlm_probability=MLM_PROBABILITY,
                        generator=generator)
                    masked.append(inputs.tolist())
                    labels.append(target.tolist())
                columns["input_ids"], columns["labels"] = masked, labels
        else:
            columns["labels"] = pieces  # the model shifts them: token t + 1 is predicted from tokens <= t
            # For bits per byte: every token but the first is predicted, and the text they spell has n_bytes
            # UTF-8 bytes (special tokens spell none). Trainer drops both columns before the model sees a batch.
            columns["n_predicted"] = [len(p) - 1 for p in pieces]
            columns["n_bytes"] = [len(tokenizer.decode(p[1:], skip_special_tokens=True).encode("utf-8"))
                                  for p in pieces]
        splits[split] = Dataset.from_dict(columns)
    return DatasetDict(splits)


def language_model_metrics(task: Task, metrics: dict, data, prefix: str) -> dict:
    """``metrics`` of ``trainer.evaluate(data, metric_key_prefix=prefix)`` with what a pretraining task derives
    from the mean loss: perplexity (of the masked tokens for MLM), and bits per byte for CLM (the loss summed over
    every predicted token, spread over the UTF-8 bytes of their text: comparable across tokenizers). Trainer's loss
    is a mean over batches of per-batch means, so with pieces of unequal length both are close approximations."""
    import math

    loss = metrics.get(f"{prefix}_loss")
    if task.name not in PRETRAINING_TASKS or loss is None:
        return metrics
    out = dict(metrics)
    out[f"{prefix}_perplexity"] = math.exp(min(loss, 700.0))  # exp overflows past ~709
    if task.name == "clm":
        from .data.wiki_bytes import bits_per_byte

        out[f"{prefix}_bits_per_byte"] = bits_per_byte(loss, sum(data["n_predicted"]), sum(data["n_bytes"]))
    return out


# Size presets: the fields every variant's config shares. A variant maps them onto its own config.
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, window=64),
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, window=256),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, window=512),
}


def longformer_config(preset: dict, tokenizer, max_length: int, task: Task, labels, dropout: float):
    from . import LongctxLongformerConfig

    causal = task.head == "AutoModelForCausalLM"
    pad = tokenizer.pad_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    extra = {}
    if labels is not None:
        extra = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                     label2id={n: i for i, n in enumerate(labels)})
    return LongctxLongformerConfig(
        vocab_size=len(tokenizer), hidden_size=preset["hidden_size"],
        num_hidden_layers=preset["num_hidden_layers"], num_attention_heads=preset["num_attention_heads"],
        intermediate_size=preset["intermediate_size"], attention_window=preset["window"],
        max_position_embeddings=max_length + pad + 1, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, sep_token_id=sep, causal=causal,
        num_sink_tokens=4 if causal else 0, **extra,
    )


def transfo_xl_config(preset: dict, tokenizer, max_length: int, task: Task, labels, dropout: float):
    """Transformer-XL of the preset's size: segments and memories of ``window`` tokens (at most ``max_length``); a
    longer input (a whole kernel-docs document) is read segment by segment inside ``forward``."""
    from . import LongctxTransfoXLConfig

    extra = {}
    if labels is not None:
        extra = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                     label2id={n: i for i, n in enumerate(labels)})
    segment = min(preset["window"], max_length)
    return LongctxTransfoXLConfig(
        vocab_size=len(tokenizer), d_model=preset["hidden_size"], n_head=preset["num_attention_heads"],
        d_head=preset["hidden_size"] // preset["num_attention_heads"], d_inner=preset["intermediate_size"],
        n_layer=preset["num_hidden_layers"], segment_length=segment, mem_len=segment, dropout=dropout,
        dropatt=dropout, max_input_length=max_length, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


def reformer_config(preset: dict, tokenizer, max_length: int, task: Task, labels, dropout: float):
    """Reformer of the preset's size: local and LSH layers alternating (local first), chunks of half the preset's
    window (at most 64, transformers' default), 2 hashes, automatic bucket counts, and axial positions of shape
    ``(ceil(max_length / chunk), chunk)``, so any length up to ``max_length`` trains.

    The axial tables start at the word embeddings' scale (``axial_norm_std`` = ``initializer_range``, 0.02), not
    at transformers' 1.0: with 1.0 the positions swamp the tokens (std 1 against 0.02) and a causal Reformer
    trained from scratch learned nothing in 200 steps (benchmarks/reformer_efficacy.py: 5.08 bits per byte with 1
    and with 4 hashes, against 3.88 / 3.92 with 0.02; results/reformer_efficacy_axial_init.md)."""
    import math

    from . import LongctxReformerConfig

    extra = {}
    if labels is not None:
        extra = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                     label2id={n: i for i, n in enumerate(labels)})
    hidden, heads = preset["hidden_size"], preset["num_attention_heads"]
    chunk = max(1, min(64, preset["window"] // 2, max_length))
    axial = [math.ceil(max_length / chunk), chunk]
    return LongctxReformerConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_attention_heads=heads, attention_head_size=hidden // heads,
        attn_layers=[("local", "lsh")[i % 2] for i in range(preset["num_hidden_layers"])],
        feed_forward_size=preset["intermediate_size"], num_hashes=2, num_buckets=None, lsh_attn_chunk_length=chunk,
        local_attn_chunk_length=chunk, axial_pos_shape=axial, axial_pos_embds_dim=[hidden // 4, hidden - hidden // 4],
        max_position_embeddings=math.prod(axial), is_decoder=task.head == "AutoModelForCausalLM",
        hidden_dropout_prob=dropout, local_attention_probs_dropout_prob=dropout,
        lsh_attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id, axial_norm_std=0.02,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


# --variant name -> the builder above that sizes its config (each record of hf_longctx.variants names its own).
VARIANTS = {v.name: globals()[v.preset] for v in _variant_table.VARIANTS}


def compute_metrics_for(task: Task):
    """A ``Trainer`` ``compute_metrics`` for ``task``, through the shipped ``evaluate`` modules."""
    from . import metrics

    if task.head == "AutoModelForSequenceClassification":
        accuracy, macro_f1 = metrics.load("accuracy"), metrics.load("macro_f1")

        def compute(pred):
            predicted = np.argmax(pred.predictions, -1)
            out = accuracy.compute(predictions=predicted, references=pred.label_ids)
            out["macro_f1"] = macro_f1.compute(predictions=predicted, references=pred.label_ids)["macro_f1"]
            return out

        return compute
    if task.head == "AutoModelForQuestionAnswering":

        def compute(pred):
            start_logits, end_logits = pred.predictions[:2]
            starts, ends = pred.label_ids
            hit_start = np.argmax(start_logits, -1) == np.asarray(starts)
            hit_end = np.argmax(end_logits, -1) == np.asarray(ends)
            return {"exact_span": float((hit_start & hit_end).mean()), "start_accuracy": float(hit_start.mean())}

        return compute
    if task.head == "AutoModelForMaskedLM":

        def compute(pred):
            labels = np.asarray(pred.label_ids)
            scored = labels != -100
            hits = (np.asarray(pred.predictions) == labels) & scored
            return {"masked_accuracy": float(hits.sum() / max(scored.sum(), 1))}

        return compute
    return None  # language modelling reports eval_loss; bits per byte is derived from it


def logits_for_metrics(task: Task):
    """Trainer's ``preprocess_logits_for_metrics`` for ``task``: a masked LM's predicted ids instead of its logits
    (evaluation would otherwise gather pieces x length x vocabulary floats: 8 GB for 256 pieces of 1,024 tokens)."""
    if task.head != "AutoModelForMaskedLM":
        return None

    def argmax(logits, labels):
        return logits.argmax(-1)

    return argmax
