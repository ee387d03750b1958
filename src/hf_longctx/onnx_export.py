"""ONNX graphs of hf_longctx models (``hf-longctx export MODEL DST --format onnx``, :func:`to_onnx`).

A model is captured with ``torch.export`` through PyTorch's ONNX exporter (``torch.onnx.export(dynamo=True)``),
with the batch size and the length as dynamic dimensions, in eval mode. What makes that possible is in the models:
the input checks become run-time assertions in a graph, the Longformer runs its static-shape op
(``models/longformer/banded_graph.py``: the band in blocks, global tokens a data-dependent count, so
``global_attention_mask`` is an input of the graph), the Reformer's eval rotations are constants drawn from its
``hash_seed``, and the Transformer-XL runs every segment at once (``_segments_at_once``: no loop whose count
follows the length). Every export is checked with
onnxruntime against the eager model at lengths it was not exported at before the file is kept.

ONNX export of transformers' Longformer never worked (transformers #15217, #16463; optimum disabled it: its
``as_strided`` chunking and no ``global_attention_mask`` input).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch

ONNX_FILE = "model.onnx"
REQUIRED = ("onnx", "onnxscript", "onnxruntime")  # the `onnx` extra: pip install "hf_longctx[onnx]"


class OnnxExportError(ValueError):
    """A model (head, option or environment) that cannot be exported; the message names it."""


def _outputs(model) -> tuple[str, ...]:
    """The outputs the graph returns, by the head's output field names."""
    name = type(model).__name__
    if name.endswith("ForQuestionAnswering"):
        return ("start_logits", "end_logits")
    if name.endswith("Model"):
        return ("last_hidden_state",)
    return ("logits",)


def graph_inputs(model) -> tuple[str, ...]:
    """The inputs the graph takes: ``input_ids`` and ``attention_mask`` ``(batch, length)`` int64, and the
    Longformer's ``global_attention_mask`` where its layers have global attention (bidirectional ones)."""
    names = ("input_ids", "attention_mask")
    if model.config.model_type == "longctx_longformer" and not model.config.causal:
        names += ("global_attention_mask",)
    return names


def check_exportable(model) -> None:
    """Refuse, by name, what :func:`to_onnx` cannot write: an unknown model, a head or option the graph cannot
    hold, a missing package. Nothing is written before this passes."""
    from .variants import BY_MODEL_TYPE

    config = model.config
    if config.model_type not in BY_MODEL_TYPE:
        raise OnnxExportError(f"{type(model).__name__} is not an hf_longctx model (model_type {config.model_type!r})")
    name = type(model).__name__
    if name.endswith("ForMultipleChoice"):
        raise OnnxExportError(f"{name}: multiple-choice heads are not exported to ONNX (inputs of three dimensions); "
                              "export the base model or another head")
    if config.model_type == "longctx_longformer" and any(d != 1 for d in config.layer_dilations):
        raise OnnxExportError(f"{name} has dilated attention (attention_dilation={config.layer_dilations}): "
                              "the ONNX graph runs undilated windows only")
    if config.model_type == "longctx_reformer" and "lsh" in config.attn_layers and config.num_buckets is None:
        raise OnnxExportError(f"{name} has num_buckets=None (a bucket count that follows the length): an ONNX "
                              "graph holds one set of rotations; set config.num_buckets (e.g. the count "
                              "transformers picks for your length) and export again")
    missing = [p for p in REQUIRED if importlib.util.find_spec(p) is None]
    if missing:
        raise OnnxExportError(f"ONNX export needs {', '.join(missing)}: pip install \"hf_longctx[onnx]\"")


class _Graph(torch.nn.Module):
    """The model behind tensor inputs and a tuple of tensor outputs, as an exporter wants it."""

    def __init__(self, model, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask, global_attention_mask=None):
        kwargs = {"use_cache": False} if "ForCausalLM" in type(self.model).__name__ else {}
        if global_attention_mask is not None:
            kwargs["global_attention_mask"] = global_attention_mask
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return tuple(out[name] for name in self.outputs)


