"""Tasks and size presets behind ``hf-longctx train`` / ``evaluate``: data, tokenizer, head and metrics per task.

The shipped tasks are :data:`TASKS`; :func:`folder_task` makes one from a user's ``--data-dir`` folder.

A task turns one of the shipped data sets into tokenized ``train`` / ``validation`` / ``test`` splits for one
kind of head; a preset sizes a variant's config. Both are model-agnostic where they can be: a new variant adds
one entry to :data:`VARIANTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .data import long_docs


@dataclass(frozen=True)
class Task:
    name: str
    head: str  # the Auto class name of the head it trains
    description: str
    load: Callable[..., tuple]  # (tokenizer, max_length, seed) -> (tokenized DatasetDict, label names or None)
    tokenizer: Callable[[], object]
    metrics: tuple[str, ...]


def _classification(load_raw):
    def load(tokenizer, max_length: int, seed: int):
        raw = load_raw()

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
                       _wiki_bytes, _bytes, ("bits_per_byte",)),
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


def resolve_task(name: str | None, data_dir=None, label_names: list[str] | None = None) -> Task:
    """The shipped task ``name``, or the folder task of ``data_dir``; ``ValueError`` says what is wrong."""
    if data_dir is not None:
        if name not in (None, FOLDER_TASK):
            raise ValueError(f"--data-dir is a {FOLDER_TASK} folder; it does not go with --task {name}")
        return folder_task(data_dir, label_names)
    if name is None:
        raise ValueError(f"pass --task (one of {', '.join(TASKS)}) or --data-dir with your own documents")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}, or --data-dir")
    return TASKS[name]


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
    ``(ceil(max_length / chunk), chunk)``, so any length up to ``max_length`` trains."""
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
        lsh_attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra,
    )


VARIANTS = {"longformer": longformer_config, "transfo-xl": transfo_xl_config, "reformer": reformer_config}


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
    return None  # language modelling reports eval_loss; bits per byte is derived from it
