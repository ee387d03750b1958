"""``hf-longctx generate MODEL_DIR --prompt TEXT``: stream a causal model's continuation to the terminal."""

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a saved causal LM folder with its tokenizer")
    parser.add_argument("--prompt", required=True, help="text to continue ('-' reads standard input)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

    folder = Path(args.model_dir)
    if not (folder / "config.json").is_file():
        print(f"hf-longctx generate: {folder} is not a model folder (no config.json)", file=sys.stderr)
        return 1
    if not (folder / "tokenizer_config.json").is_file():
        print(f"hf-longctx generate: {folder} has no tokenizer; save one next to the model", file=sys.stderr)
        return 1
    config = AutoConfig.from_pretrained(folder)
    if not getattr(config, "causal", False) and "CausalLM" not in "".join(config.architectures or []):
        print(f"hf-longctx generate: {folder} holds a {config.architectures} model, not a causal LM", file=sys.stderr)
        return 1
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    set_seed(args.seed)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)  # no end-of-text after the prompt
    model.generate(
        **inputs, max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
        top_k=args.top_k, streamer=TextStreamer(tokenizer, skip_special_tokens=True),
        pad_token_id=tokenizer.pad_token_id,
    )
    return 0
