"""Parity with transformers 4.49's Transformer-XL through the converter, on the golden fixtures.

tests/fixtures/transfo_xl/README.md describes the three cases (plain softmax; same_length + clamp + pre-LN + shared
position biases, un-shared in the file; adaptive softmax with div_val=2) and the 4.49 semantics. 4.49 starts with
``mem_len`` zero memories that are attended like real tokens and keeps memories length-first ``(M, B, d)``; ours
start empty and are batch-first, so the test passes zeros explicitly and transposes.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

import hf_longctx  # noqa: F401
from hf_longctx.conversion.transfo_xl import convert

FIXTURES = Path(__file__).parent / "fixtures" / "transfo_xl"
CASES = ["case1_plain_softmax", "case2_samelen_clamp_prelnorm_sharedr", "case3_adaptive"]
ATOL = 1e-5


def _report(name, ours, ref):
    """assert_close with the max abs difference in the message, so a failure says how far off it is."""
    diff = (ours - ref).abs().max().item() if ours.numel() else 0.0
    torch.testing.assert_close(ours, ref, rtol=0, atol=ATOL, msg=lambda m: f"{name}: max abs diff {diff:.2e}\n{m}")
    return diff


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory):
    src = FIXTURES / request.param
    dst = tmp_path_factory.mktemp("converted") / request.param
    convert(src, dst)
    return dict(name=request.param, dst=dst, inputs=load_file(src / "inputs.safetensors"),
                expected=load_file(src / "expected.safetensors"), config=json.loads((src / "config.json").read_text()))


def _zero_mems(model, B):
    c = model.config
    return tuple(torch.zeros(B, c.mem_len, c.d_model) for _ in range(c.n_layer))


def test_three_segments_match_4_49(case, one_thread):
    lm = AutoModelForCausalLM.from_pretrained(case["dst"]).eval()
    base = AutoModel.from_pretrained(case["dst"]).eval()
    exp, inp = case["expected"], case["inputs"]
    B = inp["input_ids"].shape[0]
    mems = base_mems = _zero_mems(lm, B)
    worst = 0.0
    with torch.no_grad():
        for s in range(3):
            seg = inp[f"seg{s}.input_ids"]
            out = lm(seg, mems=mems, output_hidden_states=True)
            worst = max(worst, _report(f"seg{s} log-probs", out.logits, exp[f"seg{s}.prediction_scores"]))
            for i, h in enumerate(out.hidden_states):
                worst = max(worst, _report(f"seg{s} hidden_states.{i}", h, exp[f"seg{s}.hidden_states.{i}"]))
            for i, m in enumerate(out.mems):
                worst = max(worst, _report(f"seg{s} mems.{i}", m, exp[f"seg{s}.mems.{i}"].transpose(0, 1)))
            b = base(seg, mems=base_mems)
            worst = max(worst, _report(f"seg{s} last_hidden_state", b.last_hidden_state, exp[f"seg{s}.last_hidden_state"]))
            # Loss: 4.49 shifts inside the segment and averages the non-zero NLLs (4.49's
            # ``ProjectedAdaptiveLogSoftmax.forward`` and ``TransfoXLLMHeadModel.forward``).
            labelled = lm(seg, mems=mems, labels=seg)
            worst = max(worst, _report(f"seg{s} loss", labelled.loss, exp[f"seg{s}.loss"]))
            nll = -out.logits[:, :-1].gather(-1, seg[:, 1:, None]).squeeze(-1)
            worst = max(worst, _report(f"seg{s} nll", nll, exp[f"seg{s}.nll_ordered"]))
            # 4.49's own `losses` output: natural order for a plain softmax, grouped by cluster when adaptive.
            ref_losses = exp[f"seg{s}.losses"]
            if case["config"]["cutoffs"]:
                nll, ref_losses = nll.flatten().sort().values, ref_losses.flatten().sort().values
            worst = max(worst, _report(f"seg{s} losses", nll, ref_losses))
            mems, base_mems = out.mems, b.mems
    print(f"{case['name']}: max abs diff {worst:.2e}")


def test_segments_inside_forward_equal_consecutive_calls(case, one_thread):
    """One call on the 3-segment input (recurrence inside forward) gives the fixture's per-segment outputs."""
    lm = AutoModelForCausalLM.from_pretrained(case["dst"]).eval()
    exp, inp = case["expected"], case["inputs"]
    with torch.no_grad():
        out = lm(inp["input_ids"], mems=_zero_mems(lm, inp["input_ids"].shape[0]))
    ref = torch.cat([exp[f"seg{s}.prediction_scores"] for s in range(3)], dim=1)
    _report("log-probs of the whole input", out.logits, ref)
    for i, m in enumerate(out.mems):
        _report(f"final mems.{i}", m, exp[f"seg2.mems.{i}"].transpose(0, 1))


