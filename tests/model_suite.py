"""Model-level invariants written once; each variant's test file provides a ``variant`` fixture and imports these.

A variant is described by a :class:`VariantSpec`: how to build a tiny config, which heads exist and how to make
inputs for each. ``tests/test_longformer_model.py`` shows the pattern; a new variant copies it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch
from transformers import Trainer, TrainingArguments

import hf_longctx  # noqa: F401  (registers the Auto classes)


@dataclass
class Head:
    auto_class: type
    model_class: type
    make_inputs: Callable[[object, torch.Generator], dict]  # (config, generator) -> forward kwargs with labels
    output: str = "logits"  # the output compared between runs
    config_overrides: dict = field(default_factory=dict)  # e.g. a decoder head needs causal=True
    reference_class: type | None = None  # transformers' class this head stands in for (its contracts apply)


@dataclass
class VariantSpec:
    name: str
    make_config: Callable[..., object]  # (**overrides) -> config; tiny and dropout-free by default
    heads: dict[str, Head]
    padded_inputs: Callable[[object, torch.Generator], tuple[dict, dict]]  # -> (alone, batched) base-model kwargs
    bad_inputs: list[tuple[str, Callable[[object], dict], str]] = field(default_factory=list)  # (id, kwargs, match)
    # Config fields for the Trainer accumulation test only, for a variant whose training forward is random by
    # design (the Reformer redraws LSH rotations every forward, so batch 4 and 2 x 2 would hash differently).
    train_overrides: dict = field(default_factory=dict)
    bad_configs: list[tuple[str, dict, str]] = field(default_factory=list)  # (id, config fields, error match)
    position_table: bool = True  # False: any length, and position_ids are not an input (tests/test_bad_inputs.py)
    # The most graph breaks `torch._dynamo.explain` may count in an inference / a training forward of any head (0
    # is the goal; a variant above it says why in its test file). A rise fails the compile tests.
    inference_graph_breaks: int = 0
    train_graph_breaks: int = 0
    # Config fields an attn_implementation needs to run here on the CPU (the Reformer's FlexAttention serves one
    # hash round on the CPU); without them, that implementation must refuse the default config by name.
    cpu_attn_overrides: dict[str, dict] = field(default_factory=dict)


def variant_specs() -> dict[str, VariantSpec]:
    """Every variant's spec, from its test file ``tests/test_<folder>_model.py``, keyed by folder, in the order of
    the variant table (hf_longctx.variants): what tests that loop over variants parametrize over."""
    import importlib

    from hf_longctx.variants import VARIANTS

    specs = {}
    for record in VARIANTS:
        module = importlib.import_module(f"test_{record.folder}_model")
        found = [x for x in vars(module).values() if isinstance(x, VariantSpec)]
        assert len(found) == 1, f"tests/test_{record.folder}_model.py must define one VariantSpec, has {len(found)}"
        specs[record.folder] = found[0]
    return specs


def _forward(model, inputs, output="logits"):
    inputs = {k: v for k, v in inputs.items() if k not in ("labels", "start_positions", "end_positions")}
    with torch.no_grad():
        return getattr(model(**inputs), output)


def _build(head: Head, config, seed=0):
    torch.manual_seed(seed)
    return head.model_class(config).eval()


# ---------------------------------------------------------------- save / load -----------------------------------------


def test_save_load_roundtrip_every_head(variant, tmp_path):
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = head.make_inputs(config, torch.Generator().manual_seed(1))
        model.save_pretrained(tmp_path / name)
        loaded = head.auto_class.from_pretrained(tmp_path / name).eval()
        assert type(loaded) is head.model_class, f"{head.auto_class.__name__} loaded {type(loaded).__name__}"
        torch.testing.assert_close(
            _forward(loaded, inputs, head.output), _forward(model, inputs, head.output), rtol=1e-6, atol=1e-6,
            msg=lambda m, n=name: f"{n} after save/load: {m}",
        )
        saved = json.loads((tmp_path / name / "config.json").read_text())
        assert set(saved["auto_map"]) >= {"AutoConfig", "AutoModel"} | {h.auto_class.__name__ for h in variant.heads.values()}


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["hf_longctx"] = None  # importing hf_longctx now raises ImportError
    import transformers
    for folder, auto_name, inputs_path, out_path, output in json.loads(sys.argv[1]):
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        assert not type(model).__module__.startswith("hf_longctx"), type(model).__module__
        inputs = torch.load(inputs_path)
        with torch.no_grad():
            torch.save(getattr(model(**inputs), output), out_path)
        print(folder, type(model).__module__)
    """
)


def test_remote_code_loads_without_the_package(variant, tmp_path):
    """save_pretrained writes code that loads with trust_remote_code in a Python that cannot import hf_longctx.
    Every head loads in one such Python: a fresh interpreter per head cost ~10 s of imports each."""
    jobs, models = [], {}
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = {
            k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(2)).items()
            if k not in ("labels", "start_positions", "end_positions")
        }
        model.save_pretrained(tmp_path / name)
        torch.save(inputs, tmp_path / f"{name}_inputs.pt")
        models[name] = (model, inputs, head.output)
        jobs.append([str(tmp_path / name), head.auto_class.__name__, str(tmp_path / f"{name}_inputs.pt"),
                     str(tmp_path / f"{name}_out.pt"), head.output])
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, json.dumps(jobs)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"remote-code load failed:\n{result.stderr[-3000:]}"
    loaded_from = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    for name, (model, inputs, output) in models.items():
        assert "transformers_modules" in loaded_from.get(str(tmp_path / name), ""), (name, result.stdout)
        torch.testing.assert_close(torch.load(tmp_path / f"{name}_out.pt"), _forward(model, inputs, output),
                                   rtol=1e-6, atol=1e-6, msg=lambda m, n=name: f"{n} through remote code: {m}")


