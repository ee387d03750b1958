"""Byte-level language modelling on real Wikipedia XML with a causal sliding-window Longformer, in bits per byte.

    python examples/byte_lm_wiki.py  # ~5 minutes on 2 CPU cores
"""

from hf_longctx.train import evaluate_model, train

train("wiki-bytes", "runs/example-wiki-bytes", preset="tiny", max_length=512, max_steps=300, batch_size=8,
      learning_rate=2e-3, max_eval_samples=64, overwrite=True)
metrics = evaluate_model("runs/example-wiki-bytes/model", "wiki-bytes", split="test", max_samples=64)
print(f"test bits per byte: {metrics['test_bits_per_byte']:.3f}")
