"""The GPU checks, prepared to run in one command on a lent GPU machine (``tools/gpu_check.sh``).

1. Every head of every variant (the tests' tiny configs) on the device in float32 and bfloat16 against the same
   model in float64 on the CPU: forward and every gradient, a relative error per dtype; bf16 must stay within
   twice PyTorch's own bf16 error of a plain dense attention at the same shapes (flash-attention's rule, as in
   the CPU tests) or within 5e-2 where that is larger.
   The Reformer draws its LSH rotations in the model's dtype, so in float32 and bf16 only its loss is compared.
2. Every head compiled with Inductor (eval; fullgraph where the variant has no inference graph break) on the
   device equals eager within 1e-4 (float32), and one compiled training step per variant gives eager's loss.
3. attn_implementation="flex_attention" (Longformer, Reformer with 1 and 2 hash rounds) against the default on
   the device: eval forward, the model compiled whole, and (not on the CPU, which has no FlexAttention backward)
   training gradients.
4. Longformer speed on the device: our model against transformers' at 4k and 8k tokens (hidden 256, 4 heads, 2
   layers, window 256, batch 1, first token global), training step with the checkpoints' dropout 0.1 and inference,
   interleaved rounds, medians.

Run on a CPU it does the same (``--device cpu``): that is how it was checked before any GPU ran it. Writes
``gpu_check.json`` under ``--out``; the exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _float_inputs(inputs, device, dtype=None):
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            if v.is_floating_point() and dtype is not None:
                v = v.to(dtype)
        out[k] = v
    return out


def _loss(out, inputs):
    """The head's loss; for the base model the real tokens' outputs against fixed random weights (a mean square
    of LayerNorm outputs is nearly constant: its gradients are rounding noise). Padding outputs are not defined,
    so the loss does not read them."""
    if out.get("loss") is not None:
        return out.loss
    hidden = out[0].float()
    weights = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(0)).to(hidden.device)
    mask = inputs["attention_mask"].to(hidden.device)[..., None].float()
    return (hidden * weights * mask).sum() / mask.sum()


def _relative(a, b) -> float:
    """``|a - b| / |b|`` (norms)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def check_heads(device: str, report: dict) -> bool:
    from model_suite import variant_specs

    ok = True
    for name, spec in variant_specs().items():
        for head_name, head in spec.heads.items():
            config = spec.make_config(**head.config_overrides)
            inputs = head.make_inputs(config, torch.Generator().manual_seed(7))
            torch.manual_seed(0)
            reference = head.model_class(config).double().train()
            ref_owner = getattr(reference, reference.base_model_prefix, reference)
            if hasattr(ref_owner, "seed_private_rng"):  # the Reformer: the same rotations in every run below
                ref_owner.seed_private_rng(0)
            ref_inputs = _float_inputs(inputs, "cpu", torch.float64)
            ref_out = reference(**ref_inputs)
            ref_loss = _loss(ref_out, ref_inputs)
            ref_loss.backward()
            ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
            for dtype, bound in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
                key = f"{name}/{head_name}/{str(dtype).split('.')[-1]}"
                try:
                    model = head.model_class(config).to(device=device, dtype=dtype).train()
                    model.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
                    owner = getattr(model, model.base_model_prefix, model)
                    if hasattr(owner, "seed_private_rng"):
                        owner.seed_private_rng(0)
                    dev_inputs = _float_inputs(inputs, device, dtype)
                    out = model(**dev_inputs)
                    loss = _loss(out, dev_inputs)
                    loss.backward()
                    if hasattr(owner, "seed_private_rng") and dtype != torch.float64:
                        # The Reformer draws its LSH rotations in the model's dtype: other buckets than the float64
                        # reference's, so only the loss is compared (the CPU tests compare its ops per dtype).
                        errors = {"loss": abs(float(loss) - float(ref_loss)) / abs(float(ref_loss))}
                        bound = max(bound, 0.1)
                    else:
                        errors = {"forward": _relative(out[0], ref_out[0])}
                    if "forward" in errors:  # every gradient as one vector (a single bias gradient that is 0 in
                        # exact arithmetic, as a QA head's, is all cancellation: per tensor it only measures that)
                        pairs = [(p.grad, ref_grads[n]) for n, p in model.named_parameters()
                                 if n in ref_grads and p.grad is not None]
                        errors["gradients"] = _relative(torch.cat([a.detach().double().cpu().flatten() for a, _ in pairs]),
                                                        torch.cat([b.flatten() for _, b in pairs]))
                    worst = max(errors, key=errors.get)
                    passed = errors[worst] <= bound
                    report[key] = {"worst_relative_error": errors[worst], "where": worst, "bound": bound,
                                   "passed": passed}
                except Exception as err:  # noqa: BLE001 - every failure is reported, the run goes on
                    passed = False
                    report[key] = {"error": f"{type(err).__name__}: {err}"[:500],
                                   "trace": traceback.format_exc()[-1500:]}
                ok &= passed
                print(key, {k: v for k, v in report[key].items() if k != "trace"}, flush=True)
    return ok


