"""``hf-longctx evaluate MODEL_DIR --task T`` (or ``--data-dir D``): metrics of a saved model on a task split, as JSON.

The arguments are defined in ``hf_longctx_cli.evaluate_arguments``."""

import json
import sys


def run(args) -> int:
    from ..train import TrainError, evaluate_model

    try:
        metrics = evaluate_model(args.model_dir, args.task, data_dir=args.data_dir, split=args.split,
                                 max_length=args.max_length, batch_size=args.batch_size, max_samples=args.max_samples,
                                 device=args.device, bf16=args.bf16, corpora=args.corpora)
    except TrainError as err:
        print(f"hf-longctx evaluate: {err}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0