def test_generate_matches_4_49(case, one_thread):
    """Greedy generate() with our key/value cache reproduces 4.49's tokens (its prompt is one segment)."""
    lm = AutoModelForCausalLM.from_pretrained(case["dst"]).eval()
    prompt = case["inputs"]["gen.prompt"]
    lm.config.segment_length = prompt.shape[1]  # 4.49 processes the whole prompt as one segment
    with torch.no_grad():
        seq = lm.generate(prompt, mems=_zero_mems(lm, prompt.shape[0]), max_new_tokens=20, do_sample=False,
                          eos_token_id=None, pad_token_id=0)
    torch.testing.assert_close(seq, case["expected"]["gen.sequences"], rtol=0, atol=0)


def test_converter_reads_a_legacy_bin_and_untied_biases(tmp_path, one_thread):
    """pytorch_model.bin (read with weights_only=True) converts like safetensors; per-layer r biases that differ
    make a shared-bias (untie_r=False) source convert with untie_r=True."""
    src = FIXTURES / CASES[1]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    state = load_file(src / "model.safetensors")
    torch.save(state, legacy / "pytorch_model.bin")
    (legacy / "config.json").write_text((src / "config.json").read_text())
    convert(legacy, tmp_path / "out_bin")
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "out_bin")
    assert a.config.untie_r is False and hasattr(a.transformer, "r_w_bias")
    state = {k: v.clone() for k, v in state.items()}
    state["transformer.layers.1.dec_attn.r_w_bias"] += 1.0
    save_file(state, legacy / "model.safetensors")
    (legacy / "pytorch_model.bin").unlink()
    convert(legacy, tmp_path / "out_untied")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "out_untied")
    assert b.config.untie_r is True
    torch.testing.assert_close(b.transformer.layers[1].attn.r_w_bias, state["transformer.layers.1.dec_attn.r_w_bias"])
    with pytest.raises(FileExistsError):
        convert(legacy, tmp_path / "out_untied")
    state["crit.unknown"] = torch.zeros(1)
    save_file(state, legacy / "model.safetensors")
    with pytest.raises(ValueError, match="crit.unknown"):
        convert(legacy, tmp_path / "out_bad")


def test_converter_reads_a_bare_transfoxlmodel_folder(tmp_path, one_thread):
    """A TransfoXLModel folder (body weights without the `transformer.` prefix, no softmax) converts to our bare
    model, whose hidden states match 4.49's TransfoXLModel."""
    src = FIXTURES / CASES[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    state = load_file(src / "model.safetensors")
    save_file({k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")},
              bare / "model.safetensors", metadata={"format": "pt"})
    raw = json.loads((src / "config.json").read_text())
    raw["architectures"] = ["TransfoXLModel"]
    (bare / "config.json").write_text(json.dumps(raw))
    convert(bare, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["LongctxTransfoXLModel"]
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    inp, exp = load_file(src / "inputs.safetensors"), load_file(src / "expected.safetensors")
    with torch.no_grad():
        out = model(inp["seg0.input_ids"], mems=_zero_mems(model, 2))
    _report("bare model seg0", out.last_hidden_state, exp["seg0.last_hidden_state"])