def check_compile(device: str, report: dict) -> bool:
    from model_suite import variant_specs

    ok = True
    for name, spec in variant_specs().items():
        for head_name, head in spec.heads.items():
            key = f"compile/{name}/{head_name}"
            try:
                config = spec.make_config(**head.config_overrides)
                torch.manual_seed(0)
                model = head.model_class(config).to(device).eval()
                inputs = _float_inputs({k: v for k, v in head.make_inputs(config, torch.Generator().manual_seed(1))
                                        .items() if k not in ("labels", "start_positions", "end_positions")}, device)
                torch._dynamo.reset()
                # One graph where the variant promises it (the Longformer reads its global-token count outside)
                compiled = torch.compile(model, fullgraph=spec.inference_graph_breaks == 0)
                with torch.no_grad():
                    diff = float((compiled(**inputs)[0] - model(**inputs)[0]).abs().max())
                report[key] = {"max_abs_diff": diff, "passed": diff <= 1e-4}
            except Exception as err:  # noqa: BLE001
                report[key] = {"error": f"{type(err).__name__}: {err}"[:500], "passed": False}
            ok &= report[key]["passed"]
            print(key, report[key], flush=True)
        key = f"compile-train/{name}"
        try:
            head = spec.heads["causal" if "causal" in spec.heads else next(h for h in spec.heads if h != "base")]
            config = spec.make_config(**head.config_overrides)
            torch.manual_seed(0)
            model = head.model_class(config).to(device).train()
            inputs = _float_inputs(head.make_inputs(config, torch.Generator().manual_seed(2)), device)
            owner = getattr(model, model.base_model_prefix, model)
            state = owner.private_rng_state() if hasattr(owner, "private_rng_state") else None
            eager = _loss(model(**inputs), inputs)
            if state is not None:
                owner.set_private_rng_state(state)
            torch._dynamo.reset()
            got = _loss(torch.compile(model)(**inputs), inputs)
            got.backward()
            diff = float((got.detach() - eager.detach()).abs())
            report[key] = {"loss_diff": diff, "passed": diff <= 1e-4}
        except Exception as err:  # noqa: BLE001
            report[key] = {"error": f"{type(err).__name__}: {err}"[:500], "passed": False}
        ok &= report[key]["passed"]
        print(key, report[key], flush=True)
    return ok