# ---------------------------------------------------------------- invariants ------------------------------------------


def test_padding_invariance(variant):
    """A sequence alone and the same sequence padded inside a ragged batch give the same hidden states."""
    config = variant.make_config()
    base = variant.heads["base"]
    model = _build(base, config)
    alone, batched = variant.padded_inputs(config, torch.Generator().manual_seed(3))
    out_alone = _forward(model, alone, "last_hidden_state")[0]
    out_batched = _forward(model, batched, "last_hidden_state")[0]
    real = batched["attention_mask"][0].bool()
    torch.testing.assert_close(out_batched[real], out_alone, rtol=1e-5, atol=1e-5)


def test_a_masked_token_changes_no_other_output(variant):
    """An attention mask with a hole (a 0 between real tokens, as transformers' testers draw them): whatever id
    stands under the hole, every head's outputs elsewhere stay the same. How the rest reads around the hole is
    each variant's own: the Longformer and Transformer-XL keep positions by column, the Reformer reads a row's
    real tokens in order, as it reads padding (its attention op's docstring)."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = {k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(11)).items()
                  if k not in ("labels", "start_positions", "end_positions")}
        ids = inputs["input_ids"]
        specials = {getattr(config, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id",
                                                        "sep_token_id", "cls_token_id")}
        ordinary = [p for p in range(1, ids.shape[-1] - 1) if not specials & set(ids[..., p].flatten().tolist())]
        hole = min(ordinary, key=lambda p: abs(p - ids.shape[-1] // 2))  # a separator moves default globals
        inputs["attention_mask"] = torch.ones_like(ids)
        inputs["attention_mask"][..., hole] = 0
        if "global_attention_mask" in inputs:
            inputs["global_attention_mask"] = inputs["global_attention_mask"].clone()
            inputs["global_attention_mask"][..., hole] = 0
        other = ids.clone()  # another ordinary token
        other[..., hole] = torch.tensor([next(c for c in range(3, config.vocab_size) if c not in specials and c != i)
                                         for i in ids[..., hole].flatten().tolist()]).view(ids[..., hole].shape)
        first = _forward(model, inputs, head.output)
        second = _forward(model, {**inputs, "input_ids": other}, head.output)
        if first.shape[: ids.dim()] == ids.shape:  # one output per token: the hole's own may change
            keep = torch.arange(ids.shape[-1]) != hole
            first, second = first[..., keep, :] if first.dim() > ids.dim() else first[..., keep], (
                second[..., keep, :] if second.dim() > ids.dim() else second[..., keep])
        assert not torch.equal(ids, other)
        torch.testing.assert_close(second, first, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(variant, use_reentrant):
    """Activation checkpointing in both of torch's modes gives the plain backward's gradients, every head."""
    for name, head in variant.heads.items():
        if name == "base":
            continue  # no loss to differentiate
        config = variant.make_config(**head.config_overrides)
        inputs = head.make_inputs(config, torch.Generator().manual_seed(4))
        grads = []
        for checkpointing in (False, True):
            model = _build(head, config).train()
            if checkpointing:
                model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
            model(**inputs).loss.backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys(), name
        for n in grads[0]:
            torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{name}.{n}: {m}")


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _rows(head, config, n, seed):
    """n single examples (batch dimension removed) from the head's input maker."""
    rows = []
    for i in range(n):
        inputs = head.make_inputs(config, torch.Generator().manual_seed(seed + i))
        rows.append({k: v[0] for k, v in inputs.items()})
    return rows


def _one_trainer_step(head, config, rows, tmp_path, batch, accumulation, checkpointing=False):
    model = _build(head, config).train()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"run_{batch}_{accumulation}_{checkpointing}"),
        per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=1,
        learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
        dataloader_num_workers=0, activation_checkpointing=checkpointing,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # A sequential sampler, so both runs see the examples in the same order.
    trainer = Trainer(model=model, args=args, train_dataset=_ListDataset(rows))
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def test_trainer_gradient_accumulation_matches_one_big_batch(variant, tmp_path):
    """One step of batch 4 equals one step of 2 x 2 accumulated, for every head (loss scaled correctly)."""
    for name, head in variant.heads.items():
        if name == "base":
            continue
        config = variant.make_config(**{**head.config_overrides, **variant.train_overrides})
        rows = _rows(head, config, 4, seed=10)
        big = _one_trainer_step(head, config, rows, tmp_path / name, batch=4, accumulation=1)
        accumulated = _one_trainer_step(head, config, rows, tmp_path / name, batch=2, accumulation=2, checkpointing=True)
        moved = sum(float(d.abs().sum()) for d in big.values())
        assert moved > 0, f"{name}: the step changed nothing"
        for n in big:
            torch.testing.assert_close(accumulated[n], big[n], rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{name}.{n}: {m}")


def test_trainer_evaluate_reports_the_models_loss(variant, tmp_path):
    """`Trainer.evaluate()` with transformers' default label names (read from forward's signature): eval_loss is
    reported, and equals the model's own loss on the same batch (it went missing when a forward argument named
    like a label was absent from ordinary batches)."""
    for name, head in variant.heads.items():
        if name == "base":
            continue
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        rows = _rows(head, config, 4, seed=60)
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_eval_batch_size=4, report_to=[],
                                 use_cpu=True, dataloader_num_workers=0)
        metrics = Trainer(model=model, args=args, eval_dataset=_ListDataset(rows)).evaluate()
        assert "eval_loss" in metrics, f"{name}: evaluate() gave {sorted(metrics)}"
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        with torch.no_grad():
            expected = model(**batch).loss.item()
        assert abs(metrics["eval_loss"] - expected) <= 1e-5 * abs(expected), (name, metrics["eval_loss"], expected)


