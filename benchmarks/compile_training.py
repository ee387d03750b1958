"""Compiled (Inductor) against eager training steps, ours and the anchors, in train mode, one thread,
interleaved rounds, medians; compile time reported apart.

    python benchmarks/compile_training.py [--rounds 5] [--out benchmarks/results/compile_training]

Shapes (the `hf-longctx bench` modules' builders, shorter lengths so that a cold compile fits in minutes):
Longformer hidden 256, 4 heads, 2 layers, window 256, 2,048 tokens, batch 1, first token global, dropout 0.1 (the
checkpoints') and 0; Reformer hidden 256, 4 heads of 64, local/LSH, chunk 64, 1 hash, 2,048 tokens, the config's
default dropout and 0; Transformer-XL segment 256 + memory 256 against GPT-2 at 512, dropout 0 (the Transformer-XL
benchmark's set-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def longformer(impl: str, dropout: float, T: int = 2048):
    from hf_longctx.benchmarks.longformer import build_model

    model = build_model("ours" if impl == "ours" else "transformers", T, dropout).train()
    ids = torch.randint(3, 1000, (1, T), generator=torch.Generator().manual_seed(1))
    glob = torch.zeros(1, T, dtype=torch.long)
    glob[:, 0] = 1
    return model, lambda m: m(input_ids=ids, global_attention_mask=glob)[0].float().square().mean()


def reformer(impl: str, dropout: float | None, T: int = 2048):
    from hf_longctx.benchmarks.reformer import VOCAB, build

    model = build("ours1" if impl == "ours" else "theirs1", T).train()
    if dropout is not None:
        for name in ("hidden_dropout_prob", "lsh_attention_probs_dropout_prob", "local_attention_probs_dropout_prob"):
            setattr(model.config, name, dropout)
        model = type(model)(model.config).train()
    ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(1))
    return model, lambda m: m(input_ids=ids, labels=ids).loss


def transfo_xl(impl: str, dropout: float | None):
    from hf_longctx.benchmarks import transfo_xl as bench

    model = bench.build("ours" if impl == "ours" else "gpt2").train()
    g = torch.Generator().manual_seed(1)
    if impl == "ours":
        ids = torch.randint(0, bench.VOCAB, (bench.BATCH, bench.SEGMENT), generator=g)
        with torch.no_grad():
            mems = model(torch.randint(0, bench.VOCAB, (bench.BATCH, bench.MEM), generator=g)).mems
        return model, lambda m: m(ids, mems=mems, labels=ids).loss
    ids = torch.randint(0, bench.VOCAB, (bench.BATCH, bench.CONTEXT), generator=g)
    return model, lambda m: m(ids, labels=ids).loss


CASES = [  # (variant, builder, dropout label, dropout value; None = the config's default)
    ("longformer", longformer, "dropout 0.1", 0.1),
    ("longformer", longformer, "dropout 0", 0.0),
    ("reformer", reformer, "config dropout", None),
    ("reformer", reformer, "dropout 0", 0.0),
    ("transfo-xl", transfo_xl, "dropout 0", None),
]
ANCHOR = {"longformer": "transformers' Longformer", "reformer": "transformers' Reformer", "transfo-xl": "GPT-2"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/compile_training")
    parser.add_argument("--only", nargs="*", help="variants to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for variant, builder, label, dropout in CASES:
        if args.only and variant not in args.only:
            continue
        steps, compile_s, errors = {}, {}, {}
        for impl in ("ours", "anchor"):
            model, loss = builder(impl, dropout)
            compiled = torch.compile(model)

            def run(m, model=model, loss=loss):
                loss(m).backward()
                model.zero_grad(set_to_none=True)

            steps[(impl, "eager")] = lambda run=run, model=model: run(model)
            t = time.perf_counter()
            try:
                run(compiled)  # the cold compile
                run(compiled)
                steps[(impl, "compiled")] = lambda run=run, compiled=compiled: run(compiled)
            except Exception as err:  # noqa: BLE001 - reported in the table as "does not compile"
                errors[impl] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            compile_s[impl] = time.perf_counter() - t
            steps[(impl, "eager")]()  # warm-up
        times = {key: [] for key in steps}
        for _ in range(args.rounds):
            for key, step in steps.items():
                t = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t)
        med = {f"{i} {m}": statistics.median(ts) for (i, m), ts in times.items()}
        row = {"variant": variant, "mode": label, "median_s": med, "compile_s": compile_s, "errors": errors}
        for impl in ("ours", "anchor"):
            if f"{impl} compiled" in med:
                row[f"{impl}_compiled_speedup"] = med[f"{impl} eager"] / med[f"{impl} compiled"]
        row["eager_ratio"] = med["anchor eager"] / med["ours eager"]
        if "ours compiled" in med and "anchor compiled" in med:
            row["compiled_ratio"] = med["anchor compiled"] / med["ours compiled"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch._dynamo.reset()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "torch": torch.__version__, "threads": 1}, indent=2))
    lines = ["# Compiled (Inductor) vs eager training steps, one thread, medians of interleaved rounds", "",
             "| variant | mode | ours eager | ours compiled | speed-up | anchor | anchor eager | anchor compiled | "
             "speed-up | anchor / ours, eager | anchor / ours, compiled |", "|" + "---|" * 11]
    for r in rows:
        m = r["median_s"]

        def ms(key):
            return f"{m[key] * 1e3:.0f} ms" if key in m else "does not compile"

        def x(key):
            return f"{r[key]:.2f}x" if key in r else "-"

        lines.append(f"| {r['variant']} | {r['mode']} | {ms('ours eager')} | {ms('ours compiled')} | "
                     f"{x('ours_compiled_speedup')} | {ANCHOR[r['variant']]} | {ms('anchor eager')} | "
                     f"{ms('anchor compiled')} | {x('anchor_compiled_speedup')} | {x('eager_ratio')} | "
                     f"{x('compiled_ratio')} |")
    for r in rows:
        for impl, err in r["errors"].items():
            lines.append(f"\n{r['variant']} ({r['mode']}), {impl}: does not compile: {err}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
