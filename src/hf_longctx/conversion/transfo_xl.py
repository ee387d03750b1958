"""Convert a transformers 4.x Transformer-XL folder (``model_type: transfo-xl``, e.g. transfo-xl-wt103) into an
hf_longctx ``longctx_transfo_xl`` folder.

Weights: ``model.safetensors`` or legacy ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``), as
written by ``TransfoXLLMHeadModel`` or ``TransfoXLModel``. Tied tensors that ``save_pretrained`` omits (the output
tables and the tied softmax projections) are restored from the embedding. Shared position biases
(``untie_r=False``) may appear once as ``transformer.r_w_bias`` and again under every layer (a file written from
the full state dict): the copies must agree; if they differ the model really has per-layer biases and is converted
with ``untie_r=True``.

The name map follows transformers 4.49 ``modeling_transfo_xl.py`` (see tests/fixtures/transfo_xl/README.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .. import LongctxTransfoXLConfig, LongctxTransfoXLForCausalLM, LongctxTransfoXLModel
from .common import build_exact, check_paths, load_weights, read_config, save_converted

# 4.49 name (after the `transformer.` prefix) -> ours, for one layer
_LAYER_NAMES = {
    "dec_attn.qkv_net.weight": "attn.qkv.weight",
    "dec_attn.r_net.weight": "attn.r_net.weight",
    "dec_attn.o_net.weight": "attn.out.weight",
    "dec_attn.layer_norm.weight": "attn.norm.weight",
    "dec_attn.layer_norm.bias": "attn.norm.bias",
    "dec_attn.r_w_bias": "attn.r_w_bias",
    "dec_attn.r_r_bias": "attn.r_r_bias",
    "pos_ff.CoreNet.0.weight": "ff.fc1.weight",
    "pos_ff.CoreNet.0.bias": "ff.fc1.bias",
    "pos_ff.CoreNet.3.weight": "ff.fc2.weight",
    "pos_ff.CoreNet.3.bias": "ff.fc2.bias",
    "pos_ff.layer_norm.weight": "ff.norm.weight",
    "pos_ff.layer_norm.bias": "ff.norm.bias",
}


def convert_config(raw: dict, state: dict[str, torch.Tensor]) -> LongctxTransfoXLConfig:
    """Our config from a 4.x ``config.json`` (as a dict) and its weights (to detect really per-layer biases)."""
    if raw.get("model_type") != "transfo-xl":
        raise ValueError(f"expected a transfo-xl config, got model_type {raw.get('model_type')!r}")
    if raw.get("attn_type", 0) != 0:
        raise ValueError(f"only attn_type=0 (relative attention, the released models) converts, got {raw['attn_type']}")
    if raw.get("sample_softmax", -1) > 0:
        raise ValueError(f"sample_softmax={raw['sample_softmax']} is a training-time option hf_longctx lacks")
    untie_r = bool(raw.get("untie_r", True))
    if not untie_r and _layer_biases_differ(state, int(raw["n_layer"])):
        untie_r = True
    mem_len = int(raw.get("mem_len", 0))
    clamp = raw.get("clamp_len", -1)
    # 4.x has no segment length: the input length is the segment. tgt_len (in older configs) is the paper's value.
    segment = int(raw.get("tgt_len") or mem_len or 512)
    return LongctxTransfoXLConfig(
        vocab_size=int(raw["vocab_size"]), d_model=int(raw["d_model"]), d_embed=int(raw.get("d_embed", raw["d_model"])),
        n_head=int(raw["n_head"]), d_head=int(raw["d_head"]), d_inner=int(raw["d_inner"]), n_layer=int(raw["n_layer"]),
        segment_length=segment, mem_len=mem_len, same_length=bool(raw.get("same_length", False)),
        clamp_len=int(clamp) if clamp is not None and clamp > 0 else None,  # 4.49 clamps only if > 0 (``TransfoXLModel.forward``)
        dropout=float(raw.get("dropout", 0.1)), dropatt=float(raw.get("dropatt", 0.0)),
        pre_lnorm=bool(raw.get("pre_lnorm", False)), untie_r=untie_r, cutoffs=list(raw.get("cutoffs", [])),
        div_val=int(raw.get("div_val", 1)), tie_projs=list(raw.get("tie_projs", [False] + [True] * len(raw.get("cutoffs", [])))),
        layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)), init_std=float(raw.get("init_std", 0.02)),
        proj_init_std=float(raw.get("proj_init_std", 0.01)), eos_token_id=raw.get("eos_token_id"),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        max_input_length=max(segment, mem_len, 1) * 4,
    )


def _layer_biases_differ(state: dict, n_layer: int) -> bool:
    for name in ("r_w_bias", "r_r_bias"):
        copies = [state[k] for k in (f"transformer.layers.{i}.dec_attn.{name}" for i in range(n_layer)) if k in state]
        shared = state.get(f"transformer.{name}", copies[0] if copies else None)
        if any(not torch.equal(c, shared) for c in copies):
            return True
    return False


def convert_state(state: dict[str, torch.Tensor], config: LongctxTransfoXLConfig) -> dict[str, torch.Tensor]:
    """Rename 4.x weights to ours (``transformer.*`` for the body, ``lm_head.*`` for ``crit.*``)."""
    if not any(k.startswith("transformer.") for k in state):  # a TransfoXLModel file: body keys without prefix
        state = {f"transformer.{k}": v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        body = key[len("transformer."):] if key.startswith("transformer.") else None
        if body == "pos_emb.inv_freq":
            continue  # recomputed from d_model
        if body in ("r_w_bias", "r_r_bias"):
            if config.untie_r:  # the copies differ: every layer keeps its own (from the layer keys)
                continue
            out[key] = value
            continue
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", body or "")
        if m:
            name = _LAYER_NAMES.get(m.group(2))
            if name is None:
                raise ValueError(f"unknown Transformer-XL weight {key}")
            if name.endswith(("r_w_bias", "r_r_bias")) and not config.untie_r:
                shared = f"transformer.{name.split('.')[-1]}"
                out.setdefault(shared, value)  # one shared pair; _layer_biases_differ checked the copies agree
                continue
            out[f"transformer.layers.{m.group(1)}.{name}"] = value
            continue
        m = re.fullmatch(r"word_emb\.emb_projs\.(\d+)", body or "")
        if m:
            out[f"transformer.word_emb.emb_projs.{m.group(1)}.weight"] = value
            continue
        if body is not None and body.startswith("word_emb.emb_layers."):
            out[key] = value
            continue
        m = re.fullmatch(r"crit\.out_projs\.(\d+)", key)
        if m:
            out[f"lm_head.out_projs.{m.group(1)}.weight"] = value
            continue
        if key.startswith("crit.") and re.fullmatch(r"crit\.(out_layers\.\d+\.(weight|bias)|cluster_weight|cluster_bias)", key):
            out["lm_head." + key[len("crit."):]] = value
            continue
        raise ValueError(f"unknown Transformer-XL weight {key}")
    return out


def load_converted(src) -> tuple[object, LongctxTransfoXLConfig]:
    """The hf_longctx model (causal LM when the folder has the softmax ``crit.*``, else the bare model) and its
    config, in memory, from a 4.x folder."""
    src = Path(src)
    raw = read_config(src)
    state = load_weights(src)
    config = convert_config(raw, state)
    ours = convert_state(state, config)
    if any(k.startswith("lm_head.") for k in ours):
        return build_exact(LongctxTransfoXLForCausalLM, config, ours), config
    body = {k[len("transformer."):]: v for k, v in ours.items()}
    return build_exact(LongctxTransfoXLModel, config, body), config


def convert(src, dst, *, overwrite: bool = False) -> Path:
    """Write the hf_longctx version of the transformers 4.x Transformer-XL folder ``src`` into ``dst``."""
    src, dst = check_paths(src, dst, overwrite)
    model, _ = load_converted(src)
    save_converted(model, src, dst, overwrite=overwrite)
    return dst


__all__ = ["convert", "convert_config", "convert_state", "load_converted"]
