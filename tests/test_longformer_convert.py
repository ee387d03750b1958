"""hf_longctx.convert against transformers: every converted head computes what the source computes.

Tiny random transformers models are saved to tmp folders, converted, loaded back through ``AutoModel*`` and run on
a ragged, right-padded batch with a different number of global tokens per row and a length that is not a multiple
of the window. Token-level outputs are compared at real tokens only (what a padded position holds is not part of
either model's contract); sequence-level outputs are compared whole.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    GPT2Config,
    LongformerConfig,
    RobertaConfig,
)

import hf_longctx
import hf_longctx.conversion.common as conversion_common
from hf_longctx.__main__ import main
from hf_longctx.convert import convert_from_short, convert_longformer, extend_position_embeddings

TOL = dict(atol=1e-5, rtol=1e-5)
PAD, SEP = 1, 2  # RoBERTa / Longformer ids
TINY = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)
# Fields off our config's defaults, so that a field the converter forgets to copy shows up.
LONGFORMER = dict(
    TINY, attention_window=[4, 8], max_position_embeddings=40, layer_norm_eps=1e-7, type_vocab_size=2,
    hidden_act="gelu_new", pad_token_id=PAD, sep_token_id=SEP, bos_token_id=0, eos_token_id=SEP,
)
LABELS = {0: "neg", 1: "neutral", 2: "pos"}

AUTO = {
    "Model": AutoModel,
    "ForMaskedLM": AutoModelForMaskedLM,
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForTokenClassification": AutoModelForTokenClassification,
    "ForQuestionAnswering": AutoModelForQuestionAnswering,
    "ForMultipleChoice": AutoModelForMultipleChoice,
}
HEAD_CONFIG = {
    "ForSequenceClassification": dict(id2label=LABELS, problem_type="single_label_classification"),
    "ForTokenClassification": dict(num_labels=5),
    "ForQuestionAnswering": {},
}


def _source(tmp_path, family: str, head: str, config, name="src"):
    """A tiny random transformers model saved to ``tmp_path / name``; returns (model in eval mode, folder)."""
    torch.manual_seed(0)
    model = getattr(transformers, family + head)(config).eval()
    folder = tmp_path / name
    model.save_pretrained(folder)
    return model, folder


def _load(folder, head: str):
    return AUTO[head].from_pretrained(folder).eval()


def _ragged(lengths, T, *, pad=PAD, vocab=100, low=3):
    """Random ids right padded with ``pad``: (input_ids, attention_mask), both (len(lengths), T)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(low, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = pad
    return ids, mask


def _global(shape, rows):
    """A 0/1 mask of ``shape`` with ones at the given column lists, one list per (flattened) row."""
    g = torch.zeros(shape, dtype=torch.long)
    flat = g.view(-1, shape[-1])
    for b, cols in enumerate(rows):
        flat[b, cols] = 1
    return g


def _with_separators(rows, T, *, pad=PAD, sep=SEP, cls=0):
    """Rows ``question SEP SEP context SEP`` (transformers' QA / multiple-choice layout), right padded.

    ``rows`` is a list of (question length, context length); exactly three separators per row, as transformers'
    Longformer asserts.
    """
    g = torch.Generator().manual_seed(2)
    ids = torch.full((len(rows), T), pad)
    mask = torch.zeros_like(ids)
    for b, (q, c) in enumerate(rows):
        row = [cls, *torch.randint(3, 100, (q,), generator=g).tolist(), sep, sep,
               *torch.randint(3, 100, (c,), generator=g).tolist(), sep]
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
    return ids, mask


def _assert_real_close(ours, theirs, mask, what):
    """Compare ``(B, T, ...)`` outputs at real tokens (mask ``(B, T)``)."""
    assert ours.shape == theirs.shape, what
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], **TOL, msg=lambda m: f"{what}: {m}")


