"""``hf-longctx evaluate MODEL_DIR --task T`` (or ``--data-dir D``): metrics of a saved model on a task split, as JSON."""

import json
import sys

from ..tasks import TASKS


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a saved model folder (e.g. RUN/model from `hf-longctx train`)")
    parser.add_argument("--task", choices=sorted(TASKS), help="a shipped task")
    parser.add_argument("--data-dir", help="or a folder of your own documents, as for `hf-longctx train --data-dir`")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-length", type=int, help="default: the model's longest input")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-samples", type=int, help="evaluate on N examples of the split (a seeded random draw)")


def run(args) -> int:
    from ..train import TrainError, evaluate_model

    try:
        metrics = evaluate_model(args.model_dir, args.task, data_dir=args.data_dir, split=args.split, max_length=args.max_length,
                                 batch_size=args.batch_size, max_samples=args.max_samples)
    except TrainError as err:
        print(f"hf-longctx evaluate: {err}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0
