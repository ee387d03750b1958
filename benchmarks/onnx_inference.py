"""Longformer inference through onnxruntime (our ONNX export) against our eager model and transformers' eager
``LongformerModel``, all with the same weights, at the `hf-longctx bench longformer` shape (hidden 256, 4 heads of
64, 2 layers, window 256, batch 1, the first token global), eval mode, one thread, interleaved rounds, medians.

    python benchmarks/onnx_inference.py [--lengths 4096 8192] [--rounds 5] [--out benchmarks/results/onnx_longformer]

The export is checked by `to_onnx` itself (onnxruntime vs eager at three unseen lengths up to 4x the export
length); this script also reports the largest difference at each benchmarked length.
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
from hf_longctx.onnx_export import to_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/onnx_longformer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    longest = max(args.lengths)
    ours, theirs = build_model("ours", longest).eval(), build_model("transformers", longest).eval()
    folder = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    check = to_onnx(ours, folder / "model.onnx")
    export_seconds = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rows = []
    for T in args.lengths:
        g = torch.Generator().manual_seed(T)
        ids = torch.randint(3, ours.config.vocab_size, (1, T), generator=g)
        mask = torch.ones(1, T, dtype=torch.long)
        glob = torch.zeros(1, T, dtype=torch.long)
        glob[:, 0] = 1
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "global_attention_mask": glob.numpy()}
        runs = {
            "onnxruntime": lambda: session.run(None, feed)[0],
            "ours (eager)": lambda: ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob)[0],
            "transformers (eager)": lambda: theirs(input_ids=ids, attention_mask=mask,
                                                   global_attention_mask=glob)[0],
        }
        times = {name: [] for name in runs}
        with torch.no_grad():
            want = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob)[0]
            diff = float((torch.from_numpy(session.run(None, feed)[0]) - want).abs().max())
            for name, run in runs.items():  # one warm-up each
                run()
            for _ in range(args.rounds):  # interleaved
                for name, run in runs.items():
                    t = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append({"length": T, "median_s": medians, "onnx_vs_eager_max_abs_diff": diff,
                     "transformers_over_onnxruntime": medians["transformers (eager)"] / medians["onnxruntime"],
                     "ours_over_onnxruntime": medians["ours (eager)"] / medians["onnxruntime"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"shape": "hidden 256, 4 heads x 64, 2 layers, window 256, batch 1, token 0 global, eval, 1 thread",
              "export_seconds": export_seconds, "export_check": check, "rounds": args.rounds, "rows": rows,
              "torch": torch.__version__, "onnxruntime": ort.__version__}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Longformer inference: onnxruntime vs eager ({result['shape']})", "",
             f"Export + onnxruntime check: {export_seconds:.0f} s; check at lengths {check['lengths']} "
             f"(exported at {check['export_length']}). Medians of {args.rounds} interleaved rounds.", "",
             "| length | onnxruntime | ours eager | transformers eager | ours / ORT | transformers / ORT | max diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['length']} | {m['onnxruntime'] * 1e3:.0f} ms | {m['ours (eager)'] * 1e3:.0f} ms | "
                     f"{m['transformers (eager)'] * 1e3:.0f} ms | {r['ours_over_onnxruntime']:.2f}x | "
                     f"{r['transformers_over_onnxruntime']:.2f}x | {r['onnx_vs_eager_max_abs_diff']:.1e} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