def _assert_hidden_close(ours, theirs, mask):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        _assert_real_close(a, b, mask, f"hidden_states[{i}]")


def _token_inputs():
    T = 13  # a multiple of neither window (4 and 8)
    ids, mask = _ragged([13, 9, 6], T)
    types = (torch.arange(T)[None, :] >= 4).long().expand(3, T) * mask  # exercises type_vocab_size=2
    glob = _global((3, T), [[0, 5, 11], [0, 3], [2]])
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), glob


# ---------------------------------------------------------------- convert_longformer: every head ----------------------


@pytest.mark.parametrize("head", ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification"])
def test_longformer_token_heads_match_transformers(tmp_path, head):
    ref, src = _source(tmp_path, "Longformer", head, LongformerConfig(**LONGFORMER, **HEAD_CONFIG.get(head, {})))
    convert_longformer(src, tmp_path / "dst")
    ours = _load(tmp_path / "dst", head)
    assert type(ours) is hf_longctx.REGISTRY["longctx_longformer"][1][AUTO[head]]

    inputs, glob = _token_inputs()
    mask = inputs["attention_mask"]
    for global_mask in (glob, None):  # None: each head's default (SeqCls makes token 0 global)
        kwargs = dict(inputs, global_attention_mask=global_mask, output_hidden_states=True)
        with torch.no_grad():
            a, b = ours(**kwargs), ref(**kwargs)
        _assert_hidden_close(a.hidden_states, b.hidden_states, mask)
        if head == "Model":
            _assert_real_close(a.last_hidden_state, b.last_hidden_state, mask, "last_hidden_state")
            torch.testing.assert_close(a.pooler_output, b.pooler_output, **TOL)
        elif head == "ForSequenceClassification":
            torch.testing.assert_close(a.logits, b.logits, **TOL)
        else:
            _assert_real_close(a.logits, b.logits, mask, "logits")


def test_longformer_question_answering_matches_transformers(tmp_path):
    ref, src = _source(tmp_path, "Longformer", "ForQuestionAnswering", LongformerConfig(**LONGFORMER))
    convert_longformer(src, tmp_path / "dst")
    ours = _load(tmp_path / "dst", "ForQuestionAnswering")

    ids, mask = _with_separators([(3, 6), (2, 3), (5, 2)], T=15)
    # None: both put global attention on the question (the tokens before the first separator), 4, 3 and 6 of them.
    for global_mask in (None, _global(ids.shape, [[0, 1], [0, 7, 8, 9], [4]])):
        with torch.no_grad():
            a = ours(ids, attention_mask=mask, global_attention_mask=global_mask, output_hidden_states=True)
            b = ref(ids, attention_mask=mask, global_attention_mask=global_mask, output_hidden_states=True)
        _assert_real_close(a.start_logits, b.start_logits, mask, "start_logits")
        _assert_real_close(a.end_logits, b.end_logits, mask, "end_logits")
        _assert_hidden_close(a.hidden_states, b.hidden_states, mask)


def test_longformer_multiple_choice_matches_transformers(tmp_path):
    ref, src = _source(tmp_path, "Longformer", "ForMultipleChoice", LongformerConfig(**LONGFORMER))
    convert_longformer(src, tmp_path / "dst")
    ours = _load(tmp_path / "dst", "ForMultipleChoice")

    ids, mask = _with_separators([(6, 2), (5, 4), (4, 1), (3, 3), (7, 3), (2, 1)], T=15)
    ids, mask = ids.view(2, 3, 15), mask.view(2, 3, 15)  # (batch, choices, T)
    # None: both make the choice (after the first two separators) global, a different count per row.
    for global_mask in (None, _global(ids.shape, [[0], [0, 2], [0, 1, 2], [5], [0, 9], [1]])):
        with torch.no_grad():
            a = ours(ids, attention_mask=mask, global_attention_mask=global_mask, output_hidden_states=True)
            b = ref(ids, attention_mask=mask, global_attention_mask=global_mask, output_hidden_states=True)
        torch.testing.assert_close(a.logits, b.logits, **TOL)
        _assert_hidden_close(a.hidden_states, b.hidden_states, mask.view(6, 15))


def test_longformer_config_fields_are_copied(tmp_path):
    ref, src = _source(
        tmp_path, "Longformer", "ForSequenceClassification",
        LongformerConfig(**LONGFORMER, **HEAD_CONFIG["ForSequenceClassification"]),
    )
    convert_longformer(src, tmp_path / "dst")
    config = _load(tmp_path / "dst", "ForSequenceClassification").config
    assert config.model_type == "longctx_longformer"
    for name in ("attention_window", "max_position_embeddings", "layer_norm_eps", "type_vocab_size", "hidden_act",
                 "vocab_size", "hidden_size", "intermediate_size", "pad_token_id", "sep_token_id", "bos_token_id",
                 "eos_token_id", "problem_type", "num_labels", "hidden_dropout_prob"):
        assert getattr(config, name) == getattr(ref.config, name), name
    assert config.id2label == LABELS and config.label2id == {v: k for k, v in LABELS.items()}
    saved = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert saved["architectures"] == ["LongctxLongformerForSequenceClassification"]
    assert set(saved["auto_map"]) >= {"AutoConfig", *(a.__name__ for a in AUTO.values())}
    assert (tmp_path / "dst" / "modeling_longformer.py").is_file()  # remote code travels with the folder


def _shard_bin(folder, state):
    """Write ``state`` as two pytorch_model-*.bin shards with an index, as old transformers did."""
    keys = sorted(state)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({k: state[k] for k in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["sharded_safetensors", "bin", "sharded_bin"])
def test_longformer_weight_file_layouts(tmp_path, layout):
    torch.manual_seed(0)
    ref = transformers.LongformerModel(LongformerConfig(**LONGFORMER)).eval()
    src = tmp_path / "src"
    if layout == "sharded_safetensors":
        ref.save_pretrained(src, max_shard_size="20KB")
        assert (src / "model.safetensors.index.json").is_file()
    else:
        ref.save_pretrained(src)
        state = load_file(src / "model.safetensors")
        (src / "model.safetensors").unlink()
        state["embeddings.position_ids"] = torch.arange(40)[None]  # the buffer old checkpoints saved
        if layout == "bin":
            torch.save(state, src / "pytorch_model.bin")
        else:
            _shard_bin(src, state)
    convert_longformer(src, tmp_path / "dst")
    ours = _load(tmp_path / "dst", "Model")
    inputs, glob = _token_inputs()
    with torch.no_grad():
        a = ours(**inputs, global_attention_mask=glob).last_hidden_state
        b = ref(**inputs, global_attention_mask=glob).last_hidden_state
    _assert_real_close(a, b, inputs["attention_mask"], "last_hidden_state")


def test_longformer_fp16_checkpoint_stays_fp16(tmp_path):
    torch.manual_seed(0)
    ref = transformers.LongformerForMaskedLM(LongformerConfig(**LONGFORMER)).half()
    ref.save_pretrained(tmp_path / "src")
    convert_longformer(tmp_path / "src", tmp_path / "dst")
    ours = AutoModelForMaskedLM.from_pretrained(tmp_path / "dst", dtype="auto")
    assert ours.dtype == torch.float16
    for name, tensor in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], tensor, atol=0, rtol=0, msg=name)


