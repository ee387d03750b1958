"""Byte-level language modelling on real Wikipedia XML with a causal sliding-window Longformer, in bits per byte.

    python examples/byte_lm_wiki.py           # ~5 minutes on 2 CPU cores
    python examples/byte_lm_wiki.py --quick   # a few steps: checks the script runs

Then stream text from the model with examples/generate_stream.py.
"""

import argparse
import sys

from hf_longctx.train import TrainError, evaluate_model, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--output-dir", default="runs/example-wiki-bytes")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
args = parser.parse_args()

steps, eval_samples = (2, 4) if args.quick else (300, 64)
try:
    train("wiki-bytes", args.output_dir, preset="tiny", max_length=512, max_steps=steps, batch_size=8,
          learning_rate=2e-3, max_eval_samples=eval_samples, overwrite=args.overwrite)
except TrainError as err:  # an existing --output-dir without --overwrite, for one
    sys.exit(f"error: {err}")
metrics = evaluate_model(f"{args.output_dir}/model", "wiki-bytes", split="test", max_samples=eval_samples)
print(f"test bits per byte: {metrics['test_bits_per_byte']:.3f}")
print(f"model: {args.output_dir}/model")
