"""Generation with a bounded cache: a causal Longformer keeps only its sink tokens and the last window per layer.

    python examples/generate_stream.py runs/example-wiki-bytes/model   # after examples/byte_lm_wiki.py
    python examples/generate_stream.py MODEL --max-new-tokens 50        # shorter
"""

import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

import hf_longctx  # noqa: F401  (registers our model types with the Auto classes; without it: trust_remote_code=True)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", nargs="?", default="runs/example-wiki-bytes/model")
parser.add_argument("--max-new-tokens", type=int, default=2000)
parser.add_argument("--seed", type=int, default=0, help="seed of the sampling")
args = parser.parse_args()

model = AutoModelForCausalLM.from_pretrained(args.model).eval()
tokenizer = AutoTokenizer.from_pretrained(args.model)
set_seed(args.seed)
inputs = tokenizer("<page>\n    <title>", return_tensors="pt", add_special_tokens=False)
out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=True, top_k=20,
                     streamer=TextStreamer(tokenizer, skip_special_tokens=True), return_dict_in_generate=True)
print(f"\n\ncache: {out.cache.get_seq_length()} tokens seen, {out.cache.stored_length()} kept per layer at most "
      f"(window {model.config.layer_windows[0]}, {model.config.num_sink_tokens} sink tokens)")