# ---------------------------------------------------------------- bad input -------------------------------------------


def test_bad_inputs_raise_clear_errors(variant):
    config = variant.make_config()
    model = _build(variant.heads["base"], config)
    for case_id, make_kwargs, match in variant.bad_inputs:
        with pytest.raises(ValueError, match=match):
            model(**make_kwargs(config))


# ---------------------------------------------------------------- safety ----------------------------------------------

_AUDIT_SCRIPT = textwrap.dedent(
    """
    import sys, json, os
    modules_cache, folder, auto_name = sys.argv[1:]
    events = []
    allowed = (os.path.realpath(modules_cache), "/dev/", "/proc/")

    def hook(event, args):
        if event.startswith("socket.") or event in ("urllib.Request", "http.client.connect"):
            events.append(f"network: {event} {args[:2]!r}")
        elif event == "open" and args[1] is not None and any(c in str(args[1]) for c in "wax+"):
            path = os.path.realpath(str(args[0])) if isinstance(args[0], (str, bytes, os.PathLike)) else str(args[0])
            if not path.startswith(allowed):
                events.append(f"write: {path}")
        elif event in ("os.remove", "os.rename", "shutil.rmtree", "os.rmdir"):
            events.append(f"{event}: {args[0]!r}")

    import torch, transformers  # noqa: E401  (their own start-up is not the remote code's doing)
    sys.modules["hf_longctx"] = None
    sys.addaudithook(hook)
    model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
    print(json.dumps({"module": type(model).__module__, "events": events}))
    """
)


def test_saved_folder_holds_safetensors_and_only_the_variant_code(variant, tmp_path):
    """Weights are written as safetensors only; the remote code a folder carries is this variant's own files, and
    loading it neither reaches the network nor writes outside transformers' module cache."""
    import hf_longctx

    base = variant.heads["base"]
    config = variant.make_config(**base.config_overrides)
    model = _build(base, config)
    model.save_pretrained(tmp_path / "saved")
    saved = {p.name for p in (tmp_path / "saved").iterdir()}
    assert not {n for n in saved if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}, saved
    assert any(n.endswith(".safetensors") for n in saved), saved
    source = Path(hf_longctx.__file__).parent / "models" / type(model).__module__.split(".")[-2]
    ours = {p.name for p in source.glob("*.py") if p.name != "__init__.py"}
    assert {n for n in saved if n.endswith(".py")} <= ours, f"code from outside {source.name}: {saved - ours}"

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", _AUDIT_SCRIPT, str(tmp_path / "modules"), str(tmp_path / "saved"),
         base.auto_class.__name__], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "transformers_modules" in report["module"], report
    assert report["events"] == [], f"loading the remote code did: {report['events']}"


# ---------------------------------------------------------------- transformers' contracts -----------------------------


def _model_inputs(head, config, seed):
    return {k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(seed)).items()}


def test_return_dict_false_in_the_config_gives_tuples(variant):
    """transformers' heads honour config.return_dict=False; `loss, logits = model(...)` must not bind key names."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = _model_inputs(head, config, 20)
        with torch.no_grad():
            as_dict = model(**inputs)
            model.config.return_dict = False
            as_tuple = model(**inputs)
        assert isinstance(as_tuple, tuple), f"{name}: config.return_dict=False gave {type(as_tuple).__name__}"
        for key, value in zip(as_dict.keys(), as_tuple):
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, as_dict[key], msg=lambda m, k=key: f"{name}.{k}: {m}")


def test_output_flags_in_the_config_are_honoured(variant):
    """config.output_hidden_states returns them; config.output_attentions returns them or raises: never ignored."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides, output_hidden_states=True)
        model = _build(head, config)
        inputs = {k: v for k, v in _model_inputs(head, config, 21).items()
                  if k not in ("labels", "start_positions", "end_positions")}
        with torch.no_grad():
            out = model(**inputs)
        assert out.hidden_states is not None and len(out.hidden_states) >= 2, name
        try:  # refused where the config is set (transformers' rule for sdpa models) or by the forward
            model.config.output_attentions = True
            with torch.no_grad():
                out = model(**inputs)
        except ValueError as err:
            assert "output_attentions" in str(err), err
        else:
            assert out.attentions is not None, f"{name}: config.output_attentions=True was silently ignored"


def test_positional_arguments_bind_as_in_transformers(variant):
    """Code written for transformers' class calls ours positionally: every argument it has sits at its index."""
    import inspect

    for name, head in variant.heads.items():
        if head.reference_class is None:
            continue
        theirs = [p for p in inspect.signature(head.reference_class.forward).parameters if p not in ("self", "kwargs")]
        ours = [p for p in inspect.signature(head.model_class.forward).parameters if p not in ("self", "kwargs")]
        assert ours[: len(theirs)] == theirs, f"{name}: ours {ours} vs {head.reference_class.__name__} {theirs}"