# ---------------------------------------------------------------- convert_from_short ----------------------------------

OLD_MAX = 12  # the short model's longest input


def _roberta(**extra):
    return RobertaConfig(**TINY, max_position_embeddings=OLD_MAX + PAD + 1, pad_token_id=PAD, type_vocab_size=1,
                         layer_norm_eps=1e-7, **extra)


def _bert(**extra):
    return BertConfig(**TINY, max_position_embeddings=OLD_MAX, pad_token_id=0, type_vocab_size=2, **extra)


def _bert_tokenizer(folder):
    """A tiny WordPiece tokenizer saved next to the model: [PAD]=0 ... [SEP]=3."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 100)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    (folder / "vocab.txt").unlink()  # the saved tokenizer.json holds the vocabulary


def _short_inputs(family):
    """A ragged batch of at most OLD_MAX tokens, in the source model's padding convention."""
    pad = PAD if family == "Roberta" else 0
    ids, mask = _ragged([OLD_MAX, 7, 3], OLD_MAX, pad=pad, low=5)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if family == "Bert":
        inputs["token_type_ids"] = (torch.arange(OLD_MAX)[None, :] >= 2).long().expand(3, OLD_MAX) * mask
    return inputs


@pytest.mark.parametrize("family", ["Roberta", "Bert"])
def test_from_short_masked_lm_reproduces_short_model(tmp_path, family):
    """With a window that covers the whole input (w/2 >= T - 1) and no global tokens, sliding-window attention is
    full attention, and the copied positions are the old ones: the Longformer must compute the short model."""
    ref, src = _source(tmp_path, family, "ForMaskedLM", _roberta() if family == "Roberta" else _bert())
    max_length = 40
    convert_from_short(src, tmp_path / "dst", max_length=max_length, attention_window=2 * OLD_MAX)
    ours = _load(tmp_path / "dst", "ForMaskedLM")
    assert ours.config.max_position_embeddings == max_length + ours.config.pad_token_id + 1
    assert ours.longformer.max_length == max_length
    assert ours.config.attention_window == 2 * OLD_MAX

    inputs = _short_inputs(family)
    with torch.no_grad():
        a = ours(**inputs, output_hidden_states=True)
        b = ref(**inputs, output_hidden_states=True)
    _assert_real_close(a.logits, b.logits, inputs["attention_mask"], "logits")
    _assert_hidden_close(a.hidden_states, b.hidden_states, inputs["attention_mask"])

    # Longer than the short model allows, up to the new limit, and no further.
    long_ids = torch.randint(5, 100, (2, max_length), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = ours(long_ids).logits
    assert logits.shape == (2, max_length, 100) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ours(torch.randint(5, 100, (1, max_length + 1)))


@pytest.mark.parametrize("family", ["Roberta", "Bert"])
def test_from_short_copies_positions_and_global_projections(tmp_path, family):
    ref, src = _source(tmp_path, family, "Model", _roberta() if family == "Roberta" else _bert())
    convert_from_short(src, tmp_path / "dst", max_length=30, attention_window=8)
    ours = _load(tmp_path / "dst", "Model")
    old = ref.embeddings.position_embeddings.weight
    new = ours.embeddings.position_embeddings.weight
    pad = ref.config.pad_token_id
    first = pad + 1 if family == "Roberta" else 0  # where the short model's real positions start
    assert new.shape == (30 + pad + 1, 32)
    for p in range(30):
        torch.testing.assert_close(new[pad + 1 + p], old[first + p % OLD_MAX], atol=0, rtol=0)
    for layer in ours.encoder.layer:
        attn = layer.attention.self
        for name in ("query", "key", "value"):
            local, glob = getattr(attn, name), getattr(attn, name + "_global")
            assert torch.equal(local.weight, glob.weight) and torch.equal(local.bias, glob.bias)
            assert local.weight.data_ptr() != glob.weight.data_ptr()  # copies, free to train apart
    torch.testing.assert_close(ours.pooler.dense.weight, ref.pooler.dense.weight, atol=0, rtol=0)


@pytest.mark.parametrize(
    "family, head",
    [("Bert", "ForSequenceClassification"), ("Bert", "ForMultipleChoice"), ("Roberta", "ForQuestionAnswering"),
     ("Roberta", "ForTokenClassification")],
)
def test_from_short_heads_reproduce_short_model(tmp_path, family, head):
    """Also with each head's default global tokens: when the window covers everything, a global row recomputed
    with query_global/key_global/value_global (copies of the local ones) equals the local row."""
    extra = {"num_labels": 3} if head != "ForMultipleChoice" and head != "ForQuestionAnswering" else {}
    config = _roberta(**extra) if family == "Roberta" else _bert(**extra)
    ref, src = _source(tmp_path, family, head, config)
    if family == "Bert":
        _bert_tokenizer(src)  # BERT configs have no sep_token_id: the converter reads it from the tokenizer
    convert_from_short(src, tmp_path / "dst", max_length=24, attention_window=2 * OLD_MAX)
    ours = _load(tmp_path / "dst", head)

    sep = 3 if family == "Bert" else SEP
    assert ours.config.sep_token_id == sep
    if head in ("ForQuestionAnswering", "ForMultipleChoice"):
        pad, cls = (0, 2) if family == "Bert" else (PAD, 0)  # BERT: [PAD]=0, [CLS]=2; RoBERTa: <s>=0, <pad>=1
        rows = [(3, 4), (2, 2), (1, 3), (4, 3), (2, 5), (1, 1)]
        ids, mask = _with_separators(rows, OLD_MAX, pad=pad, sep=sep, cls=cls)
        inputs = dict(input_ids=ids, attention_mask=mask)
        if head == "ForMultipleChoice":
            inputs = {k: v.view(2, 3, OLD_MAX) for k, v in inputs.items()}
    else:
        inputs = _short_inputs(family)
    with torch.no_grad():
        a, b = ours(**inputs), ref(**inputs)
    if head == "ForQuestionAnswering":
        _assert_real_close(a.start_logits, b.start_logits, inputs["attention_mask"], "start_logits")
        _assert_real_close(a.end_logits, b.end_logits, inputs["attention_mask"], "end_logits")
    elif head == "ForTokenClassification":
        _assert_real_close(a.logits, b.logits, inputs["attention_mask"], "logits")
    else:
        torch.testing.assert_close(a.logits, b.logits, **TOL)


def test_from_short_reads_original_bert_checkpoints(tmp_path):
    """Like bert-base-uncased: config says BertForMaskedLM, weights are BertForPreTraining's (pooler and
    next-sentence head included) in a pytorch_model.bin with TF-era LayerNorm gamma/beta names."""
    torch.manual_seed(0)
    ref = transformers.BertForPreTraining(_bert()).eval()
    src = tmp_path / "src"
    ref.save_pretrained(src)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in load_file(src / "model.safetensors").items()}
    assert any(k.startswith("cls.seq_relationship.") for k in state) and "bert.pooler.dense.weight" in state
    (src / "model.safetensors").unlink()
    torch.save(state, src / "pytorch_model.bin")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(config, architectures=["BertForMaskedLM"])))

    convert_from_short(src, tmp_path / "dst", max_length=24, attention_window=2 * OLD_MAX)
    ours = _load(tmp_path / "dst", "ForMaskedLM")
    inputs = _short_inputs("Bert")
    with torch.no_grad():
        a, b = ours(**inputs).logits, ref(**inputs).prediction_logits
    _assert_real_close(a, b, inputs["attention_mask"], "logits")


