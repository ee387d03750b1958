"""Long-document classification: a small Longformer on Linux kernel documentation topics (6 classes).

    python examples/classify_kernel_docs.py            # ~5 minutes on 2 CPU cores
    python examples/classify_kernel_docs.py --quick    # a few steps on a few documents: checks the script runs

Documents are up to 1,024 tokens (about 40% of them are longer and get truncated); the first token is global.
The trained model, its tokenizer and a summary land in OUTPUT_DIR/model; `hf-longctx export` makes it Hub-ready.
"""

import argparse

from hf_longctx.train import train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--output-dir", default="runs/example-kernel-docs")
parser.add_argument("--quick", action="store_true")
args = parser.parse_args()

quick = dict(max_length=128, max_steps=2, max_train_samples=8, max_eval_samples=8) if args.quick else {}
summary = train("kernel-docs", args.output_dir, **{
    "preset": "small", "max_length": 1024, "epochs": 2, "batch_size": 4, "learning_rate": 1e-3,
    "overwrite": True,  # replaces an earlier run of this example only; train() never deletes any other folder
    **quick,
})
for row in summary["results"]:
    print(f"test {row['metric']}: {row['value']:.3f}")
print(f"model: {args.output_dir}/model")