def test_torch_jit_trace_at_short_and_long_lengths(variant):
    """transformers' models trace with torch.jit.trace at any length; ours too (the traced graph is reused only
    at the length it was traced at, as for any traced model)."""
    base = variant.heads["base"]
    config = variant.make_config(**base.config_overrides)
    model = _build(base, config)
    model.config.return_dict = False
    for T in (3, 29):
        ids = torch.randint(3, config.vocab_size, (2, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            traced = torch.jit.trace(model, (ids,), check_trace=False, strict=False)
            torch.testing.assert_close(traced(ids)[0], model(ids)[0], msg=lambda m: f"traced at T={T}: {m}")


# ---------------------------------------------------------------- numerics --------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_stays_finite_on_padding_rows_and_single_tokens(variant, dtype):
    """No NaN or inf in forward or backward in bf16 / fp16 with a row that is all padding, a row that is all global
    (where the variant has global tokens) and a one-token input."""
    config = variant.make_config()
    model = _build(variant.heads["base"], config).to(dtype).train()
    _, batched = variant.padded_inputs(config, torch.Generator().manual_seed(30))
    batched = dict(batched)
    batched["attention_mask"] = batched["attention_mask"].clone()
    batched["attention_mask"][-1] = 0  # the last row is all padding
    if "global_attention_mask" in batched:
        batched["global_attention_mask"] = batched["global_attention_mask"].clone()
        batched["global_attention_mask"][0] = 1  # the first row is all global
    single = {"input_ids": batched["input_ids"][:1, :1]}
    for name, inputs in (("padded batch", batched), ("one token", single)):
        model.zero_grad(set_to_none=True)
        try:
            out = model(**inputs).last_hidden_state
        except RuntimeError as err:  # an op this CPU build has no fp16 kernel for is not a numerics failure
            if dtype == torch.float16 and "not implemented for 'Half'" in str(err):
                pytest.skip(f"fp16 is not supported by this CPU build: {err}")
            raise
        assert torch.isfinite(out.float()).all(), f"{dtype} {name}: non-finite output"
        out.float().square().mean().backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad.float()).all()]
        assert not bad, f"{dtype} {name}: non-finite gradients in {bad[:5]}"


# ---------------------------------------------------------------- initialization --------------------------------------


def _constant_parameters(model) -> list[str]:
    """Parameters of more than one element whose values are all equal, other than LayerNorm's and biases."""
    found = []
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.LayerNorm) or name == "bias" or p.numel() < 2:
                continue  # LayerNorm starts at (1, 0) and biases at 0 by design, as in transformers
            if bool(p.detach().max() == p.detach().min()):
                found.append(f"{module_name}.{name}")
    return found


def test_every_parameter_is_initialized_as_the_config_says(variant):
    """What `Auto*.from_config` builds, as transformers' ModelTesterMixin.test_initialization checks it: no
    parameter left at a constructor constant, and `_init_weights` reaching every module (with every init scale
    in the config set to 1e-10, each parameter's mean is 0 or 1 to 1e-9: a module that `_init_weights` missed
    keeps torch's default init and fails)."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        torch.manual_seed(0)
        model = head.auto_class.from_config(config)
        assert not _constant_parameters(model), f"{name}: left at a constant: {_constant_parameters(model)}"
        tiny = variant.make_config(**head.config_overrides)
        scales = [k for k, v in tiny.to_dict().items()
                  if isinstance(v, float) and (k.endswith("_range") or k.endswith("_std") or k == "init_std")]
        assert scales, f"{name}: no init scale found in {type(tiny).__name__}"
        for key in scales:
            setattr(tiny, key, 1e-10)
        model = head.auto_class.from_config(tiny)
        for pname, p in model.named_parameters():
            mean = round(p.detach().double().mean().item() * 1e9) / 1e9
            assert mean in (0.0, 1.0), f"{name}.{pname}: mean {p.detach().mean().item():.3g} with scales {scales} at 1e-10"


# ---------------------------------------------------------------- generation state ------------------------------------


def test_past_key_values_is_the_cache_or_refused_by_name(variant):
    """transformers 5's own models take the generation state as `past_key_values=` (its older name) too: a model
    that keeps a cache uses it exactly as `cache=`; a head without one refuses it by name, and an encoder refuses
    both names alike. Never swallowed by **kwargs (it was: a decoding step then ran as a fresh sequence)."""
    import inspect

    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        ids = torch.randint(3, config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(40))
        if "cache" not in inspect.signature(head.model_class.forward).parameters:
            with pytest.raises(ValueError, match="past_key_values"):
                model(input_ids=ids, past_key_values=object())
            continue
        try:
            with torch.no_grad():
                state = model(input_ids=ids[:, :-1], use_cache=True).get("cache")
        except ValueError:  # an encoder that refuses use_cache
            state = None
        if state is None:  # an encoder: no generation state under either name
            with pytest.raises(ValueError, match="cache"):
                model(input_ids=ids[:, -1:], past_key_values=object())
            continue
        with torch.no_grad():
            whole = getattr(model(input_ids=ids), head.output)[:, -1]
            steps = {}
            for how in ("cache", "past_key_values"):
                state = model(input_ids=ids[:, :-1], use_cache=True).cache
                steps[how] = getattr(model(input_ids=ids[:, -1:], use_cache=True, **{how: state}), head.output)
            fresh = getattr(model(input_ids=ids[:, -1:]), head.output)[:, -1]
        torch.testing.assert_close(steps["past_key_values"], steps["cache"], rtol=0, atol=0)
        # A cached step continues the sequence (exactly, but for the Reformer's LSH layers, whose re-sorted
        # buckets differ slightly with and without the prefix: close to the whole pass, far from a fresh start).
        assert (steps["cache"][:, -1] - whole).abs().max() < 0.1 * (fresh - whole).abs().max(), name
        other = model(input_ids=ids[:, :1], use_cache=True).cache
        with pytest.raises(ValueError, match="once"):
            model(input_ids=ids[:, -1:], cache=state, past_key_values=other)


# ---------------------------------------------------------------- resize_token_embeddings -----------------------------


@pytest.mark.parametrize("delta", [+7, -5])
def test_resize_token_embeddings_agrees_in_forward_loss_and_save_load(variant, delta, tmp_path):
    """transformers' test_resize_tokens_embeddings: after resizing, the config, the outputs' width, a loss with a
    label from the new range (when larger), and the model reloaded from disk all agree."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        new = config.vocab_size + delta
        model.resize_token_embeddings(new)
        assert model.config.vocab_size == new, name
        assert model.get_input_embeddings().weight.shape[0] == new, name
        inputs = head.make_inputs(model.config, torch.Generator().manual_seed(50))
        ids = inputs["input_ids"].clamp(max=new - 1)
        if delta > 0:
            flat = ids.view(-1)
            flat[int((flat > 3).nonzero()[0])] = new - 1  # a token only the resized table has (not a special one)
        inputs["input_ids"] = ids
        if name in ("causal", "mlm") and "labels" in inputs:
            inputs["labels"] = torch.where(inputs["labels"] == -100, inputs["labels"], ids)
        model.eval()
        with torch.no_grad():
            out = model(**inputs)
        if name in ("causal", "mlm"):
            assert out.logits.shape[-1] == new, f"{name}: logits {out.logits.shape[-1]} wide after resizing to {new}"
        if "labels" in inputs or "start_positions" in inputs:
            assert torch.isfinite(out.loss), name
        model.save_pretrained(tmp_path / f"{name}{delta}")
        loaded = head.auto_class.from_pretrained(tmp_path / f"{name}{delta}").eval()
        assert loaded.config.vocab_size == new, name
        torch.testing.assert_close(_forward(loaded, inputs, head.output), _forward(model, inputs, head.output),
                                   msg=lambda m, n=name: f"{n}: reloaded after resizing: {m}")