def test_from_short_copies_the_tokenizer(tmp_path):
    _, src = _source(tmp_path, "Bert", "ForMaskedLM", _bert())
    _bert_tokenizer(src)
    convert_from_short(src, tmp_path / "dst", max_length=24, attention_window=8)
    theirs, ours = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(tmp_path / "dst")
    text = ("w5 w6 w7", "w8 w9")
    assert ours(*text)["input_ids"] == theirs(*text)["input_ids"]
    assert ours.model_max_length == 24  # the new limit, not the short model's


def test_from_short_rejects_what_cannot_be_copied(tmp_path):
    _, src = _source(tmp_path, "Bert", "ForMaskedLM", _bert(hidden_act="relu"))
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        convert_from_short(src, tmp_path / "dst", max_length=24, attention_window=8)
    _, src = _source(tmp_path, "Roberta", "Model", _roberta(), name="src2")
    with pytest.raises(ValueError, match="attention_window"):
        convert_from_short(src, tmp_path / "dst", max_length=24, attention_window=7)
    with pytest.raises(ValueError, match="max_length"):
        convert_from_short(src, tmp_path / "dst", max_length=0)
    assert not (tmp_path / "dst").exists()


def test_extend_position_embeddings_truncates_and_repeats():
    table = torch.arange(5 * 2, dtype=torch.float).view(5, 2)  # RoBERTa-style, pad 1: real rows 2, 3, 4
    new = extend_position_embeddings(table, 7, pad_token_id=1, first_position=2)
    assert new.shape == (9, 2)
    assert torch.equal(new[:2], table[:2])
    assert torch.equal(new[2:], table[[2, 3, 4, 2, 3, 4, 2]])
    short = extend_position_embeddings(table, 2, pad_token_id=0, first_position=0)  # BERT-style, shorter
    assert torch.equal(short, torch.cat([torch.zeros(1, 2), table[:2]]))


