"""Turn transformers Longformer, RoBERTa and BERT checkpoints into hf_longctx Longformer folders.

Two conversions, both from a local folder written by ``save_pretrained``:

* :func:`convert_longformer`: a transformers Longformer (any head). Our weight names are transformers' own, so
  this rewrites the config, checks that every weight has a home, and saves with our ``save_pretrained`` (remote
  code + ``auto_map`` for every head).
* :func:`convert_from_short`: the Longformer paper's warm start (Beltagy et al. 2020, section 5, "Position
  embeddings ... we initialize them by copying the 512 position embeddings from RoBERTa multiple times"): a
  RoBERTa or BERT becomes a Longformer whose position table is the old one repeated out to the new length and
  whose global projections start as copies of the local ones.

Both build the whole model in memory first and then write it with :func:`.common.save_converted` (a temporary
sibling renamed into place), so a failed or interrupted run never leaves a half-written ``dst``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from .. import (
    LongctxLongformerConfig,
    LongctxLongformerForMaskedLM,
    LongctxLongformerForMultipleChoice,
    LongctxLongformerForQuestionAnswering,
    LongctxLongformerForSequenceClassification,
    LongctxLongformerForTokenClassification,
    LongctxLongformerModel,
)
from .common import TOKENIZER_FILES, build_exact, check_paths, load_weights, read_config, save_converted

logger = logging.getLogger(__name__)

# Architecture suffix (after the family name: `LongformerForMaskedLM` -> `ForMaskedLM`) -> our head.
HEADS = {
    "Model": LongctxLongformerModel,
    "ForMaskedLM": LongctxLongformerForMaskedLM,
    "ForSequenceClassification": LongctxLongformerForSequenceClassification,
    "ForTokenClassification": LongctxLongformerForTokenClassification,
    "ForQuestionAnswering": LongctxLongformerForQuestionAnswering,
    "ForMultipleChoice": LongctxLongformerForMultipleChoice,
}
# model_type -> (architecture family prefix, checkpoint prefix of the encoder weights)
LONG_FAMILIES = {"longformer": ("Longformer", "longformer.")}
SHORT_FAMILIES = {"roberta": ("Roberta", "roberta."), "bert": ("Bert", "bert.")}

# Config fields that mean the same in transformers' Longformer/RoBERTa/BERT configs and ours.
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "type_vocab_size", "initializer_range",
    "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
)
_TOKENIZER_CLASS = {"longformer": "LongformerTokenizer", "roberta": "RobertaTokenizer", "bert": "BertTokenizer"}

# BERT's MLM head is RoBERTa's under other names (transformers models/bert/modeling_bert.py, BertLMPredictionHead).
_BERT_MLM_HEAD = {
    "cls.predictions.transform.dense.": "lm_head.dense.",
    "cls.predictions.transform.LayerNorm.": "lm_head.layer_norm.",
    "cls.predictions.decoder.": "lm_head.decoder.",
    "cls.predictions.bias": "lm_head.bias",
}
# Non-persistent buffers that old checkpoints saved; we compute positions and token types instead.
_BUFFER = re.compile(r"(^|\.)embeddings\.(position_ids|token_type_ids)$")


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def convert_longformer(src, dst, *, overwrite: bool = False) -> Path:
    """Convert a transformers Longformer folder (any head) into an hf_longctx folder; returns ``dst``.

    The head follows ``architectures`` in ``config.json``; the folder then loads with the matching ``AutoModel*``
    class after ``import hf_longctx`` (or with ``trust_remote_code=True`` without it). Tokenizer files are copied.
    Weights of a head or pooler the architecture does not have are dropped with a warning, as transformers'
    ``from_pretrained`` does. Raises ``FileNotFoundError`` (no ``src``), ``FileExistsError`` (``dst`` exists and
    not ``overwrite``) or ``ValueError`` (unsupported model, or weights that do not fit the model: the message
    lists the keys).
    """
    src, dst = check_paths(src, dst, overwrite)
    raw, model_type, head = _read_source(src, LONG_FAMILIES)
    if model_type in SHORT_FAMILIES:
        raise ValueError(
            f"{src} is a short-context {model_type} model: convert it with convert_from_short (--from-short)"
        )
    source_config = _load_source_config(src)
    config = LongctxLongformerConfig(
        **_shared_config(source_config, head),
        attention_window=source_config.attention_window,
        max_position_embeddings=source_config.max_position_embeddings,
        sep_token_id=source_config.sep_token_id,
    )
    state = _rename(load_weights(src), model_type, head)
    model = _build(HEADS[head], config, state)
    save_converted(model, src, dst, overwrite=overwrite, tokenizer_class=_TOKENIZER_CLASS[model_type])
    return dst


def convert_from_short(src, dst, *, max_length: int = 4096, attention_window: int = 512,
                       overwrite: bool = False) -> Path:
    """Warm-start a Longformer from a short-context RoBERTa or BERT folder (Longformer paper, section 5).

    * Position embeddings: the table grows to ``max_length`` real positions (plus RoBERTa's offset:
      ``max_position_embeddings = max_length + pad_token_id + 1``) by copying the learned ones over and over.
      Our model numbers real tokens from ``pad_token_id + 1`` as RoBERTa does; BERT numbers them from 0, so BERT's
      position ``p`` lands at ``pad_token_id + 1 + p``.
    * ``query_global/key_global/value_global`` start as copies of ``query/key/value``.
    * Every layer gets ``attention_window`` (even). While the window covers the whole input
      (``attention_window >= 2 * (seq_len - 1)``) the result computes exactly what the short model computes, with
      or without global tokens; on longer inputs it is the warm start that the paper then pretrains further.

    BERT names are mapped to RoBERTa's (``bert.`` -> ``longformer.``, ``cls.predictions.*`` -> ``lm_head.*``,
    the sequence classifier's ``bert.pooler.dense`` + ``classifier`` -> ``classifier.dense`` + ``out_proj``, which
    computes the same function). Errors as in :func:`convert_longformer`.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    src, dst = check_paths(src, dst, overwrite)
    raw, model_type, head = _read_source(src, SHORT_FAMILIES)
    if model_type in LONG_FAMILIES:
        raise ValueError(f"{src} is already a {model_type} model: convert it without --from-short")
    for flag in ("is_decoder", "add_cross_attention"):
        if raw.get(flag):
            raise ValueError(f"{src} has {flag}=true; only bidirectional encoders can become a Longformer")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{src} uses position_embedding_type={raw['position_embedding_type']!r}; only learned absolute "
            "position embeddings can be copied to a longer table"
        )
    source_config = _load_source_config(src)
    if head == "ForMaskedLM" and model_type == "bert" and source_config.hidden_act != "gelu":
        # RoBERTa's and our MLM head always use gelu; BERT's uses hidden_act (BertPredictionHeadTransform).
        raise ValueError(
            f"{src} is a BERT MLM whose head uses hidden_act={source_config.hidden_act!r}, but the Longformer MLM "
            "head uses gelu: convert the BertModel instead and train a new head"
        )
    pad = source_config.pad_token_id
    if pad is None:
        raise ValueError(f"{src} has no pad_token_id; the Longformer numbers positions from pad_token_id + 1")
    config = LongctxLongformerConfig(
        **_shared_config(source_config, head),
        attention_window=attention_window,
        max_position_embeddings=max_length + pad + 1,
        sep_token_id=_separator_id(src, raw, model_type),
    )
    state = _rename(load_weights(src), model_type, head)
    prefix = "" if head == "Model" else "longformer."
    key = f"{prefix}embeddings.position_embeddings.weight"
    if key in state:  # a missing one is reported by _build
        state[key] = extend_position_embeddings(
            state[key], max_length, pad_token_id=pad, first_position=pad + 1 if model_type == "roberta" else 0
        )
    for i in range(config.num_hidden_layers):
        for name in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                local = f"{prefix}encoder.layer.{i}.attention.self.{name}.{kind}"
                if local in state:  # a missing one is reported by _build
                    state[f"{prefix}encoder.layer.{i}.attention.self.{name}_global.{kind}"] = state[local].clone()
    model = _build(HEADS[head], config, state)
    save_converted(model, src, dst, overwrite=overwrite, tokenizer_class=_TOKENIZER_CLASS[model_type],
                   model_max_length=max_length)
    return dst