# ---------------------------------------------------------------- mixed precision -------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_low_precision_autocast_and_weights_forward_and_backward(variant, mode, dtype):
    """What `--bf16` / `--fp16` / `Trainer(bf16=True)` / `torch.autocast` run, and a model cast to that dtype:
    every head's loss is finite, within rounding of the float32 loss, and every parameter that gets a float32
    gradient gets a finite one. Causal heads also decode under autocast with their cache."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        inputs = head.make_inputs(config, torch.Generator().manual_seed(70))
        model = getattr(_build(head, config), mode)()

        def loss_of(m):
            out = m(**inputs)
            return out.loss if out.get("loss") is not None else out[0].float().square().mean()

        reference = loss_of(model).item()
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype):
            loss = loss_of(model)
        loss.backward()
        assert abs(loss.item() - reference) <= 0.03 * abs(reference) + 1e-3, (name, mode, loss.item(), reference)
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"{name} {mode} autocast: non-finite gradients in {bad[:3]}"
        half = getattr(_build(head, config).to(dtype), mode)()
        loss = loss_of(half)
        loss.float().backward()
        assert abs(loss.item() - reference) <= 0.05 * abs(reference) + 1e-2, (name, mode, dtype, loss.item())
        if name == "causal" and mode == "eval":
            with torch.autocast("cpu", dtype=dtype), torch.no_grad():
                out = model.generate(inputs["input_ids"][:1, :5], max_new_tokens=4, do_sample=False)
            assert out.shape == (1, 9), name


# ---------------------------------------------------------------- padding side ----------------------------------------


def _left_padded(batch: dict) -> dict:
    """The same rows with their padding moved to the front (every (B, T) tensor reordered alike)."""
    real = batch["attention_mask"].bool()
    order = torch.argsort(real.long(), dim=1, stable=True)  # padding columns first, real tokens in order after
    return {k: v.gather(1, order) if isinstance(v, torch.Tensor) and v.shape[:2] == real.shape else v
            for k, v in batch.items()}


def test_per_token_outputs_do_not_depend_on_the_padding_side(variant):
    """A row alone, right-padded and left-padded in a ragged batch: the same outputs at its real tokens, for
    every head (the collator and the README promise it; transformers' generate pads on the left)."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        alone, right = variant.padded_inputs(config, torch.Generator().manual_seed(80))
        if "input_ids" not in alone or head.output not in ("logits", "last_hidden_state") or name == "mc":
            continue
        left = _left_padded(right)
        n = alone["input_ids"].shape[1]
        got = {side: _forward(model, inputs, head.output)[0] for side, inputs in (("right", right), ("left", left))}
        expected = _forward(model, alone, head.output)[0]
        if got["right"].dim() == 1:  # one row of class logits
            per_side = {side: got[side] for side in got}
        else:
            per_side = {side: got[side][inputs["attention_mask"][0].bool()]
                        for side, inputs in (("right", right), ("left", left))}
            assert per_side["left"].shape[0] == n
        for side, value in per_side.items():
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, s=side: f"{name}, {s}-padded: {m}")


def test_left_padded_batched_generate_gives_each_row_its_own_tokens(variant):
    """transformers' generate on a left-padded batch of prompts of different lengths: each row continues exactly
    as it does alone (greedy)."""
    head = variant.heads.get("causal")
    if head is None:
        pytest.skip(f"{variant.name} has no causal head")
    config = variant.make_config(**head.config_overrides)
    model = _build(head, config)
    g = torch.Generator().manual_seed(81)
    prompts = [torch.randint(3, config.vocab_size, (n,), generator=g) for n in (11, 6, 3)]
    width = max(len(p) for p in prompts)
    pad = config.pad_token_id
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.no_grad():
        batched = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        for i, p in enumerate(prompts):
            alone = model.generate(input_ids=p[None], attention_mask=torch.ones(1, len(p), dtype=torch.long), **kwargs)
            assert batched[i, width:].tolist() == alone[0, len(p):].tolist(), f"row {i} ({len(p)} tokens)"


# ---------------------------------------------------------------- torch.compile ---------------------------------------


def _loss(out):
    return out.loss if out.get("loss") is not None else out[0].float().square().mean()