# ---------------------------------------------------------------- errors and atomic writes ----------------------------


def _leftovers(parent):
    """Temporary folders the converter may have left next to its destination."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_missing_source(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_longformer(tmp_path / "nope", tmp_path / "dst")
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "dst")]) != 0
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def test_existing_destination_is_kept_unless_overwrite(tmp_path, capsys):
    _, src = _source(tmp_path, "Longformer", "Model", LongformerConfig(**LONGFORMER))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_longformer(src, dst)
    assert main(["convert", str(src), str(dst)]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and _leftovers(tmp_path) == []

    # --overwrite replaces only a folder hf-longctx wrote: the user's file stays
    assert main(["convert", str(src), str(dst), "--overwrite"]) != 0
    assert "keep.txt" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and _leftovers(tmp_path) == []

    converted = tmp_path / "converted"
    assert main(["convert", str(src), str(converted)]) == 0
    assert main(["convert", str(src), str(converted), "--overwrite"]) == 0
    assert type(_load(converted, "Model")).__name__ == "LongctxLongformerModel"
    (converted / "notes.txt").write_text("mine")
    assert main(["convert", str(src), str(converted), "--overwrite"]) != 0
    assert "notes.txt" in capsys.readouterr().err and (converted / "notes.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_unsupported_sources(tmp_path, capsys):
    GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="'gpt2'"):
        convert_longformer(tmp_path / "gpt2", tmp_path / "dst")
    assert main(["convert", str(tmp_path / "gpt2"), str(tmp_path / "dst"), "--from-short"]) != 0
    assert "'gpt2'" in capsys.readouterr().err

    _, roberta = _source(tmp_path, "Roberta", "ForMaskedLM", _roberta(), name="roberta")
    with pytest.raises(ValueError, match="--from-short"):
        convert_longformer(roberta, tmp_path / "dst")
    _, longformer = _source(tmp_path, "Longformer", "Model", LongformerConfig(**LONGFORMER), name="longformer")
    with pytest.raises(ValueError, match="without --from-short"):
        convert_from_short(longformer, tmp_path / "dst")
    assert main(["convert", str(longformer), str(tmp_path / "dst"), "--max-length", "64"]) != 0
    assert "--from-short" in capsys.readouterr().err

    _, decoder = _source(tmp_path, "Roberta", "ForCausalLM", _roberta(is_decoder=True), name="decoder")
    with pytest.raises(ValueError, match="supported heads"):
        convert_from_short(decoder, tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and _leftovers(tmp_path) == []


def test_weights_that_do_not_fit_are_listed(tmp_path):
    _, src = _source(tmp_path, "Longformer", "Model", LongformerConfig(**LONGFORMER))
    state = load_file(src / "model.safetensors")
    del state["encoder.layer.1.attention.self.key_global.weight"]
    state["encoder.layer.1.attention.self.rotary.weight"] = torch.zeros(2)
    state["pooler.dense.bias"] = torch.zeros(3)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as error:
        convert_longformer(src, tmp_path / "dst")
    message = str(error.value)
    assert "missing: encoder.layer.1.attention.self.key_global.weight" in message
    assert "unexpected: encoder.layer.1.attention.self.rotary.weight" in message
    assert "pooler.dense.bias (3,) vs (32,)" in message
    assert not (tmp_path / "dst").exists() and _leftovers(tmp_path) == []


def test_head_weights_the_architecture_lacks_are_dropped(tmp_path, caplog):
    """An MLM checkpoint whose config names the bare model (as pretraining checkpoints often do) converts to the
    bare model, as transformers' from_pretrained would load it, and says what it dropped."""
    torch.manual_seed(0)
    mlm = transformers.LongformerForMaskedLM(LongformerConfig(**LONGFORMER)).eval()
    mlm.save_pretrained(tmp_path / "src")
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps(dict(config, architectures=["LongformerModel"])))
    with caplog.at_level("WARNING", logger="hf_longctx"):
        convert_longformer(tmp_path / "src", tmp_path / "dst")
    assert "lm_head.dense.weight" in caplog.text and "no pooler" in caplog.text
    ours = _load(tmp_path / "dst", "Model")
    inputs, glob = _token_inputs()
    with torch.no_grad():
        a = ours(**inputs, global_attention_mask=glob).last_hidden_state
        b = mlm.longformer(**inputs, global_attention_mask=glob).last_hidden_state
    _assert_real_close(a, b, inputs["attention_mask"], "last_hidden_state")


