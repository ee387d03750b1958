"""``hf-longctx bench [VARIANT] [--quick] ...``: a variant's speed and memory benchmark against its anchor.

The benchmarks ship with the package (``hf_longctx.benchmarks``); their anchors are transformers' own models, a
dependency already. Results go to ``bench_results/`` in the current folder unless ``--out`` says otherwise.
"""

from __future__ import annotations

import importlib
import sys

# The arguments (and the variant names, so that --help does not import torch) are in hf_longctx_cli.


def run(args) -> int:
    from hf_longctx.benchmarks import VARIANT_MODULES

    if args.variant not in VARIANT_MODULES:
        print(f"hf-longctx bench: no benchmark for {args.variant} yet (have: {', '.join(VARIANT_MODULES)})",
              file=sys.stderr)
        return 1
    if getattr(args, "help_variant", False):
        importlib.import_module(f"hf_longctx.benchmarks.{VARIANT_MODULES[args.variant]}").main(["--help"])
        return 0
    argv = [*(["--quick"] if args.quick else []), *(["--no-memory"] if args.no_memory else []),
            *(["--compile"] if args.compile else [])]
    if args.lengths:
        argv += ["--lengths", *map(str, args.lengths)]
    if args.repeats:
        argv += ["--repeats", str(args.repeats)]
    if args.out:
        argv += ["--out", args.out]
    argv += getattr(args, "variant_args", [])  # its own flags, e.g. reformer's --no-dense; its parser rejects others
    importlib.import_module(f"hf_longctx.benchmarks.{VARIANT_MODULES[args.variant]}").main(argv)
    return 0
