"""Where a Transformer-XL training step's time goes, against its FLOP bound (the target: at most 1.35x).

`hf-longctx bench transfo-xl` reports a training step (segment 256 + memory 256, batch 4, d_model 256, 4 layers,
4 heads of 64, FFN 1024, one thread) as a multiple of ``FLOPs / rate``, the rate being one hot ``torch.mm`` of
(1024, 256) @ (256, 1024) timed in the same rounds. This script splits that multiple in two by profiling one step:

- the matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm`` and their in-place forms), whose share is what the
  step would cost if every other operation took no time at all;
- everything else (softmax, LayerNorm, the relative shift, ReLU, copies, the loss).

It also times every matrix-product shape of the step on its own, hot (the same call repeated on the same operands),
to show how much of the products' excess comes from running inside a model (operands fresh from the previous
operation, outputs newly allocated) rather than from the shapes themselves. Profiled times include the profiler's
small per-call cost; the unprofiled step times are medians of steps interleaved with the anchor.

    python benchmarks/transfo_xl_breakdown.py --out benchmarks/results/transfo_xl_breakdown.md
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hf_longctx.benchmarks.harness import load_average, machine_info
from hf_longctx.benchmarks.transfo_xl import build, mm_flops, mm_step, ours_train_flops, train_step

GEMMS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::addmm_"}


def gemm_flops(name: str, shapes: list) -> float:
    """FLOPs of one call from its recorded input shapes (2 per multiply-add)."""
    if name in ("aten::mm",):
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2.0 * m * k * n
    if name in ("aten::addmm", "aten::addmm_"):
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2.0 * m * k * n
    if name == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2.0 * b * m * k * n
    (b, m, k), (_, _, n) = shapes[1], shapes[2]  # baddbmm(input, batch1, batch2)
    return 2.0 * b * m * k * n


def isolated_ms(name: str, shapes: list, repeats: int) -> float:
    """Median ms of one hot call of this product with these shapes."""
    if name == "aten::mm":
        a, b = torch.randn(shapes[0]), torch.randn(shapes[1])
        fn = lambda: torch.mm(a, b)  # noqa: E731
    elif name in ("aten::addmm", "aten::addmm_"):
        c, a, b = torch.randn(shapes[0]), torch.randn(shapes[1]), torch.randn(shapes[2])
        fn = lambda: torch.addmm(c, a, b)  # noqa: E731
    elif name == "aten::bmm":
        a, b = torch.randn(shapes[0]), torch.randn(shapes[1])
        fn = lambda: torch.bmm(a, b)  # noqa: E731
    else:
        c, a, b = torch.randn(shapes[0]), torch.randn(shapes[1]), torch.randn(shapes[2])
        fn = lambda: torch.baddbmm(c, a, b)  # noqa: E731
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds of (step, anchor mm)")
    p.add_argument("--out", default="transfo_xl_breakdown.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    load_before = load_average()

    model = build("ours")
    step, mm = train_step(model, "ours"), mm_step()
    for _ in range(2):
        step()
        mm()
    steps, mms = [], []
    for _ in range(args.rounds):
        gc.collect()
        t0 = time.perf_counter()
        step()
        steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(10):
            mm()
        mms.append((time.perf_counter() - t0) / 10)
    step_s, mm_s = statistics.median(steps), statistics.median(mms)
    rate = mm_flops() / mm_s  # FLOP/s of the hot anchor GEMM
    needed = ours_train_flops()

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    events = prof.key_averages(group_by_input_shape=True)
    total_us = sum(e.self_cpu_time_total for e in events)
    by_shape = defaultdict(lambda: [0, 0.0, 0.0])  # (name, shapes) -> calls, self us, flops
    for e in events:
        if e.key in GEMMS:
            shapes = [list(s) for s in e.input_shapes]
            key = (e.key, repr([s for s in shapes if s]))
            row = by_shape[key]
            row[0] += e.count
            row[1] += e.self_cpu_time_total
            row[2] += e.count * gemm_flops(e.key, shapes)
            row.append(shapes)
    gemm_us = sum(r[1] for r in by_shape.values())
    gemm_flop = sum(r[2] for r in by_shape.values())

    rows = []
    for (name, _), (calls, us, flops, *rest) in sorted(by_shape.items(), key=lambda kv: -kv[1][1]):
        hot = isolated_ms(name, rest[0], 15)
        rows.append((name, rest[0], calls, us / 1e3, hot * calls, flops / (us / 1e6) / 1e9))
    hot_total_ms = sum(r[4] for r in rows)

    scale = step_s * 1e6 / total_us  # profiled -> unprofiled time
    info = machine_info()
    ideal_s = needed / rate
    lines = [
        "# Transformer-XL training step: matrix products against everything else",
        "",
        f"`python benchmarks/transfo_xl_breakdown.py` on {info['date']}: {info['cpu']} ({info['logical_cpus']} "
        f"logical CPUs), 1 thread, torch {info['torch']}, transformers {info['transformers']}; load {load_before} -> "
        f"{load_average()}; {args.rounds} interleaved rounds of (step, 10 anchor GEMMs).",
        "",
        "Ours, train mode, dropout 0 (the benchmark's step): segment 256 + memory 256, batch 4, d_model 256, 4 layers, "
        "4 heads of 64, FFN 1024, byte vocabulary.",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| training step (median, unprofiled) | {step_s * 1e3:.0f} ms |",
        f"| anchor GEMM (1024,256)@(256,1024), hot | {mm_s * 1e3:.2f} ms = {rate / 1e9:.1f} GFLOP/s |",
        f"| FLOPs the step needs (the benchmark's count) | {needed / 1e9:.2f} GFLOP |",
        f"| FLOP bound: needed / anchor rate | {ideal_s * 1e3:.0f} ms |",
        f"| **step / FLOP bound** (target: <= 1.35) | **{step_s / ideal_s:.2f}** |",
        f"| FLOPs the matrix products compute (recorded shapes) | {gemm_flop / 1e9:.2f} GFLOP "
        f"({gemm_flop / needed:.2f}x the needed count: dense causal blocks, the rel-shift's extra column) |",
        f"| profiled step: matrix products / everything else | {gemm_us / 1e3:.0f} ms / "
        f"{(total_us - gemm_us) / 1e3:.0f} ms ({gemm_us / total_us:.0%} products) |",
        f"| matrix products alone, scaled to the unprofiled step | {gemm_us * scale / 1e3:.0f} ms = "
        f"**{gemm_us * scale / 1e6 / ideal_s:.2f}x** the FLOP bound |",
        f"| the same products called hot, one shape at a time | {hot_total_ms:.0f} ms = "
        f"{hot_total_ms / 1e3 / ideal_s:.2f}x the FLOP bound |",
        "",
        "Every matrix-product shape of one step (profiled), against the same call repeated hot:",
        "",
        "| op | shapes | calls | in the step (ms) | hot (ms) | in-step GFLOP/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {n} | {s} | {c} | {ms:.1f} | {hot:.1f} | {gf:.1f} |" for n, s, c, ms, hot, gf in rows]
    others = defaultdict(lambda: [0, 0.0])  # everything else, by operation
    for e in events:
        if e.key not in GEMMS:
            others[e.key][0] += e.count
            others[e.key][1] += e.self_cpu_time_total
    lines += ["", "Everything else, the ten largest by profiled self time:", "", "| op | calls | ms |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {calls} | {us / 1e3:.1f} |"
              for name, (calls, us) in sorted(others.items(), key=lambda kv: -kv[1][1])[:10]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