def test_interrupted_write_leaves_no_half_folder(tmp_path, monkeypatch):
    _, src = _source(tmp_path, "Longformer", "Model", LongformerConfig(**LONGFORMER))

    def fail(*args, **kwargs):  # after the weights are written, before the rename
        raise RuntimeError("interrupted")

    monkeypatch.setattr(conversion_common, "copy_tokenizer", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        convert_longformer(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and _leftovers(tmp_path) == []

    monkeypatch.undo()
    convert_longformer(src, tmp_path / "dst")
    before = {p.name: p.read_bytes() for p in (tmp_path / "dst").iterdir()}
    monkeypatch.setattr(conversion_common, "copy_tokenizer", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        convert_longformer(src, tmp_path / "dst", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "dst").iterdir()} == before and _leftovers(tmp_path) == []


def test_cli_from_short(tmp_path, capsys):
    _, src = _source(tmp_path, "Roberta", "ForMaskedLM", _roberta())
    rc = main(["convert", str(src), str(tmp_path / "dst"), "--from-short", "--max-length", "40",
               "--attention-window", "8"])
    assert rc == 0, capsys.readouterr().err
    assert "LongctxLongformerForMaskedLM" in capsys.readouterr().out
    config = _load(tmp_path / "dst", "ForMaskedLM").config
    assert (config.max_position_embeddings, config.attention_window) == (40 + PAD + 1, 8)


def test_lengthen_an_hf_longctx_longformer(tmp_path, capsys):
    """The length errors advise converting the model to a longer length, so convert must take hf_longctx models:
    `convert MODEL DST --max-length N` grows its position table as --from-short does."""
    from hf_longctx import LongctxLongformerConfig, LongctxLongformerForSequenceClassification
    from hf_longctx.train import TrainError, _check_init_from
    from hf_longctx.tasks import TASKS

    torch.manual_seed(0)
    config = LongctxLongformerConfig(**{**LONGFORMER, "hidden_act": "gelu"}, id2label=LABELS)
    short = LongctxLongformerForSequenceClassification(config).eval()
    short.save_pretrained(tmp_path / "short")
    assert config.max_input_tokens == 38
    with pytest.raises(TrainError, match="--max-length 100 is longer than the 38 tokens") as refused:
        _check_init_from(tmp_path / "short", 100, TASKS["kernel-docs"], None)
    # The advice is a command line: run it as written.
    advised = re.search(r"`hf-longctx (convert [^`]+)`", str(refused.value)).group(1)
    argv = advised.replace("LONGER_DIR", str(tmp_path / "long")).split()
    assert main(argv) == 0, capsys.readouterr().err
    assert "max_position_embeddings=102" in capsys.readouterr().out

    long = AutoModelForSequenceClassification.from_pretrained(tmp_path / "long").eval()
    assert long.config.max_input_tokens == 100 and long.config.id2label == LABELS
    table = long.longformer.embeddings.position_embeddings.weight
    old = short.longformer.embeddings.position_embeddings.weight
    torch.testing.assert_close(table[:40], old, rtol=0, atol=0)
    torch.testing.assert_close(table[PAD + 1 + 38:PAD + 1 + 76], old[PAD + 1:], rtol=0, atol=0)  # copied again
    ids, mask = _ragged([30, 21], 30)
    with torch.no_grad():  # inputs the short model reads give exactly its outputs
        torch.testing.assert_close(long(ids, attention_mask=mask).logits, short(ids, attention_mask=mask).logits,
                                   **TOL)
        assert long(torch.randint(3, 100, (1, 90))).logits.shape == (1, 3)

    assert main(["convert", str(tmp_path / "long"), str(tmp_path / "x"), "--max-length", "50"]) == 1
    assert "already reads 100 tokens" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "long"), str(tmp_path / "x")]) == 1
    assert "pass --max-length N to lengthen it" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "a_file").write_text("mine")  # a file where a folder must go: a FileExistsError before
    assert main(["convert", str(tmp_path / "long"), str(tmp_path / "a_file" / "x"), "--max-length", "200"]) == 1
    assert "a_file is a file, not a folder" in capsys.readouterr().err


