"""Tools for tuning the Longformer op, run from ``hf-longctx bench longformer`` (``--sweep-blocks``,
``--profile``): the block-size sweep the fused path's defaults (``banded_fused._fused_block_sizes``) come from,
and a profiler breakdown of one training step. Not part of a benchmark run.
"""

from __future__ import annotations

import statistics
import time

import torch

from .longformer import attention_flops, build_model, mm_flops, mm_step, model_step, op_inputs, op_step


# --------------------------------------------------------------------------------------------------------------------
# Block-size sweep of the fused op (the defaults in banded_fused._fused_block_sizes come from here)
# --------------------------------------------------------------------------------------------------------------------


def sweep_blocks(T: int, sizes: list[int], repeats: int) -> None:
    """Forward and forward+backward of the op at each block size, interleaved; backward = the difference."""
    from hf_longctx.models.longformer.sliding_window_attention import longformer_attention

    cases = {}
    for b in sizes:
        kwargs, _ = op_inputs(T, with_globals=False)
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        cases[(b, "fwd")] = lambda d=detached, b=b: longformer_attention(**d, block_size=b)
        cases[(b, "fwd+bwd")] = op_step(T, "ours", with_globals=False, block_size=b)
    cases[(0, "mm")] = mm_step(T)
    for f in cases.values():
        f()
    samples = {key: [] for key in cases}
    for _ in range(repeats):
        for key, f in cases.items():
            t0 = time.perf_counter()
            f()
            samples[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(s) for key, s in samples.items()}
    mm_rate = mm_flops(T) / med[(0, "mm")]
    useful = attention_flops(T, 0)
    print(f"T={T}, band only, useful forward FLOPs {useful / 1e9:.2f} G, mm {mm_rate / 1e9:.1f} GFLOP/s")
    print("block  fwd ms  (of mm)  bwd ms  (of mm)  fwd+bwd ms  (of mm)")
    for b in sizes:
        f, fb = med[(b, "fwd")], med[(b, "fwd+bwd")]
        bw = fb - f
        print(f"{b:5d}  {f * 1e3:6.1f}  ({useful / f / mm_rate:4.0%})  {bw * 1e3:6.1f}  ({2 * useful / bw / mm_rate:4.0%})"
              f"  {fb * 1e3:9.1f}  ({3 * useful / fb / mm_rate:4.0%})")


# --------------------------------------------------------------------------------------------------------------------
# Where one training step of ours spends its time (profiler, self time by operator)
# --------------------------------------------------------------------------------------------------------------------


def profile_breakdown(T: int, rounds: int = 3, dropout: float = 0.0) -> None:
    from torch.profiler import profile

    model = build_model("ours", T, dropout)
    step = model_step(model, "ours", T)
    step()
    totals: dict[str, list[float]] = {}
    for _ in range(rounds):
        with profile() as prof:
            step()
        per_op: dict[str, float] = {}
        for e in prof.key_averages():
            per_op[e.key] = per_op.get(e.key, 0.0) + e.self_cpu_time_total / 1e3
        for key, ms in per_op.items():
            totals.setdefault(key, []).append(ms)
    med = {key: statistics.median(v + [0.0] * (rounds - len(v))) for key, v in totals.items()}
    total = sum(med.values())
    groups = {"GEMMs (projections, FFN)": ("aten::mm", "aten::addmm", "aten::bmm"),
              "fused attention kernels": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                          "aten::_scaled_dot_product_flash_attention_for_cpu_backward")}
    print(f"ours, T={T}: {total:.0f} ms of operator self time per step (median of {rounds} profiled steps)")
    rest = dict(med)
    for group, keys in groups.items():
        ms = sum(rest.pop(k, 0.0) for k in keys)
        print(f"  {group:28s} {ms:7.1f} ms  {ms / total:5.1%}")
    print(f"  {'everything else':28s} {sum(rest.values()):7.1f} ms  {sum(rest.values()) / total:5.1%}, of which:")
    for key, ms in sorted(rest.items(), key=lambda kv: -kv[1])[:15]:
        print(f"    {key:60s} {ms:6.1f} ms")