def lengthen_longformer(src, dst, *, max_length: int, overwrite: bool = False) -> Path:
    """An hf_longctx Longformer (any head) that reads ``max_length`` tokens, from one that reads fewer.

    The position table grows the way :func:`convert_from_short` grows a RoBERTa's (Longformer paper, section 5):
    the learned positions are copied over and over out to the new length; every other weight is kept. Inputs no
    longer than the old length give exactly the old outputs; longer ones are a warm start to fine-tune from
    (``hf-longctx train --init-from DST --max-length N``). The tokenizer is copied with the new length.
    """
    import hf_longctx

    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
    src, dst = check_paths(src, dst, overwrite)
    raw = read_config(src)  # a config.json that is not JSON is named, not a bare JSONDecodeError
    if raw.get("model_type") != "longctx_longformer":
        raise ValueError(f"{src} holds a {raw.get('model_type')!r} model, not an hf_longctx Longformer")
    config = LongctxLongformerConfig.from_pretrained(src)
    if max_length <= config.max_input_tokens:
        raise ValueError(f"{src} already reads {config.max_input_tokens} tokens; --max-length {max_length} would not "
                         "lengthen it")
    classes = {cls.__name__: cls for cls in hf_longctx.REGISTRY["longctx_longformer"][1].values()}
    name = (raw.get("architectures") or ["LongctxLongformerModel"])[0]
    if name not in classes:
        raise ValueError(f"{src} is a {name}; supported: {', '.join(sorted(classes))}")
    state = load_weights(src)
    key = next((k for k in state if k.endswith("embeddings.position_embeddings.weight")), None)
    if key is None:
        raise ValueError(f"{src} has no position table (embeddings.position_embeddings.weight)")
    pad = config.pad_token_id
    state[key] = extend_position_embeddings(state[key], max_length, pad_token_id=pad, first_position=pad + 1)
    config.max_position_embeddings = max_length + pad + 1
    model = build_exact(classes[name], config, state)
    save_converted(model, src, dst, overwrite=overwrite, model_max_length=max_length)
    return dst