# Whole models through Inductor's C++ code generation: minutes, cold, on 2 cores (tests/conftest.py, the tiers).
inductor = pytest.mark.skipif(not os.environ.get("RUN_INDUCTOR"), reason="Inductor on whole models: RUN_INDUCTOR=1")


def _compiled_matches_eager(head, config, backend, batches, name):
    """Compiled and eager training steps in float64 (no rounding to hide a real difference, none to excuse)."""
    model = _build(head, config).double().train()
    compiled = torch.compile(model, backend=backend)
    for B in batches:
        inputs = {k: (v[:B].double() if v.is_floating_point() else v[:B]) if isinstance(v, torch.Tensor) else v
                  for k, v in head.make_inputs(config, torch.Generator().manual_seed(90)).items()}
        results = []
        # A model with a private generator (the Reformer's LSH rotations, redrawn every training forward) starts
        # both runs from the same state.
        owner = getattr(model, model.base_model_prefix, model)
        state = owner.private_rng_state() if hasattr(owner, "private_rng_state") else None
        for m in (model, compiled):
            model.zero_grad(set_to_none=True)
            if state is not None:
                owner.set_private_rng_state(state)
            loss = _loss(m(**inputs))
            loss.backward()
            results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None}))
        (eager, eager_grads), (got, got_grads) = results
        torch.testing.assert_close(got, eager, rtol=1e-9, atol=1e-10, msg=lambda m: f"{name} {backend} B={B}: {m}")
        # A parameter outside the loss (the base model's pooler) may get a zero gradient from a one-graph compile
        # (AOTAutograd differentiates every output) where eager leaves None: the same update but for weight decay.
        for n in got_grads.keys() - eager_grads.keys():
            assert not got_grads[n].any(), f"{name}: {n} has a gradient only when compiled"
        assert eager_grads.keys() <= got_grads.keys(), name
        for n in eager_grads:
            torch.testing.assert_close(got_grads[n], eager_grads[n], rtol=1e-7, atol=1e-9,
                                       msg=lambda m, n=n: f"{name} {backend} B={B} grad {n}: {m}")


def _training_head(variant) -> str:
    return "causal" if "causal" in variant.heads else next(n for n in variant.heads if n != "base")


@pytest.mark.slow
def test_torch_compile_trains_at_batch_1_and_2_as_eager(variant):
    """`torch.compile` (Dynamo + AOTAutograd, no code generation: seconds, not minutes) of a training step at
    batch 1 and 2: the loss and every gradient equal eager's. The Transformer-XL's strided rel-shift failed at
    batch 2, the Reformer's dropout bits (a dtype view) at run time. Every head: the slow tier."""
    torch._dynamo.reset()
    name = _training_head(variant)
    head = variant.heads[name]
    _compiled_matches_eager(head, variant.make_config(**head.config_overrides), "aot_eager", (1, 2), name)


@pytest.mark.slow
def test_torch_compile_every_head_as_eager(variant):
    torch._dynamo.reset()
    for name, head in variant.heads.items():
        _compiled_matches_eager(head, variant.make_config(**head.config_overrides), "aot_eager", (1, 2), name)


def test_attn_implementation_names_the_op_that_runs(variant, tmp_path):
    """`from_pretrained(..., attn_implementation=NAME)` and `set_attn_implementation`: each name the variant offers
    loads, `config._attn_implementation` says it, and it computes what the default computes (forward in eval,
    gradients in training); any other name is refused with the list of those it offers."""
    head = variant.heads["base"]
    config = variant.make_config(**head.config_overrides)
    model = _build(head, config)
    offered = list(type(model).attn_implementations)
    assert model.config._attn_implementation == offered[0]
    model.save_pretrained(tmp_path)
    inputs = head.make_inputs(config, torch.Generator().manual_seed(3))
    want = _forward(model, inputs, head.output)
    for name in offered:
        loaded = type(model).from_pretrained(tmp_path, attn_implementation=name).eval()
        assert loaded.config._attn_implementation == name
        overrides = variant.cpu_attn_overrides.get(name)
        if overrides:  # the default config is refused by name; with the overrides, it computes what the default does
            with pytest.raises(ValueError, match=f'attn_implementation="{name}" on the CPU'):
                _forward(loaded, inputs, head.output)
            narrow = variant.make_config(**{**head.config_overrides, **overrides})
            default = _build(head, narrow)
            default.save_pretrained(tmp_path / name)
            loaded = type(model).from_pretrained(tmp_path / name, attn_implementation=name).eval()
            torch.testing.assert_close(_forward(loaded, inputs, head.output), _forward(default, inputs, head.output),
                                       rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"attn_implementation={n}: {m}")
            continue
        torch.testing.assert_close(_forward(loaded, inputs, head.output), want, rtol=1e-5, atol=1e-5,
                                   msg=lambda m, n=name: f"attn_implementation={n}: {m}")
    for name in ("flash_attention_2", "flex_attention", "sdpa", "eager"):
        if name in offered:
            continue
        with pytest.raises(ValueError, match=f'no attn_implementation="{name}". It runs "{offered[0]}"'):
            type(model).from_pretrained(tmp_path, attn_implementation=name)
        with pytest.raises(ValueError, match=f'no attn_implementation="{name}"'):
            model.set_attn_implementation(name)
    assert model.config._attn_implementation == offered[0]  # a refused switch changes nothing


