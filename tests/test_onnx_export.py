"""ONNX export (hf_longctx.onnx_export, `hf-longctx export --format onnx`): a graph with dynamic batch and length
that onnxruntime runs to the eager model's outputs at lengths it was not exported at, the Longformer with
`global_attention_mask` as an input; what cannot be exported is refused by name before any file is written."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from model_suite import variant_specs

from hf_longctx.__main__ import main
from hf_longctx.export import SUMMARY_FILE
from hf_longctx.onnx_export import OnnxExportError, example_inputs, graph_inputs, real_difference, to_onnx

SPECS = variant_specs()


def _model(variant: str, head: str, **overrides):
    spec = SPECS[variant]
    config = spec.make_config(**spec.heads[head].config_overrides, **overrides)
    torch.manual_seed(0)
    return spec.heads[head].model_class(config).eval()


# One head per variant every day (an export takes 10-30 s here); every exportable head in the slow tier.
EVERYDAY = [("longformer", "seqcls"), ("reformer", "causal"), ("transfo_xl", "causal")]
EVERY_HEAD = [(v, h) for v in SPECS for h in SPECS[v].heads if (v, h) not in EVERYDAY
              and h != "mc"]


def _check(variant, head, tmp_path):
    model = _model(variant, head)
    path = tmp_path / "model.onnx"
    check = to_onnx(model, path)
    assert path.is_file() and check["inputs"] == list(graph_inputs(model))
    limit = model.config.max_input_tokens
    assert len(check["lengths"]) >= 2 and check["export_length"] not in check["lengths"]
    assert max(check["lengths"]) == min(limit, 4 * check["export_length"])  # four times longer, where it fits
    assert max(check["lengths"].values()) <= 1e-4, check
    # An independent run: a batch of 3 at a length of our choosing, global tokens where the variant has them.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(model, 3, min(limit, 3 * check["export_length"] - 1), seed=11)
    with torch.no_grad():
        want = model(**inputs, return_dict=True)
    got = session.run(None, {n: inputs[n].numpy() for n in check["inputs"]})
    for name, array in zip(check["outputs"], got):
        assert real_difference(torch.from_numpy(array), want[name], inputs["attention_mask"]) <= 1e-4, name


@pytest.mark.parametrize("variant,head", EVERYDAY)
def test_onnx_graph_runs_to_the_models_outputs_at_unseen_lengths(variant, head, tmp_path):
    _check(variant, head, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("variant,head", EVERY_HEAD)
def test_onnx_export_of_every_head(variant, head, tmp_path):
    _check(variant, head, tmp_path)


@pytest.mark.slow
def test_the_longformer_graph_takes_any_number_of_global_tokens(tmp_path):
    """`global_attention_mask` is an input: none, one, and many global tokens per row (a data-dependent size of
    the graph) give the model's outputs."""
    model = _model("longformer", "base")
    path = tmp_path / "model.onnx"
    to_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(model, 2, 40, seed=3)
    for count in (0, 1, 9):
        glob = torch.zeros_like(inputs["attention_mask"])
        glob[:, :count] = 1
        feed = dict(inputs, global_attention_mask=glob)
        with torch.no_grad():
            want = model(**feed).last_hidden_state.numpy()
        got = session.run(None, {n: feed[n].numpy() for n in graph_inputs(model)})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"{count} global tokens")


@pytest.mark.parametrize("variant,head,overrides,match", [
    ("longformer", "mc", {}, "multiple-choice heads are not exported"),
    ("longformer", "base", {"attention_dilation": [1, 2]}, "dilated attention"),
    ("reformer", "causal", {"num_buckets": None}, "num_buckets=None"),
])
def test_what_cannot_be_exported_is_refused_by_name_and_writes_nothing(variant, head, overrides, match, tmp_path):
    with pytest.raises(OnnxExportError, match=match):
        to_onnx(_model(variant, head, **overrides), tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_command_refuses_what_cannot_be_exported_before_writing(tmp_path, capsys):
    _model("reformer", "causal", num_buckets=None).save_pretrained(tmp_path / "reformer")
    assert main(["export", str(tmp_path / "reformer"), str(tmp_path / "hub"), "--format", "onnx"]) == 1
    assert "num_buckets=None" in capsys.readouterr().err
    assert not (tmp_path / "hub").exists()


@pytest.mark.slow
def test_export_command_writes_the_graph_beside_the_hub_folder(tmp_path, capsys):
    model = _model("longformer", "seqcls")
    model.save_pretrained(tmp_path / "trained")
    assert main(["export", str(tmp_path / "trained"), str(tmp_path / "hub"), "--format", "onnx"]) == 0
    assert (tmp_path / "hub" / "model.onnx").is_file() and (tmp_path / "hub" / "config.json").is_file()
    check = json.loads((tmp_path / "hub" / SUMMARY_FILE).read_text())["onnx"]
    assert check["inputs"] == ["input_ids", "attention_mask", "global_attention_mask"]
    assert "ONNX graph" in capsys.readouterr().out


def test_the_export_length_reads_one_window_for_every_layer():
    """`attention_window` may be one integer for all layers (the benchmark's models) or one per layer."""
    from hf_longctx.onnx_export import _export_length

    assert _export_length(_model("longformer", "base", attention_window=6)) == 15
    assert _export_length(_model("longformer", "base", attention_window=[4, 8])) == 19
