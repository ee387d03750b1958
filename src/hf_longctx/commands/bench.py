"""``hf-longctx bench [VARIANT] [--quick] ...``: a variant's speed and memory benchmark against its anchor.

The benchmarks ship with the package (``hf_longctx.benchmarks``); their anchors are transformers' own models, a
dependency already. Results go to ``bench_results/`` in the current folder unless ``--out`` says otherwise.
"""

from __future__ import annotations

import importlib
import sys

# Kept here rather than imported from hf_longctx.benchmarks, so that `--help` does not import torch.
VARIANTS = ("longformer", "reformer", "transfo-xl")


def add_arguments(parser) -> None:
    parser.add_argument("variant", nargs="?", default="longformer", choices=VARIANTS, help="the model to measure (default: longformer)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: two short lengths, one round")
    parser.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default: the variant's)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds per length (default: the variant's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--out", help="output path without suffix (default: bench_results/<variant>_cpu)")


def run(args) -> int:
    from hf_longctx.benchmarks import VARIANT_MODULES

    if args.variant not in VARIANT_MODULES:
        print(f"hf-longctx bench: no benchmark for {args.variant} yet (have: {', '.join(VARIANT_MODULES)})",
              file=sys.stderr)
        return 1
    argv = [*(["--quick"] if args.quick else []), *(["--no-memory"] if args.no_memory else [])]
    if args.lengths:
        argv += ["--lengths", *map(str, args.lengths)]
    if args.repeats:
        argv += ["--repeats", str(args.repeats)]
    if args.out:
        argv += ["--out", args.out]
    importlib.import_module(f"hf_longctx.benchmarks.{VARIANT_MODULES[args.variant]}").main(argv)
    return 0