@pytest.mark.slow
def test_every_head_compiles_as_one_graph_for_inference(variant):
    """`torch.compile(model, fullgraph=True)`: every head's eval forward is one graph and equals eager, right
    padding included; a variant that must break its graph (`inference_graph_breaks`: the Longformer reads its
    global-token count) is compiled without fullgraph and its breaks counted. An id outside the vocabulary still
    stops the compiled model with an error that names it. Training forwards: the graph breaks
    `torch._dynamo.explain` counts stay within the variant's `train_graph_breaks`."""
    worst = {}
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = {k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(1)).items()}
        if "attention_mask" in inputs and inputs["input_ids"].dim() == 2:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            inputs["attention_mask"][-1, -5:] = 0  # the last row right-padded
        torch._dynamo.reset()
        with torch.no_grad():
            breaks = torch._dynamo.explain(model)(**inputs).graph_break_count
        assert breaks <= variant.inference_graph_breaks, f"{name}: {breaks} graph breaks in inference"
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=variant.inference_graph_breaks == 0, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(getattr(compiled(**inputs), head.output), getattr(model(**inputs), head.output),
                                       rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
            bad = dict(inputs, input_ids=inputs["input_ids"].clone())
            bad["input_ids"][0, ..., 3] = config.vocab_size + 2
            with pytest.raises(RuntimeError, match="outside the vocabulary"):
                compiled(**bad)
        torch._dynamo.reset()
        worst[name] = torch._dynamo.explain(model.train())(**inputs).graph_break_count
    assert max(worst.values()) <= variant.train_graph_breaks, f"training graph breaks per head: {worst}"


@inductor
def test_inductor_compiles_every_head_for_inference(variant):
    """Inductor (the default backend: C++ code generation) on every head in eval equals eager within 1e-5: the
    graph paths (the Longformer's static-shape op, the Transformer-XL's segments at once) go through its code
    generation, not only through Dynamo."""
    for name, head in variant.heads.items():
        config = variant.make_config(**head.config_overrides)
        model = _build(head, config)
        inputs = {k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(1)).items()}
        torch._dynamo.reset()
        with torch.no_grad():
            torch.testing.assert_close(getattr(torch.compile(model)(**inputs), head.output),
                                       getattr(model(**inputs), head.output), rtol=1e-5, atol=1e-5,
                                       msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.slow
def test_dynamic_compile_serves_eight_lengths_with_at_most_two_graphs(variant):
    """`torch.compile(model, dynamic=True)` in eval over 8 lengths (a right-padded row, global tokens where the
    variant has them): each graph compiles at most twice (a length below a chunk or segment may take its own),
    and the outputs of real tokens equal eager's within 1e-5."""
    head = variant.heads["base"]
    config = variant.make_config(**head.config_overrides)
    model = _build(head, config)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting_backend, dynamic=True,
                             fullgraph=variant.inference_graph_breaks == 0)
    first = None
    for T in (5, 9, 13, 21, 30, 41, 50, 63):
        T = min(T, config.max_input_tokens)
        g = torch.Generator().manual_seed(T)
        inputs = {"input_ids": torch.randint(3, config.vocab_size, (2, T), generator=g),
                  "attention_mask": torch.ones(2, T, dtype=torch.long)}
        inputs["attention_mask"][1, T // 2:] = 0
        if "global_attention_mask" in head.make_inputs(config, g):
            inputs["global_attention_mask"] = torch.zeros_like(inputs["attention_mask"])
            inputs["global_attention_mask"][:, 0] = 1
        with torch.no_grad():
            got, want = compiled(**inputs)[0], model(**inputs)[0]
        real = inputs["attention_mask"].bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5, msg=lambda m, T=T: f"T={T}: {m}")
        first = len(graphs) if first is None else first
    # Each graph of the first length (one, or one per piece between graph breaks) compiles at most twice.
    assert len(graphs) <= 2 * first, f"{len(graphs)} compilations over 8 lengths, {first} for the first"


@inductor
def test_torch_compile_with_inductor_trains_with_dropout(variant):
    """Inductor (the default backend, C++ code generation: about a minute per model here, cold) on one head: a
    training step with dropout on runs and gives a finite loss (the Longformer's counter-based dropout failed
    Inductor's C++ compile). The everyday run compiles the dropout ops alone with Inductor (test_fuzz_ops.py)."""
    torch._dynamo.reset()
    head = variant.heads[_training_head(variant)]
    dropout = {k: 0.1 for k in variant.make_config().to_dict() if k in ("hidden_dropout_prob", "dropout")}
    config = variant.make_config(**head.config_overrides, **dropout)
    inputs = head.make_inputs(config, torch.Generator().manual_seed(91))
    loss = _loss(torch.compile(_build(head, config).train())(**inputs))
    loss.backward()
    assert torch.isfinite(loss), f"compiled training with dropout {dropout}: loss {loss}"


# ---------------------------------------------------------------- generate() modes ------------------------------------


def test_generate_modes_run_and_agree(variant):
    """GenerationTesterMixin's modes on the causal head: greedy cached = uncached, sampling reproducible under a
    seed, beam search (its best beam with 1 beam is greedy), num_return_sequences, a streamer that receives exactly
    the generated tokens (the text-generation pipeline: tests/test_pipelines.py, on saved models)."""
    from transformers.generation.streamers import BaseStreamer

    head = variant.heads.get("causal")
    if head is None:
        pytest.skip(f"{variant.name} has no causal head")
    config = variant.make_config(**head.config_overrides)
    model = _build(head, config)
    ids = torch.randint(3, config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(95))
    kwargs = dict(max_new_tokens=5, pad_token_id=config.pad_token_id, eos_token_id=None)
    with torch.no_grad():
        greedy = model.generate(ids, do_sample=False, **kwargs)
        assert greedy.shape == (1, 12)
        if variant.name != "reformer":  # its LSH layers decode a little differently cached (lsh_decode_attention)
            assert torch.equal(model.generate(ids, do_sample=False, use_cache=False, **kwargs), greedy)
        samples = []
        for _ in range(2):
            torch.manual_seed(3)
            samples.append(model.generate(ids, do_sample=True, top_k=10, **kwargs))
        assert torch.equal(*samples)
        assert torch.equal(model.generate(ids, num_beams=1, do_sample=False, **kwargs), greedy)
        beams = model.generate(ids, num_beams=3, num_return_sequences=2, do_sample=False, **kwargs)
        assert beams.shape == (2, 12) and torch.equal(beams[:, :7], ids.expand(2, 7))
        several = model.generate(ids, do_sample=True, num_return_sequences=3, **kwargs)
        assert several.shape == (3, 12)

        class Collect(BaseStreamer):
            def __init__(self):
                self.chunks = []

            def put(self, value):
                self.chunks.append(value.reshape(-1).tolist())

            def end(self):
                self.chunks.append("end")

        streamer = Collect()
        model.generate(ids, do_sample=False, streamer=streamer, **kwargs)
        assert streamer.chunks[0] == ids[0].tolist() and streamer.chunks[-1] == "end"
        assert sum(streamer.chunks[1:-1], []) == greedy[0, 7:].tolist()


