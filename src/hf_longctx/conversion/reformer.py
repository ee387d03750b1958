"""Turn a transformers Reformer checkpoint (any head) into an hf_longctx Reformer folder.

Our weight names are transformers' own, so this maps the config, checks that every weight has a home and saves
with our ``save_pretrained`` (remote code + ``auto_map`` for every head). One weight is dropped:
``lm_head.bias``, which transformers' forward never reads (its LM head adds ``lm_head.decoder.bias``,
``ReformerOnlyLMHead.forward``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import (
    LongctxReformerConfig,
    LongctxReformerForCausalLM,
    LongctxReformerForMaskedLM,
    LongctxReformerForQuestionAnswering,
    LongctxReformerForSequenceClassification,
    LongctxReformerModel,
)
from .common import build_exact, check_paths, load_weights, read_config, save_converted

logger = logging.getLogger(__name__)

# transformers architecture -> our head
HEADS = {
    "ReformerModel": LongctxReformerModel,
    "ReformerModelWithLMHead": LongctxReformerForCausalLM,
    "ReformerForMaskedLM": LongctxReformerForMaskedLM,
    "ReformerForSequenceClassification": LongctxReformerForSequenceClassification,
    "ReformerForQuestionAnswering": LongctxReformerForQuestionAnswering,
}

# Fields that mean the same in transformers' ReformerConfig and ours (num_hidden_layers is len(attn_layers)).
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_attention_heads", "attention_head_size", "attn_layers", "num_hashes",
    "num_buckets", "lsh_attn_chunk_length", "lsh_num_chunks_before", "lsh_num_chunks_after",
    "local_attn_chunk_length", "local_num_chunks_before", "local_num_chunks_after", "is_decoder", "axial_pos_embds",
    "axial_pos_shape", "axial_pos_embds_dim", "axial_norm_std", "max_position_embeddings", "feed_forward_size",
    "hidden_act", "hidden_dropout_prob", "local_attention_probs_dropout_prob", "lsh_attention_probs_dropout_prob",
    "classifier_dropout", "initializer_range", "layer_norm_eps", "chunk_size_feed_forward", "pad_token_id",
    "bos_token_id", "eos_token_id", "id2label", "label2id", "problem_type", "tie_word_embeddings",
)
_UNUSED = {"lm_head.bias"}


def config_from_transformers(raw: dict) -> LongctxReformerConfig:
    """Our config for a transformers ``ReformerConfig`` dict. ``hash_seed: null`` becomes 0 (ours is always
    seeded, so eval is deterministic); an explicit seed is kept, so both give the same eval outputs."""
    fields = {k: raw[k] for k in _SHARED_FIELDS if k in raw}
    fields["hash_seed"] = 0 if raw.get("hash_seed") is None else raw["hash_seed"]  # convert() says so
    if fields.get("id2label") is not None:
        fields["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
    return LongctxReformerConfig(**fields)


def convert(src, dst, *, overwrite: bool = False) -> Path:
    """Convert a transformers Reformer folder (``save_pretrained`` of any head) into ``dst``; returns ``dst``.

    The head follows ``architectures`` in ``config.json`` (``ReformerModelWithLMHead`` becomes
    ``LongctxReformerForCausalLM``). Tokenizer files are copied.
    """
    src, dst = check_paths(src, dst, overwrite)
    raw = read_config(src)
    if raw.get("model_type") != "reformer":
        raise ValueError(f"{src} holds a {raw.get('model_type')!r} model, not a transformers Reformer")
    architecture = (raw.get("architectures") or ["ReformerModel"])[0]
    if architecture not in HEADS:
        raise ValueError(f"{src} is a {architecture}; convertible heads: {', '.join(HEADS)}")
    config = config_from_transformers(raw)
    config.architectures = [HEADS[architecture].__name__]
    state = {k: v for k, v in load_weights(src).items() if k not in _UNUSED}
    model = build_exact(HEADS[architecture], config, state)
    if raw.get("hash_seed") is None:  # said once the weights have loaded, so it is not followed by a load error
        logger.warning("the source has hash_seed=None (a new random hashing every call); the converted model uses 0")
    save_converted(model, src, dst, overwrite=overwrite, tokenizer_class="ReformerTokenizer",
                   model_max_length=config.max_input_tokens)
    return dst
