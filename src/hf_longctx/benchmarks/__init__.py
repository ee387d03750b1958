"""Speed and memory benchmarks, one module per variant, against the reference implementations as anchors.

``hf-longctx bench VARIANT`` runs one; ``harness`` holds what they share (interleaved timing, paired medians,
peak memory in a fresh process, machine facts). Results of record live in the source tree's ``benchmarks/results``.
"""

from ..variants import VARIANTS

# variant name (as in `hf-longctx train --variant`) -> module in this package, from the variant table
VARIANT_MODULES = {v.name: v.benchmark for v in VARIANTS}