# ---------------------------------------------------------------- sequence classification problem types -------------


@pytest.mark.parametrize("problem_type", ["regression", "single_label_classification", "multi_label_classification"])
def test_sequence_classification_problem_types(variant, problem_type):
    """transformers' three problem types, chosen from the config or from the labels: the loss is MSE, cross
    entropy or BCE-with-logits of the head's own logits."""
    import torch.nn.functional as F

    head = variant.heads["seqcls"]
    num_labels = 1 if problem_type == "regression" else 3
    config = variant.make_config(**head.config_overrides, num_labels=num_labels, problem_type=problem_type)
    model = _build(head, config)
    inputs = head.make_inputs(config, torch.Generator().manual_seed(96))
    B = inputs["input_ids"].shape[0]
    g = torch.Generator().manual_seed(97)
    labels = {"regression": torch.randn(B, generator=g),
              "single_label_classification": torch.randint(0, 3, (B,), generator=g),
              "multi_label_classification": torch.randint(0, 2, (B, 3), generator=g).float()}[problem_type]
    with torch.no_grad():
        out = model(**{**inputs, "labels": labels})
    logits = out.logits
    expected = {"regression": lambda: F.mse_loss(logits.squeeze(-1), labels),
                "single_label_classification": lambda: F.cross_entropy(logits, labels),
                "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(logits, labels)}
    torch.testing.assert_close(out.loss, expected[problem_type](), msg=lambda m: f"{problem_type}: {m}")


# ---------------------------------------------------------------- pipelines -------------------------------------------

PIPELINE_TASKS = {"base": "feature-extraction", "causal": "text-generation", "mlm": "fill-mask",
                  "seqcls": "text-classification", "tokcls": "token-classification"}  # transformers 5 has no QA one


def test_pipelines_give_what_the_model_gives(variant, tmp_path):
    """Every head that has a transformers pipeline, saved with the shipped BPE and loaded by the pipeline from the
    folder (through the Auto classes): its answer is the model's own forward or `generate()` on the same ids."""
    from transformers import AutoTokenizer, pipeline

    from hf_longctx.data.tokenizers import causal_prompt_tokenizer, kernel_docs_bpe

    text = "The kernel documentation describes how drivers register."
    for name, head in variant.heads.items():
        if name not in PIPELINE_TASKS:
            continue
        tokenizer = causal_prompt_tokenizer(kernel_docs_bpe()) if name == "causal" else kernel_docs_bpe()
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, "sep_token_id": tokenizer.sep_token_id}
        overrides = {"vocab_size": len(tokenizer), **head.config_overrides}
        config = variant.make_config(**overrides)
        overrides.update({k: v for k, v in ids.items() if hasattr(config, k)})
        config = variant.make_config(**overrides)
        folder = tmp_path / name
        _build(head, config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        run = pipeline(PIPELINE_TASKS[name], model=str(folder), tokenizer=str(folder))
        model = head.auto_class.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompt = f"The kernel {tokenizer.mask_token} drivers." if name == "mlm" else text
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc)
        if name == "base":
            got = torch.tensor(run(prompt))
            torch.testing.assert_close(got, out.last_hidden_state, msg=lambda m: f"feature-extraction: {m}")
        elif name == "causal":
            got = run(prompt, max_new_tokens=6, do_sample=False)[0]["generated_text"]
            with torch.no_grad():
                expected = model.generate(**enc, max_new_tokens=6, do_sample=False)
            assert got == tokenizer.decode(expected[0], skip_special_tokens=True), (got, expected)
        elif name == "mlm":
            got = run(prompt, top_k=2)
            where = enc["input_ids"][0].tolist().index(tokenizer.mask_token_id)
            top = out.logits[0, where].softmax(-1).topk(2)
            assert [r["token"] for r in got] == top.indices.tolist()
            assert [r["score"] for r in got] == pytest.approx(top.values.tolist(), rel=1e-5)
        elif name == "seqcls":
            got = run(prompt)[0]
            probs = out.logits[0].softmax(-1)
            assert got["label"] == model.config.id2label[int(probs.argmax())]
            assert got["score"] == pytest.approx(probs.max().item(), rel=1e-5)
        else:  # token classification: one entry per ordinary token, none for <s> / </s>
            got = run(prompt)
            probs = out.logits[0].softmax(-1)
            special = tokenizer.get_special_tokens_mask(enc["input_ids"][0].tolist(), already_has_special_tokens=True)
            rows = [i for i, s in enumerate(special) if not s]
            assert [r["index"] for r in got] == rows
            assert [r["score"] for r in got] == pytest.approx([probs[i].max().item() for i in rows], rel=1e-5)