def extend_position_embeddings(table: torch.Tensor, max_length: int, *, pad_token_id: int,
                               first_position: int) -> torch.Tensor:
    """A RoBERTa-style position table for ``max_length`` real tokens, filled by repeating ``table``'s positions.

    ``table`` ``(P, C)`` holds real positions from row ``first_position`` on (``pad_token_id + 1`` for RoBERTa,
    0 for BERT). The result ``(max_length + pad_token_id + 1, C)`` has real position ``p`` at row
    ``pad_token_id + 1 + p``, equal to old real position ``p mod (P - first_position)``. Rows below keep RoBERTa's
    own rows when the old table is RoBERTa-style, else zeros (the padding row is never a real position).
    """
    offset = pad_token_id + 1
    old = table[first_position:]  # (P - first_position, C): the learned real positions
    if old.shape[0] == 0:
        raise ValueError(f"the position table has {table.shape[0]} rows, none after row {first_position}")
    new = table.new_zeros(max_length + offset, table.shape[1])
    if first_position == offset:
        new[:offset] = table[:offset]
    repeats = -(-max_length // old.shape[0])  # ceil
    new[offset:] = old.repeat(repeats, 1)[:max_length]
    return new


# ----------------------------------------------------------------------------------------------------------------
# Reading the source
# ----------------------------------------------------------------------------------------------------------------


def _read_source(src: Path, families: dict) -> tuple[dict, str, str]:
    """Return (raw config.json, model_type, head suffix), or a ValueError saying what is supported."""
    raw = read_config(src)  # a config.json that is not JSON is named, not a bare JSONDecodeError
    model_type = raw.get("model_type")
    known = {**LONG_FAMILIES, **SHORT_FAMILIES}
    if model_type not in known:
        raise ValueError(
            f"{src} holds a model of type {model_type!r}; supported: {sorted(LONG_FAMILIES)} (convert) and "
            f"{sorted(SHORT_FAMILIES)} (--from-short)"
        )
    if model_type not in families:
        return raw, model_type, ""  # the caller names the right conversion
    architectures = raw.get("architectures") or []
    if len(architectures) != 1:
        raise ValueError(f"{src}/config.json must name exactly one architecture to pick the head, got {architectures}")
    family = families[model_type][0]
    match = re.fullmatch(rf"{family}({'|'.join(HEADS)})", architectures[0])
    if match is None:
        raise ValueError(
            f"{src} is a {architectures[0]}; supported heads: {', '.join(family + h for h in HEADS)}"
        )
    return raw, model_type, match.group(1)


def _load_source_config(src: Path):
    from transformers import AutoConfig

    # Through transformers' own class, so that fields an old config.json omits get transformers' defaults
    # (LongformerConfig's layer_norm_eps is 1e-12 and type_vocab_size 2, ours 1e-5 and 1).
    return AutoConfig.from_pretrained(src)


def _shared_config(source_config, head: str) -> dict:
    fields = {name: getattr(source_config, name) for name in _SHARED_FIELDS}
    if head in ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"):
        fields["id2label"] = {int(k): v for k, v in source_config.id2label.items()}
        # transformers 5 may leave label2id unset when only id2label was given
        fields["label2id"] = dict(source_config.label2id or {v: k for k, v in fields["id2label"].items()})
        fields["problem_type"] = source_config.problem_type
    classifier_dropout = getattr(source_config, "classifier_dropout", None)
    if classifier_dropout is not None and classifier_dropout != source_config.hidden_dropout_prob:
        logger.warning(
            "classifier_dropout=%s is dropped: the Longformer heads use hidden_dropout_prob=%s (training only)",
            classifier_dropout, source_config.hidden_dropout_prob,
        )
    return fields


def _separator_id(src: Path, raw: dict, model_type: str) -> int | None:
    """The id the QA / multiple-choice heads look for. BERT configs do not store it; its tokenizer does."""
    if raw.get("sep_token_id") is not None:
        return raw["sep_token_id"]
    if any((src / name).is_file() for name in TOKENIZER_FILES):
        try:
            from transformers import AutoTokenizer

            sep = AutoTokenizer.from_pretrained(src).sep_token_id
            if sep is not None:
                return sep
        except Exception as error:  # an unreadable tokenizer must not stop a weight conversion
            logger.warning("could not read the separator id from the tokenizer in %s: %s", src, error)
    if model_type == "roberta":
        return raw.get("eos_token_id", 2)  # RoBERTa's </s> is both eos and separator
    logger.warning(
        "no sep_token_id found in %s: set config.sep_token_id before using the QA / multiple-choice heads", src
    )
    return None


def _rename(state: dict, model_type: str, head: str) -> dict[str, torch.Tensor]:
    """Checkpoint names -> ours (saved buffers dropped); what does not fit is sorted out by :func:`_build`."""
    prefix = {**LONG_FAMILIES, **SHORT_FAMILIES}[model_type][1]
    ours = "" if head == "Model" else "longformer."
    out = {}
    for key, tensor in state.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        if _BUFFER.search(key):
            continue
        if model_type == "bert" and head == "ForSequenceClassification":
            # BERT classifies pooled = tanh(pooler.dense(h[:, 0])); Longformer's head is out_proj(tanh(dense(h[:, 0])))
            if key.startswith("bert.pooler.dense."):
                out["classifier.dense." + key[len("bert.pooler.dense."):]] = tensor
                continue
            if key.startswith("classifier."):
                out["classifier.out_proj." + key[len("classifier."):]] = tensor
                continue
        if model_type == "bert" and head == "ForMaskedLM":
            mapped = next((new + key[len(old):] for old, new in _BERT_MLM_HEAD.items() if key.startswith(old)), None)
            if mapped is not None:
                out[mapped] = tensor
                continue
        if key.startswith(prefix):
            key = ours + key[len(prefix):]
        elif head == "Model" and key.split(".")[0] in ("embeddings", "encoder", "pooler"):
            pass  # a bare encoder saved without prefix
        out[key] = tensor
    return out


# ----------------------------------------------------------------------------------------------------------------
# Building and saving
# ----------------------------------------------------------------------------------------------------------------


def _build(model_class: type, config: LongctxLongformerConfig, state: dict[str, torch.Tensor]):
    """Our model holding exactly ``state``; a ValueError lists every missing, unexpected or misshapen key.
    A bare encoder taken from a head checkpoint has no pooler; transformers initialises it afresh too."""
    bare = model_class is LongctxLongformerModel
    return build_exact(model_class, config, state, may_start_fresh=lambda key: bare and key.startswith("pooler."),
                       may_drop=_unused_head)


def _unused_head(key: str, model) -> bool:
    """A weight of a head or pooler the target class does not have, as checkpoints often carry (BERT's
    next-sentence head and pooler in an MLM checkpoint, an MLM head saved with a base model); transformers'
    ``from_pretrained`` drops these too. Anything else that does not fit is an error."""
    first, _, rest = key.partition(".")
    if first == "longformer":
        return rest.startswith("pooler.") and model.longformer.pooler is None
    return first in ("lm_head", "cls", "classifier", "qa_outputs") and not hasattr(model, first)


MODEL_TYPES = tuple(LONG_FAMILIES)
SHORT_MODEL_TYPES = tuple(SHORT_FAMILIES)


def convert(src, dst, *, overwrite: bool = False) -> Path:
    """The family entry point ``hf_longctx.convert`` calls for a Longformer source."""
    return convert_longformer(src, dst, overwrite=overwrite)


__all__ = ["convert", "convert_longformer", "convert_from_short", "extend_position_embeddings", "lengthen_longformer"]