def test_convert_from_a_hub_id(tmp_path, monkeypatch, capsys):
    """`convert allenai/longformer-base-4096 DST` said the folder did not exist. A Hub id is downloaded through
    huggingface_hub; offline, an id missing from the cache is a clear error, never a traceback."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["convert", "someone/no-such-model-xyz", str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err
    assert "cannot be downloaded from the Hub: HF_HUB_OFFLINE is set and it is not in the local cache" in err
    assert "Traceback" not in err and not (tmp_path / "dst").exists()

    _, src = _source(tmp_path, "Longformer", "Model", LongformerConfig(**LONGFORMER))
    asked = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        asked.append((repo_id, revision, allow_patterns))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert main(["convert", "allenai/longformer-base-4096", str(tmp_path / "dst"), "--revision", "v1"]) == 0
    assert asked[0][:2] == ("allenai/longformer-base-4096", "v1") and "*.safetensors" in asked[0][2]
    assert type(_load(tmp_path / "dst", "Model")).__name__ == "LongctxLongformerModel"
    # An existing destination is refused before anything is downloaded.
    assert main(["convert", "allenai/longformer-base-4096", str(tmp_path / "dst")]) == 1
    assert "already exists" in capsys.readouterr().err and len(asked) == 1

    # Online, one copy of the weights: safetensors when the repository has them, else the .bin files.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for files, weights in ((["config.json", "model.safetensors", "pytorch_model.bin"], "*.safetensors"),
                           (["config.json", "pytorch_model.bin", "tf_model.h5"], "*.bin")):
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo, revision=None: files)
        assert main(["convert", "allenai/longformer-base-4096", str(tmp_path / weights[2:])]) == 0
        patterns = asked[-1][2]
        assert weights in patterns and {"*.safetensors", "*.bin"} - {weights} - set(patterns)
