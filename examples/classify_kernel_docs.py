"""Long-document classification: a small Longformer on Linux kernel documentation topics (6 classes).

    python examples/classify_kernel_docs.py  # ~5 minutes on 2 CPU cores

Documents are up to 1,024 tokens (about 40% of them are longer and get truncated); the first token is global.
"""

from hf_longctx.train import train

summary = train(
    "kernel-docs", "runs/example-kernel-docs", preset="small", max_length=1024, epochs=2, batch_size=4,
    learning_rate=1e-3, overwrite=True,
)
print(summary["results"])
