"""transformers' own test configurations (its `ReformerModelTester` local and LSH configs and its
`LongformerModelTester` config, tests/models/*/test_modeling_*.py in transformers 5), built with transformers,
saved, converted by `hf-longctx convert`'s converters and compared with transformers in float64, every head:
outputs equal to 1e-8. The inputs are full rows (no padding): with padding, transformers' Reformer looks back
into padding from a round's first chunk and its Longformer's float64 masks sum to -inf, the documented
differences (docs/longformer.md, "Differences from transformers' Longformer"; lsh_attention.py's module docstring)."""

import pytest
import torch
import transformers

import hf_longctx  # noqa: F401  (registers the Auto classes)
from hf_longctx.conversion.longformer import convert_longformer
from hf_longctx.conversion.reformer import HEADS as REFORMER_HEADS
from hf_longctx.conversion.reformer import convert as convert_reformer

# ReformerModelTester's defaults: two local layers.
REFORMER_LOCAL = dict(
    vocab_size=32, attention_head_size=16, hidden_size=32, num_attention_heads=2, local_attn_chunk_length=4,
    local_num_chunks_before=1, local_num_chunks_after=0, num_buckets=None, num_hashes=1, lsh_attn_chunk_length=None,
    lsh_num_chunks_before=None, lsh_num_chunks_after=None, chunk_size_feed_forward=0, feed_forward_size=32,
    hidden_act="gelu", max_position_embeddings=512, axial_norm_std=1.0, layer_norm_eps=1e-12, axial_pos_embds=True,
    axial_pos_shape=[4, 8], axial_pos_embds_dim=[16, 16], attn_layers=["local", "local"], pad_token_id=0,
    eos_token_id=2, hash_seed=0, num_labels=2,
)
# ReformerLSHAttnModelTest's tester: four LSH layers, 4 hashes, 2 buckets, chunked feed-forward.
REFORMER_LSH = dict(
    vocab_size=32, attention_head_size=16, hidden_size=64, num_attention_heads=2, num_buckets=2, num_hashes=4,
    lsh_attn_chunk_length=4, lsh_num_chunks_before=1, lsh_num_chunks_after=0, chunk_size_feed_forward=6,
    feed_forward_size=32, hidden_act="relu", max_position_embeddings=512, axial_norm_std=1.0, layer_norm_eps=1e-12,
    axial_pos_embds=True, axial_pos_shape=[4, 8], axial_pos_embds_dim=[16, 48], attn_layers=["lsh"] * 4,
    pad_token_id=0, eos_token_id=2, hash_seed=0, num_labels=2,
)
REFORMER_NO_DROPOUT = dict(hidden_dropout_prob=0.0, local_attention_probs_dropout_prob=0.0,
                           lsh_attention_probs_dropout_prob=0.0)
# LongformerModelTester's defaults.
LONGFORMER = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=16, initializer_range=0.02, num_labels=3, attention_window=4,
)


def _compare(theirs_out, ours_out, fields):
    for field in fields:
        a, b = getattr(ours_out, field), getattr(theirs_out, field)
        err = (a - b).abs().max().item()
        assert err <= 1e-8, f"{field}: max abs difference {err:.2e}"


def _ours(convert, theirs, tmp_path, name):
    theirs.save_pretrained(tmp_path / f"{name}-theirs")
    folder = convert(tmp_path / f"{name}-theirs", tmp_path / f"{name}-ours")
    config = transformers.AutoConfig.from_pretrained(folder)
    auto = getattr(transformers, {"Model": "AutoModel", "ModelWithLMHead": "AutoModelForCausalLM"}.get(
        name, f"AutoModel{name}"))
    return auto.from_pretrained(folder, dtype=torch.float64).eval(), config


@pytest.mark.parametrize("layout", ["local", "lsh"])
@pytest.mark.parametrize("head", ["Model", "ModelWithLMHead", "ForMaskedLM", "ForSequenceClassification",
                                  "ForQuestionAnswering"])
def test_reformer_tester_configs(tmp_path, layout, head, one_thread):
    fields = dict(REFORMER_LOCAL if layout == "local" else REFORMER_LSH, **REFORMER_NO_DROPOUT)
    fields["is_decoder"] = head != "ForMaskedLM"  # transformers' MLM head needs bidirectional attention
    # The local tester's seq_length; the LSH tester's 13 is padded by transformers to 16, which its chunked
    # feed-forward (chunks of 6) then refuses: 12, whole chunks of both.
    T = 32 if layout == "local" else 12
    torch.manual_seed(0)
    theirs = getattr(transformers, f"Reformer{head}")(transformers.ReformerConfig(**fields)).double().eval()
    ours, _ = _ours(convert_reformer, theirs, tmp_path, head)
    assert type(ours) is REFORMER_HEADS[f"Reformer{head}"]
    ids = torch.randint(1, 32, (13, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = theirs(ids), ours(ids)
    outputs = {"Model": ["last_hidden_state"], "ForQuestionAnswering": ["start_logits", "end_logits"]}
    _compare(a, b, outputs.get(head, ["logits"]))


@pytest.mark.parametrize("head", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                                  "ForQuestionAnswering", "ForMultipleChoice"])
def test_longformer_tester_config(tmp_path, head, one_thread):
    torch.manual_seed(0)
    fields = dict(LONGFORMER, num_labels=2) if head == "ForQuestionAnswering" else LONGFORMER  # start, end
    theirs = getattr(transformers, f"Longformer{head}")(transformers.LongformerConfig(**fields)).double().eval()
    ours, _ = _ours(convert_longformer, theirs, tmp_path, head)
    g = torch.Generator().manual_seed(2)
    shape = (13, 4, 7) if head == "ForMultipleChoice" else (13, 7)
    ids = torch.randint(3, 99, shape, generator=g)
    ids[..., 3] = 2  # a separator (QA puts global attention on the question before it)
    types = torch.randint(0, 16, shape, generator=g)
    glob = torch.zeros(shape, dtype=torch.long)
    glob[..., 0] = 1
    with torch.no_grad():
        a = theirs(ids, token_type_ids=types, global_attention_mask=glob)
        b = ours(ids, token_type_ids=types, global_attention_mask=glob)
    outputs = {"Model": ["last_hidden_state"], "ForQuestionAnswering": ["start_logits", "end_logits"]}
    _compare(a, b, outputs.get(head, ["logits"]))
