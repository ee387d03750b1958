"""FlexAttention (``attn_implementation="flex_attention"``) against our default ops on this CPU: inference (no
gradients; PyTorch has no FlexAttention backward on the CPU), one thread, interleaved rounds, medians; the compile
of each new length reported apart.

    python benchmarks/flex_attention.py [--lengths 4096 8192 16384] [--rounds 7] [--out benchmarks/results/flex_attention]

Ops, 4 heads x 64, batch 1, float32: the Longformer's attention, window 128 on each side, without global tokens
and with the first token global (:func:`longformer_attention` against :func:`longformer_attention_flex`); the
Reformer's LSH attention, one hash round, chunks of 64, 128 buckets (:func:`lsh_attention` against
:func:`lsh_attention_flex`). Both sides get the same inputs and must agree within 1e-4.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hf_longctx.models.longformer.flex import longformer_attention_flex
from hf_longctx.models.longformer.sliding_window_attention import global_token_index, longformer_attention
from hf_longctx.models.reformer.flex import lsh_attention_flex
from hf_longctx.models.reformer.lsh_attention import lsh_attention, lsh_buckets, random_rotations

H, D, WINDOW, CHUNK, BUCKETS = 4, 64, 128, 64, 128


def longformer_case(T: int, with_global: bool):
    g = torch.Generator().manual_seed(T)
    q, k, v, kg, vg = (torch.randn(1, H, T, D, generator=g) for _ in range(5))
    q = q / D**0.5
    real = torch.ones(1, T, dtype=torch.bool)
    kwargs = dict(left=WINDOW, right=WINDOW, attention_mask=real)
    if with_global:
        glob = torch.zeros(1, T, dtype=torch.bool)
        glob[0, 0] = True
        index = global_token_index(glob)[0]
        q_global = q.gather(2, index[:, None, :, None].expand(1, H, 1, D))
        kwargs.update(global_mask=glob, q_global=q_global, k_global=kg, v_global=vg)
    return (lambda: longformer_attention(q, k, v, **kwargs)), (lambda: longformer_attention_flex(q, k, v, **kwargs))


def reformer_case(T: int):
    g = torch.Generator().manual_seed(T)
    qk, v = (torch.randn(1, H, T, D, generator=g) for _ in range(2))
    buckets = lsh_buckets(qk, random_rotations(H, D, 1, BUCKETS, torch.Generator().manual_seed(0)), BUCKETS)
    return (lambda: lsh_attention(qk, v, buckets, CHUNK)), (lambda: lsh_attention_flex(qk, v, buckets, CHUNK))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/flex_attention")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for T in args.lengths:
        cases = {"longformer": longformer_case(T, False), "longformer, 1 global": longformer_case(T, True),
                 "reformer LSH, 1 hash": reformer_case(T)}
        for name, (ours, flex) in cases.items():
            with torch.no_grad():
                t = time.perf_counter()
                got = flex()  # the compile of this length
                compile_s = time.perf_counter() - t
                diff = float((got - ours()).abs().max())
                assert diff <= 1e-4, f"{name} at {T}: flex differs from ours by {diff}"
                times = {"ours": [], "flex": []}
                for _ in range(args.rounds):
                    for side, fn in (("ours", ours), ("flex", flex)):
                        t = time.perf_counter()
                        fn()
                        times[side].append(time.perf_counter() - t)
            med = {side: statistics.median(ts) for side, ts in times.items()}
            row = {"op": name, "T": T, "ours_ms": med["ours"] * 1e3, "flex_ms": med["flex"] * 1e3,
                   "flex_over_ours": med["flex"] / med["ours"], "compile_s": compile_s, "max_abs_diff": diff}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "torch": torch.__version__, "threads": 1,
                                                    "rounds": args.rounds}, indent=2))
    lines = ["# FlexAttention against our default ops, CPU inference, one thread, medians of interleaved rounds", "",
             f"{H} heads x {D}, batch 1, float32; Longformer window {WINDOW} each side; Reformer 1 hash, chunks of "
             f"{CHUNK}, {BUCKETS} buckets. `python benchmarks/flex_attention.py`.", "",
             "| op | tokens | ours (default) | flex_attention | flex / ours | first call (compile) | max abs diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['T']:,} | {r['ours_ms']:.1f} ms | {r['flex_ms']:.1f} ms | "
                     f"{r['flex_over_ours']:.2f}x | {r['compile_s']:.1f} s | {r['max_abs_diff']:.1e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
