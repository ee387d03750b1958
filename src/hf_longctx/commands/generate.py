"""``hf-longctx generate MODEL_DIR --prompt TEXT``: stream a causal model's continuation to the terminal.

Generation never runs past the model's length (``config.max_input_tokens``, which every hf_longctx config has):
a prompt that does not fit is refused before anything is decoded, and ``--max-new-tokens`` beyond the room left
is cut to it, with a note on standard error. The arguments are defined in ``hf_longctx_cli.generate_arguments``.
"""

import sys
from pathlib import Path


class GenerateError(RuntimeError):
    """A generation that cannot start; the message says why."""


def generation_budget(prompt_tokens: int, max_new_tokens: int, max_input_tokens: int | None) -> int:
    """How many new tokens fit after a prompt of ``prompt_tokens``. The model reads at most ``max_input_tokens``
    positions (``None``: no limit), and the last generated token is never read back, so a sequence may end one
    token past them."""
    if prompt_tokens == 0:
        raise GenerateError("the prompt is empty: give at least one token to continue")
    if max_input_tokens is None:
        return max_new_tokens
    if prompt_tokens > max_input_tokens:
        raise GenerateError(f"the prompt has {prompt_tokens} tokens but the model reads at most {max_input_tokens}; "
                            "shorten it")
    return min(max_new_tokens, max_input_tokens + 1 - prompt_tokens)


def run(args) -> int:
    folder = Path(args.model_dir)
    if not args.sample and (args.temperature is not None or args.top_k is not None):
        print("hf-longctx generate: --temperature and --top-k shape sampling; add --sample (greedy decoding would "
              "ignore them)", file=sys.stderr)
        return 1
    if not (folder / "config.json").is_file():
        print(f"hf-longctx generate: {folder} is not a model folder (no config.json)", file=sys.stderr)
        return 1
    if not (folder / "tokenizer_config.json").is_file():
        print(f"hf-longctx generate: {folder} has no tokenizer; save one next to the model", file=sys.stderr)
        return 1
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

    from ..folders import LOAD_ERRORS, load_error
    from ..train import TrainError, pick_device

    try:
        config = AutoConfig.from_pretrained(folder)
    except LOAD_ERRORS as err:  # a config.json that is not JSON
        print(f"hf-longctx generate: cannot read the config in {folder}: {load_error(err)}", file=sys.stderr)
        return 1
    if not getattr(config, "causal", False) and "CausalLM" not in "".join(config.architectures or []):
        kind = (config.architectures or [f"{config.model_type} model"])[0]  # a list, or None, printed as such before
        print(f"hf-longctx generate: {folder} holds a {kind}, not a causal LM", file=sys.stderr)
        return 1
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except LOAD_ERRORS as err:  # a damaged tokenizer file
        print(f"hf-longctx generate: cannot load the tokenizer in {folder}: {load_error(err)}", file=sys.stderr)
        return 1
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    # No end-of-text after the prompt; verbose=False: a prompt past model_max_length is refused below, with the
    # numbers, instead of transformers' "indexing errors" warning.
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False, verbose=False)
    prompt_tokens = inputs["input_ids"].shape[1]
    # A model without a position table (the Transformer-XL) has no limit to generate within.
    longest = getattr(config, "position_limit", getattr(config, "max_input_tokens", None))
    try:
        device = pick_device(args.device)
        budget = generation_budget(prompt_tokens, args.max_new_tokens, longest)
    except (GenerateError, TrainError) as err:
        print(f"hf-longctx generate: {err}", file=sys.stderr)
        return 1
    if longest is not None and budget < args.max_new_tokens:
        print(f"hf-longctx generate: the model reads at most {longest} tokens, so after this {prompt_tokens}-token "
              f"prompt it generates {budget} of the {args.max_new_tokens} new tokens asked for", file=sys.stderr)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder).eval().to(device)
    except LOAD_ERRORS as err:  # missing, damaged or half-written weights
        print(f"hf-longctx generate: cannot load the model in {folder}: {load_error(err)}", file=sys.stderr)
        return 1
    set_seed(args.seed)
    # Temperature and top-k only with --sample: greedy decoding ignores them, and transformers warns when given.
    sampling = dict(do_sample=True, temperature=args.temperature or 1.0, top_k=args.top_k or 50) if args.sample \
        else dict(do_sample=False)
    model.generate(
        **inputs.to(device), max_new_tokens=budget, streamer=TextStreamer(tokenizer, skip_special_tokens=True),
        pad_token_id=tokenizer.pad_token_id, **sampling,
    )
    return 0