def check_flex(device: str, report: dict) -> bool:
    """attn_implementation="flex_attention" against the default ("sdpa") on the device, the Longformer and the
    Reformer base models (the tests' tiny configs, attention dropout 0, the Reformer with 1 and 2 hash rounds):
    eval forward, and where the device has a FlexAttention backward (not the CPU) the training loss and every
    gradient; then the model compiled whole with flex_attention equals eager."""
    from model_suite import variant_specs

    specs = variant_specs()
    ok = True
    cases = [("longformer", {}), ("reformer", {"num_hashes": 1})]
    if device != "cpu":  # the compiled CPU kernel returns no log-sum-exp: one hash round there (refused by name)
        cases.append(("reformer", {"num_hashes": 2}))
    for name, overrides in cases:
        key = f"flex/{name}" + "".join(f"/{k}={v}" for k, v in overrides.items())
        try:
            spec = specs[name]
            head = spec.heads["base"]
            config = spec.make_config(**head.config_overrides, **overrides)
            inputs = _float_inputs(head.make_inputs(config, torch.Generator().manual_seed(4)), device)
            models = {}
            for impl in ("sdpa", "flex_attention"):
                torch.manual_seed(0)
                models[impl] = head.model_class(config).to(device)
                models[impl].set_attn_implementation(impl)
                owner = getattr(models[impl], models[impl].base_model_prefix, models[impl])
                if hasattr(owner, "seed_private_rng"):
                    owner.seed_private_rng(0)
            errors = {}
            with torch.no_grad():
                errors["forward"] = _relative(models["flex_attention"].eval()(**inputs)[0],
                                              models["sdpa"].eval()(**inputs)[0])
                compiled = torch.compile(models["flex_attention"])
                errors["compiled forward"] = _relative(compiled(**inputs)[0], models["sdpa"](**inputs)[0])
            if device != "cpu":  # FlexAttention has no CPU backward (refused there by name)
                grads = {}
                for impl, model in models.items():
                    model.train()
                    _loss(model(**inputs), inputs).backward()
                    grads[impl] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
                errors["gradients"] = _relative(grads["flex_attention"], grads["sdpa"])
            worst = max(errors, key=errors.get)
            report[key] = {"relative_errors": errors, "passed": errors[worst] <= 1e-4}
        except Exception as err:  # noqa: BLE001 - every failure is reported, the run goes on
            report[key] = {"error": f"{type(err).__name__}: {err}"[:500], "trace": traceback.format_exc()[-1500:],
                           "passed": False}
        ok &= report[key]["passed"]
        print(key, {k: v for k, v in report[key].items() if k != "trace"}, flush=True)
    return ok


def bench_longformer(device: str, lengths, rounds: int, report: dict) -> None:
    from hf_longctx.benchmarks.longformer import build_model

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for mode, dropout in (("train", 0.1), ("eval", 0.0)):
        for T in lengths:
            models = {impl: build_model(impl, T, dropout).to(device).train(mode == "train")
                      for impl in ("ours", "transformers")}
            ids = torch.randint(3, 1000, (1, T), device=device)
            glob = torch.zeros(1, T, dtype=torch.long, device=device)
            glob[:, 0] = 1
            times = {impl: [] for impl in models}

            def step(model):
                if mode == "train":
                    model(input_ids=ids, global_attention_mask=glob)[0].float().square().mean().backward()
                else:
                    with torch.no_grad():
                        model(input_ids=ids, global_attention_mask=glob)

            for model in models.values():
                step(model)  # warm-up
            for _ in range(rounds):
                for impl, model in models.items():
                    sync()
                    t = time.perf_counter()
                    step(model)
                    sync()
                    times[impl].append(time.perf_counter() - t)
            med = {impl: statistics.median(ts) for impl, ts in times.items()}
            report[f"bench/longformer/{mode}/{T}"] = {"median_s": med, "transformers_over_ours":
                                                      med["transformers"] / med["ours"]}
            print(f"bench longformer {mode} T={T}", report[f"bench/longformer/{mode}/{T}"], flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="gpu_check_results")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["heads", "compile", "flex", "bench"])
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; pass --device cpu to run the checks on the CPU", file=sys.stderr)
        return 2
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__}
    ok = True
    if "heads" not in args.skip:
        ok &= check_heads(args.device, report)
    if "compile" not in args.skip:
        ok &= check_compile(args.device, report)
    if "flex" not in args.skip:
        ok &= check_flex(args.device, report)
    if "bench" not in args.skip:
        bench_longformer(args.device, args.lengths, args.rounds, report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("passed") is False]
    print(f"gpu_check: {len(failed)} failed" + (f": {failed}" if failed else "") + f"; report in {out}/gpu_check.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
