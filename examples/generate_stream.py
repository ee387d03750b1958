"""Generation with a bounded cache: a causal Longformer keeps only its sink tokens and the last window per layer.

    python examples/generate_stream.py runs/example-wiki-bytes/model  # after examples/byte_lm_wiki.py
"""

import sys

from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

folder = sys.argv[1] if len(sys.argv) > 1 else "runs/example-wiki-bytes/model"
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
inputs = tokenizer("<page>\n    <title>", return_tensors="pt", add_special_tokens=False)
out = model.generate(**inputs, max_new_tokens=2000, do_sample=True, top_k=20,
                     streamer=TextStreamer(tokenizer, skip_special_tokens=True), return_dict_in_generate=True)
print(f"\n\ncache: {out.cache.get_seq_length()} tokens seen, {out.cache.stored_length()} kept per layer at most")