def example_inputs(model, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids, a right-padded row, and global tokens on the first token and a few more: inputs that reach
    every branch an export must capture."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    low = 3 if config.vocab_size > 8 else 0  # clear of the usual special ids
    ids = torch.randint(low, config.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1 and length > 4:
        mask[-1, length - length // 4:] = 0
        if config.pad_token_id is not None:
            ids[-1, length - length // 4:] = config.pad_token_id
    inputs = {"input_ids": ids, "attention_mask": mask}
    if "global_attention_mask" in graph_inputs(model):
        glob = torch.zeros(batch, length, dtype=torch.long)
        glob[:, 0] = 1
        glob[0, torch.randint(1, length, (min(3, length - 1),), generator=g)] = 1
        inputs["global_attention_mask"] = glob
    return inputs


def _export_length(model) -> int:
    """A length that takes the general path of every layer (longer than a chunk or window), within the model's
    limit: the graph generalises from it."""
    c = model.config
    if c.model_type == "longctx_longformer":
        wanted = 2 * max(c.layer_windows) + 3
    elif c.model_type == "longctx_reformer":
        wanted = 4 * max(c.lsh_attn_chunk_length, c.local_attn_chunk_length) + 3
    else:
        wanted = 37
    return min(wanted, c.max_input_tokens)


def to_onnx(model, path, *, verify_lengths: tuple[int, ...] | None = None, atol: float = 1e-4) -> dict:
    """Write ``model`` (eval mode, float32) as an ONNX graph at ``path`` with dynamic batch and length, check it
    with onnxruntime against the eager model and return the check: ``{"inputs", "outputs", "export_length",
    "lengths": {length: max abs difference}}``.

    ``verify_lengths`` default to three lengths the export did not use (shorter, longer and four times longer,
    within the model's limit). A difference over ``atol`` raises :class:`OnnxExportError` and leaves no file.
    """
    check_exportable(model)
    path = Path(path)
    model = model.eval().float()
    names, outputs = graph_inputs(model), _outputs(model)
    T0 = _export_length(model)
    example = example_inputs(model, 2, T0)
    shapes = {n: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for n in names}
    graph = _Graph(model, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        try:
            program = torch.onnx.export(graph, tuple(example[n] for n in names), input_names=list(names),
                                        output_names=list(outputs), dynamic_shapes=shapes, dynamo=True,
                                        verbose=False, optimize=False)
        except Exception as err:  # the exporter's errors are long: the cause's first line names the op or guard
            cause = err.__cause__ or err
            raise OnnxExportError(f"{type(model).__name__} could not be captured for ONNX: {type(cause).__name__}: "
                                  f"{str(cause).strip().splitlines()[0][:300]}") from err
        program.save(tmp)
        limit = model.config.max_input_tokens
        lengths = verify_lengths or tuple(sorted({max(2, T0 // 2 + 1), min(limit, 2 * T0 + 5), min(limit, 4 * T0)}))
        diffs = verify(model, tmp, lengths)
        worst = max(diffs.values())
        if not worst <= atol:
            raise OnnxExportError(f"the ONNX graph of {type(model).__name__} differs from the model by {worst:.2e} "
                                  f"(over {atol:g}) at lengths {diffs}: not written")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"inputs": list(names), "outputs": list(outputs), "export_length": T0, "lengths": diffs}


def verify(model, onnx_path, lengths, batch: int = 2, threads: int | None = None) -> dict[int, float]:
    """Largest absolute difference between onnxruntime's outputs and the eager model's, per length."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names, outputs = graph_inputs(model), _outputs(model)
    diffs = {}
    for T in lengths:
        inputs = example_inputs(model, batch, T, seed=T)
        with torch.no_grad():
            want = model(**inputs, return_dict=True)
        got = session.run(list(outputs), {n: inputs[n].numpy() for n in names})
        diffs[T] = max(real_difference(torch.from_numpy(g), want[o], inputs["attention_mask"])
                       for g, o in zip(got, outputs))
    return diffs


def real_difference(got: torch.Tensor, want: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """Largest absolute difference over the outputs of real tokens (a per-token output's padding positions are
    not defined: the Transformer-XL's differ between its segment loop and the graph's segments at once)."""
    if got.dim() >= 2 and got.shape[:2] == attention_mask.shape:
        keep = attention_mask.bool()
        got, want = got[keep], want[keep]
    return float((got - want).abs().max())


__all__ = ["ONNX_FILE", "OnnxExportError", "check_exportable", "graph_inputs", "real_difference", "to_onnx", "verify"]
