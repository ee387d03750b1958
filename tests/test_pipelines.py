"""What the pipelines of the shared suite (tests/model_suite.py) do not cover: the question-answering helper that
stands in for the pipeline transformers 5 removed, and the tokenizer a causal model saves for text-generation."""

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from hf_longctx import LongctxLongformerConfig
from hf_longctx.data.tokenizers import kernel_docs_bpe
from hf_longctx.qa import answer_question

TEXT = "The kernel documentation describes how drivers register their devices with the bus. " * 6


@pytest.fixture(scope="module")
def tokenizer():
    return kernel_docs_bpe()


def _saved(tmp_path_factory, tokenizer, auto_class, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attention_window=8, max_position_embeddings=258, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, sep_token_id=tokenizer.sep_token_id,
    )
    kwargs.update(overrides)
    config = LongctxLongformerConfig(**kwargs)
    folder = tmp_path_factory.mktemp(auto_class.__name__)
    auto_class.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return auto_class.from_pretrained(folder).eval()


def test_question_answering_helper(tmp_path_factory, tokenizer):
    """transformers 5 removed the question-answering pipeline; hf_longctx.qa.answer_question stands in for it."""
    model = _saved(tmp_path_factory, tokenizer, AutoModelForQuestionAnswering)
    answer = answer_question(model, tokenizer, "What do drivers register?", TEXT, max_answer_tokens=5)
    assert answer["answer"] and TEXT[answer["start"]:answer["end"]] == answer["answer"]
    # The chosen span is the argmax of start + end log-probabilities over context tokens.
    enc = tokenizer("What do drivers register?", TEXT, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])
    start = out.start_logits[0].masked_fill(~context, -1e9).log_softmax(-1)
    end = out.end_logits[0].masked_fill(~context, -1e9).log_softmax(-1)
    best = max(
        (start[i] + end[j]).item() for i in range(len(start)) for j in range(i, min(i + 5, len(start)))
        if context[i] and context[j]
    )
    assert answer["score"] == pytest.approx(torch.tensor(best).exp().item(), rel=1e-4)


def test_a_causal_models_saved_tokenizer_adds_no_end_token_to_prompts(tmp_path):
    """pipeline("text-generation") tokenizes with the tokenizer's defaults: ByT5's appended </s> to the prompt, so
    a byte-level model continued after end-of-text (and a BPE's RoBERTa template did the same)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from hf_longctx import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM
    from hf_longctx.data.tokenizers import byte_tokenizer, causal_prompt_tokenizer, kernel_docs_bpe

    saved = causal_prompt_tokenizer(kernel_docs_bpe())
    saved.save_pretrained(tmp_path / "bpe")
    assert AutoTokenizer.from_pretrained(tmp_path / "bpe")("hello world")["input_ids"][-1] != saved.eos_token_id
    torch.manual_seed(0)
    config = LongctxTransfoXLConfig(vocab_size=259, d_model=32, n_head=4, d_head=8, d_inner=64, n_layer=2,
                                    segment_length=8, mem_len=8, pad_token_id=0, eos_token_id=1)
    LongctxTransfoXLForCausalLM(config).save_pretrained(tmp_path / "lm")
    causal_prompt_tokenizer(byte_tokenizer()).save_pretrained(tmp_path / "lm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]), with_kwargs=True)
    out = pipeline("text-generation", model=model, tokenizer=str(tmp_path / "lm"))("<page>", max_new_tokens=2,
                                                                                     do_sample=False)
    assert seen[0].tolist() == [[ord(c) + 3 for c in "<page>"]]  # the prompt's bytes, nothing after them
    assert out[0]["generated_text"].startswith("<page>")
