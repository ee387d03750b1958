"""Inference through onnxruntime (our ONNX export) against our eager model and the anchor, eval mode, batch 1,
one thread, interleaved rounds, medians.

    python benchmarks/onnx_inference.py [--variant longformer|reformer|transfo-xl] [--lengths 4096 8192]

Shapes: the `hf-longctx bench` modules'. Longformer: hidden 256, 4 heads of 64, 2 layers, window 256, the first
token global; anchor transformers' LongformerModel with the same weights. Reformer (causal LM): hidden 256, 4
heads of 64, local/LSH, chunk 64, 1 hash, 256 buckets, axial positions for 8,192; anchor transformers'
ReformerModelWithLMHead (same config, its own weights: a speed anchor). Transformer-XL (causal LM): d 256, 4 layers,
4 heads of 64, segment 256, memory 256, the whole document in one call; anchor GPT-2 of the same width and depth
reading the whole document with dense SDPA attention (transformers has no Transformer-XL any more).

The export is checked by `to_onnx` itself (onnxruntime vs eager at three unseen lengths up to 4x the export
length); this script also reports the largest difference over real tokens at each benchmarked length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from hf_longctx.benchmarks.longformer import build_model
from hf_longctx.onnx_export import real_difference, to_onnx


def build(variant: str, longest: int):
    """(ours, anchor, the anchor's name, the inputs of both at length T)."""
    if variant == "longformer":
        ours, anchor = build_model("ours", longest).eval(), build_model("transformers", longest).eval()

        def feed(T):
            glob = torch.zeros(1, T, dtype=torch.long)
            glob[:, 0] = 1
            ids = torch.randint(3, ours.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
            return {"input_ids": ids, "attention_mask": torch.ones(1, T, dtype=torch.long),
                    "global_attention_mask": glob}

        return ours, anchor, "transformers' Longformer", feed
    if variant == "reformer":
        from hf_longctx.benchmarks.reformer import build as reformer

        ours, anchor = reformer("ours1", longest).eval(), reformer("theirs1", longest).eval()

        def feed(T):
            ids = torch.randint(0, ours.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
            return {"input_ids": ids, "attention_mask": torch.ones(1, T, dtype=torch.long)}

        return ours, anchor, "transformers' Reformer", feed
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_longctx.benchmarks import transfo_xl as bench

    ours = bench.build("ours").eval()
    config = GPT2Config(vocab_size=bench.VOCAB, n_embd=bench.D_MODEL, n_layer=bench.LAYERS, n_head=bench.HEADS,
                        n_inner=bench.FFN, n_positions=longest, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    anchor = GPT2LMHeadModel(config).eval()

    def feed(T):
        ids = torch.randint(0, bench.VOCAB, (1, T), generator=torch.Generator().manual_seed(T))
        return {"input_ids": ids, "attention_mask": torch.ones(1, T, dtype=torch.long)}

    return ours, anchor, "GPT-2 (dense SDPA over the whole document)", feed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="longformer", choices=["longformer", "reformer", "transfo-xl"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="output path without suffix (default: benchmarks/results/onnx_<variant>)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    longest = max(args.lengths)
    ours, theirs, anchor_name, feed_inputs = build(args.variant, longest)
    folder = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    check = to_onnx(ours, folder / "model.onnx")
    export_seconds = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rows = []
    names = list(check["inputs"])
    for T in args.lengths:
        inputs = feed_inputs(T)
        feed = {n: inputs[n].numpy() for n in names}
        runs = {
            "onnxruntime": lambda: session.run(None, feed)[0],
            "ours (eager)": lambda: ours(**inputs)[0],
            "anchor (eager)": lambda: theirs(**inputs)[0],
        }
        times = {name: [] for name in runs}
        with torch.no_grad():
            want = ours(**inputs)[0]
            diff = real_difference(torch.from_numpy(session.run(None, feed)[0]), want, inputs["attention_mask"])
            for name, run in runs.items():  # one warm-up each
                run()
            for _ in range(args.rounds):  # interleaved
                for name, run in runs.items():
                    t = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append({"length": T, "median_s": medians, "onnx_vs_eager_max_abs_diff": diff,
                     "anchor_over_onnxruntime": medians["anchor (eager)"] / medians["onnxruntime"],
                     "ours_over_onnxruntime": medians["ours (eager)"] / medians["onnxruntime"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"variant": args.variant, "anchor": anchor_name, "export_seconds": export_seconds,
              "export_check": check, "rounds": args.rounds, "rows": rows, "torch": torch.__version__,
              "onnxruntime": ort.__version__}
    out = Path(args.out or f"benchmarks/results/onnx_{args.variant.replace('-', '_')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# {args.variant} inference: onnxruntime vs eager (batch 1, eval, 1 thread; shapes: "
             "benchmarks/onnx_inference.py)", "",
             f"Export + onnxruntime check: {export_seconds:.0f} s; check at lengths {check['lengths']} "
             f"(exported at {check['export_length']}). Medians of {args.rounds} interleaved rounds. Anchor: "
             f"{anchor_name}.", "",
             "| length | onnxruntime | ours eager | anchor eager | ours / ORT | anchor / ORT | max diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['length']} | {m['onnxruntime'] * 1e3:.0f} ms | {m['ours (eager)'] * 1e3:.0f} ms | "
                     f"{m['anchor (eager)'] * 1e3:.0f} ms | {r['ours_over_onnxruntime']:.2f}x | "
                     f"{r['anchor_over_onnxruntime']:.2f}x | {r['onnx_vs_eager_max_abs_diff']:.1e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
