"""Long-range retrieval: find a 5-digit pass key hidden at a random depth of real text (extractive QA).

    python examples/passkey_qa.py           # ~3 minutes on 2 CPU cores
    python examples/passkey_qa.py --quick   # a few steps: checks the script runs

Then ask a question yourself with hf_longctx.qa.answer_question, as the end of this script does.
"""

import argparse
import sys

from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from hf_longctx.data.passkey import filler_lines
from hf_longctx.qa import answer_question
from hf_longctx.train import TrainError, train

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--output-dir", default="runs/example-passkey")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
args = parser.parse_args()

quick = dict(max_steps=2, max_train_samples=8, max_eval_samples=8) if args.quick else {}
try:
    summary = train("passkey", args.output_dir, **{
        "preset": "tiny", "max_length": 512, "epochs": 3, "batch_size": 4, "learning_rate": 1e-3,
        "overwrite": args.overwrite, **quick,
    })
except TrainError as err:  # an existing --output-dir without --overwrite, for one
    sys.exit(f"error: {err}")
for row in summary["results"]:
    print(f"test {row['metric']}: {row['value']:.3f}")
model = AutoModelForQuestionAnswering.from_pretrained(f"{args.output_dir}/model")
tokenizer = AutoTokenizer.from_pretrained(f"{args.output_dir}/model")
context = "".join(filler_lines()[:20]) + "The pass key is 31415. Remember it.\n" + "".join(filler_lines()[20:40])
print("What is the pass key?", answer_question(model, tokenizer, "What is the pass key?", context, max_answer_tokens=6))
