"""Generation stops at the model's length, in Python and on the command line, keeping what it generated (not a
ValueError from the position table after streaming text), and an empty prompt gets a clear error (not a division
by zero in the attention op)."""

import warnings

import pytest
import torch

from hf_longctx import LongctxLongformerConfig, LongctxLongformerForCausalLM
from hf_longctx.commands.generate import GenerateError, generation_budget


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LongctxLongformerConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attention_window=4, max_position_embeddings=12, pad_token_id=1, bos_token_id=0, eos_token_id=2, causal=True,
        num_sink_tokens=1)
    return LongctxLongformerForCausalLM(config).eval()  # reads at most 12 - 1 - 1 = 10 tokens


def generate(model, ids, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.generate(ids, do_sample=False, pad_token_id=1, **kwargs)
    return out, [str(w.message) for w in caught if "model's length" in str(w.message)]


def test_generate_stops_at_the_models_length_and_says_so(model):
    assert model.config.max_input_tokens == 10
    ids = torch.randint(3, 50, (1, 3), generator=torch.Generator().manual_seed(0))
    out, said = generate(model, ids, max_new_tokens=300)
    # 10 positions read; the 11th token is generated from the 10th and never read back.
    assert out.shape == (1, 11) and said == ["generation stopped at the model's length: it reads at most 10 tokens"]
    # Exactly up to the limit: nothing cut, nothing said; the tokens are those of the longer request.
    exact, said = generate(model, ids, max_new_tokens=8)
    assert said == [] and torch.equal(exact, out)


def test_left_padding_takes_no_position(model):
    ids = torch.tensor([[1, 1, 5, 6, 7], [4, 5, 6, 7, 8]])
    with pytest.warns(UserWarning, match="stopped at the model's length"):
        out = model.generate(input_ids=ids, attention_mask=(ids != 1).long(), max_new_tokens=300, do_sample=False,
                             pad_token_id=1)
    assert out.shape == (2, 11)  # row 1: 5 + 6 tokens; row 0 (3 real tokens) stops with it


def test_a_prompt_longer_than_the_model_or_empty_is_refused_before_decoding(model):
    with pytest.raises(ValueError, match="the prompt has 11 tokens but this model reads at most 10"):
        model.generate(torch.randint(3, 50, (1, 11)), max_new_tokens=3)
    with pytest.raises(ValueError, match="the prompt is empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)


def test_cli_budget():
    assert generation_budget(3, 400, 10) == 8
    assert generation_budget(3000, 400, None) == 400  # no position table (the Transformer-XL): no limit
    assert generation_budget(3, 5, 10) == 5
    with pytest.raises(GenerateError, match="empty"):
        generation_budget(0, 5, 10)
    with pytest.raises(GenerateError, match="11 tokens but the model reads at most 10"):
        generation_budget(11, 5, 10)


def test_reformer_generate_stops_at_its_length_and_keeps_the_tokens():
    """The Reformer decoded up to its axial length, then raised and lost every generated token."""
    from hf_longctx import LongctxReformerConfig, LongctxReformerForCausalLM

    torch.manual_seed(0)
    config = LongctxReformerConfig(
        vocab_size=50, hidden_size=32, num_attention_heads=4, attention_head_size=8, attn_layers=["local", "lsh"],
        num_hashes=1, num_buckets=4, lsh_attn_chunk_length=4, local_attn_chunk_length=4, axial_pos_shape=[4, 4],
        axial_pos_embds_dim=[16, 16], max_position_embeddings=16, feed_forward_size=64, is_decoder=True,
        pad_token_id=1, eos_token_id=2, hash_seed=3)
    model = LongctxReformerForCausalLM(config).eval()
    ids = torch.randint(3, 50, (1, 5), generator=torch.Generator().manual_seed(0))
    out, said = generate(model, ids, max_new_tokens=300)
    assert out.shape == (1, 17) and said == ["generation stopped at the model's length: it reads at most 16 tokens"]
    exact, said = generate(model, ids, max_new_tokens=12)
    assert said == [] and torch.equal(exact, out)
    with pytest.raises(ValueError, match="the prompt has 17 tokens but this model reads at most 16"):
        model.generate(torch.randint(3, 50, (1, 17)), max_new_tokens=3)


def test_cli_generates_past_max_input_length_for_a_model_without_positions(tmp_path, capsys):
    """`hf-longctx generate` refused Transformer-XL prompts longer than max_input_length (a tokenization bound for
    training), though the model has no position table and continues any length."""
    from hf_longctx import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM
    from hf_longctx.__main__ import main
    from hf_longctx.data.tokenizers import byte_prompt_tokenizer

    torch.manual_seed(0)
    config = LongctxTransfoXLConfig(vocab_size=259, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2,
                                    segment_length=8, mem_len=8, max_input_length=16, pad_token_id=0, eos_token_id=1)
    LongctxTransfoXLForCausalLM(config).save_pretrained(tmp_path / "lm")
    byte_prompt_tokenizer().save_pretrained(tmp_path / "lm")
    assert main(["generate", str(tmp_path / "lm"), "--prompt", "a fairly long prompt of forty bytes.....",
                 "--max-new-tokens", "3"]) == 0
    assert "reads at most" not in capsys.readouterr().err
