"""Long-document classification: a small Longformer on Linux kernel documentation topics (6 classes).

    python examples/classify_kernel_docs.py            # ~5 minutes on 2 CPU cores
    python examples/classify_kernel_docs.py --quick    # a few steps on a few documents: checks the script runs

Documents are up to 1,024 tokens (about 40% of them are longer and get truncated); the first token is global.
The trained model, its tokenizer and a summary land in OUTPUT_DIR/model; `hf-longctx export` makes it Hub-ready.
"""

import argparse
import sys

from hf_longctx.train import TrainError, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--output-dir", default="runs/example-kernel-docs")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
args = parser.parse_args()

quick = dict(max_length=128, max_steps=2, max_train_samples=8, max_eval_samples=8) if args.quick else {}
try:
    summary = train("kernel-docs", args.output_dir, **{
        "preset": "small", "max_length": 1024, "epochs": 2, "batch_size": 4, "learning_rate": 1e-3,
        "overwrite": args.overwrite, **quick,
    })
except TrainError as err:  # an existing --output-dir without --overwrite, for one
    sys.exit(f"error: {err}")
for row in summary["results"]:
    print(f"test {row['metric']}: {row['value']:.3f}")
print(f"model: {args.output_dir}/model")
