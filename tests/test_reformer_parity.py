"""Parity with transformers' own Reformer: tiny random models of the google/reformer-crime-and-punishment and
google/reformer-enwik8 layouts, saved by transformers, converted by hf_longctx.conversion.reformer.convert, and
compared in eval with the same hash seed (logits and every hidden state within 1e-5)."""

import pytest
import torch
from transformers import (
    ReformerConfig,
    ReformerForMaskedLM,
    ReformerForQuestionAnswering,
    ReformerForSequenceClassification,
    ReformerModel,
    ReformerModelWithLMHead,
)

import hf_longctx  # noqa: F401
from hf_longctx.conversion.reformer import convert

# crime-and-punishment scaled down: local/LSH alternating, factorized buckets, 1 hash, one chunk length, axial.
CRIME = dict(
    attn_layers=["local", "lsh", "local", "lsh"], hidden_size=32, num_attention_heads=2, attention_head_size=16,
    num_buckets=[2, 4], num_hashes=1, lsh_attn_chunk_length=8, local_attn_chunk_length=8, axial_pos_shape=[8, 16],
    axial_pos_embds_dim=[8, 24], max_position_embeddings=128, feed_forward_size=64, vocab_size=60, is_decoder=True,
    hash_seed=7, hidden_act="relu", axial_norm_std=1.0,
)
# enwik8 scaled down: mostly local layers, 4 hashes, LSH chunks twice the local ones, gelu.
ENWIK8 = dict(
    attn_layers=["local", "lsh", "local", "lsh", "local"], hidden_size=32, num_attention_heads=2,
    attention_head_size=16, num_buckets=8, num_hashes=4, lsh_attn_chunk_length=8, local_attn_chunk_length=4,
    axial_pos_shape=[8, 16], axial_pos_embds_dim=[16, 16], max_position_embeddings=128, feed_forward_size=64,
    vocab_size=258, is_decoder=True, hash_seed=3, hidden_act="gelu", chunk_size_feed_forward=8,
)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0)


def _convert(tmp_path, model_class, **fields):
    torch.manual_seed(0)
    theirs = model_class(ReformerConfig(**fields, **NO_DROPOUT)).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    ours_dir = convert(tmp_path / "theirs", tmp_path / "ours")
    from transformers import AutoConfig

    ours_class = hf_longctx.conversion.reformer.HEADS[model_class.__name__]
    ours = ours_class.from_pretrained(ours_dir).eval()
    assert AutoConfig.from_pretrained(ours_dir).model_type == "longctx_reformer"
    return ours, theirs


