"""``hf-longctx bench [ARGS]``: run the Longformer benchmark (``benchmarks/bench_longformer.py``) of a source checkout.

The benchmarks are not part of the installed package (they need transformers' own models as anchors and write
results next to themselves); this finds them next to the package's source tree.
"""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_longformer.py"


def add_arguments(parser) -> None:
    parser.add_argument("args", nargs="*", help="passed to the benchmark, e.g. --quick (see its --help)")


def run(args) -> int:
    if not SCRIPT.is_file():
        print(f"hf-longctx bench: {SCRIPT} not found; the benchmarks live in a source checkout of hf_longctx",
              file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, str(SCRIPT), *args.args])