def _ids(B, T, vocab, seed=0):
    return torch.randint(1, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def _close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= 1e-5, f"{what}: max abs difference {err:.2e}"
    return err


@pytest.mark.parametrize("layout", ["crime", "enwik8"])
@pytest.mark.parametrize("T", [64, 37, 6])  # a multiple of every chunk, one transformers pads inside, < a chunk
def test_causal_lm_logits_and_hidden_states_equal_transformers(tmp_path, layout, T):
    fields = CRIME if layout == "crime" else ENWIK8
    ours, theirs = _convert(tmp_path, ReformerModelWithLMHead, **fields)
    ids = _ids(2, T, fields["vocab_size"])
    with torch.no_grad():
        a = ours(input_ids=ids, output_hidden_states=True)
        b = theirs(input_ids=ids, output_hidden_states=True, use_cache=False)
    _close(a.logits, b.logits, "logits")
    assert len(a.hidden_states) == len(b.hidden_states) == len(fields["attn_layers"]) + 1
    for i, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        _close(x, y[:, :T], f"hidden state {i}")  # transformers returns its internal padding in hidden states


def test_causal_lm_with_a_padding_mask_equals_transformers(tmp_path):
    """Right padding of fewer tokens than a chunk (the condition stated in lsh_attention's docstring)."""
    ours, theirs = _convert(tmp_path, ReformerModelWithLMHead, **ENWIK8)
    ids = _ids(2, 40, ENWIK8["vocab_size"], seed=1)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = theirs(input_ids=ids, attention_mask=mask, use_cache=False).logits
    real = mask.bool()
    _close(a[real], b[real], "logits of real tokens")


@pytest.mark.parametrize(
    "model_class,output",
    [(ReformerModel, "last_hidden_state"), (ReformerForMaskedLM, "logits"),
     (ReformerForSequenceClassification, "logits"), (ReformerForQuestionAnswering, "start_logits")],
)
def test_bidirectional_heads_equal_transformers(tmp_path, model_class, output):
    labels = 2 if model_class is ReformerForQuestionAnswering else 3
    fields = {**ENWIK8, "is_decoder": False, "lsh_num_chunks_after": 1, "num_labels": labels}
    ours, theirs = _convert(tmp_path, model_class, **fields)
    ids = _ids(2, 39, fields["vocab_size"], seed=2)  # transformers pads 1 token inside
    with torch.no_grad():
        a = getattr(ours(input_ids=ids), output)
        b = getattr(theirs(input_ids=ids), output)
    _close(a, b, f"{model_class.__name__}.{output}")


def test_eval_is_deterministic_and_the_global_rng_is_untouched(tmp_path):
    ours, _ = _convert(tmp_path, ReformerModelWithLMHead, **CRIME)
    ids = _ids(1, 64, CRIME["vocab_size"])
    state = torch.get_rng_state()
    with torch.no_grad():
        a, b = ours(input_ids=ids).logits, ours(input_ids=ids).logits
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_convert_refuses_other_model_types(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not a transformers Reformer"):
        convert(tmp_path / "src", tmp_path / "dst")


def test_hash_seed_none_is_reported_after_the_weights_load(tmp_path, caplog):
    """The hash_seed=None notice comes once the weights have loaded: a folder whose weights do not fit gets only
    the error, a good one gets the notice."""
    import logging

    from safetensors.torch import load_file, save_file

    fields = {**CRIME, "hash_seed": None}
    ReformerModelWithLMHead(ReformerConfig(**fields, **NO_DROPOUT)).save_pretrained(tmp_path / "good")
    ReformerModelWithLMHead(ReformerConfig(**fields, **NO_DROPOUT)).save_pretrained(tmp_path / "bad")
    weights = load_file(tmp_path / "bad" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "feed_forward" not in k}, tmp_path / "bad" / "model.safetensors",
              metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="hf_longctx.conversion.reformer"):
        with pytest.raises(ValueError, match="does not fit.*missing"):
            convert(tmp_path / "bad", tmp_path / "bad_out")
        assert not [r for r in caplog.records if "hash_seed" in r.getMessage()]
        convert(tmp_path / "good", tmp_path / "good_out")
    assert [r for r in caplog.records if "hash_seed=None" in r.getMessage()]


def test_bf16_error_within_2x_of_transformers_bf16(tmp_path):
    """Our bf16 logits against our fp32 ones, next to transformers' bf16 against fp32 (hashing in bf16 too)."""
    ours, theirs = _convert(tmp_path, ReformerModelWithLMHead, **CRIME)
    ids = _ids(2, 64, CRIME["vocab_size"], seed=4)
    with torch.no_grad():
        exact = ours(input_ids=ids).logits
        ours_bf16 = ours.to(torch.bfloat16)(input_ids=ids).logits.float()
        theirs_bf16 = theirs.to(torch.bfloat16)(input_ids=ids, use_cache=False).logits.float()
    assert torch.isfinite(ours_bf16).all()
    err_ours, err_theirs = (ours_bf16 - exact).abs().max().item(), (theirs_bf16 - exact).abs().max().item()
    assert err_ours <= 2 * err_theirs, f"bf16 error {err_ours:.3e} vs transformers' bf16 {err_theirs:.3e}"


@pytest.mark.parametrize("case", ["local only, lsh fields None", "axial product not whole chunks"])
def test_configs_transformers_accepts_convert_and_match(tmp_path, case):
    """transformers builds and runs these; the converter refused them (about 20 of transformers' own Reformer
    model tests failed on this alone): a local-only layer list whose LSH fields are None, and an axial shape whose
    product (8 x 9 = 72) is not a multiple of the chunk lengths' LCM (8)."""
    fields = dict(CRIME, is_decoder=False)
    if case.startswith("local only"):
        fields.update(attn_layers=["local", "local"], lsh_attn_chunk_length=None, lsh_num_chunks_before=None,
                      lsh_num_chunks_after=None, num_buckets=None)
    else:
        fields.update(axial_pos_shape=[8, 9], max_position_embeddings=72)
    ours, theirs = _convert(tmp_path, ReformerModel, **fields)
    ids = _ids(2, 72, fields["vocab_size"], seed=4)
    with torch.no_grad():
        _close(ours(ids).last_hidden_state, theirs(ids).last_hidden_state, case)
