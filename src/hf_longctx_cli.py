"""The ``hf-longctx`` command: one parser, a dict of subcommand -> (module, arguments).

Why a top-level module and not ``hf_longctx/__main__.py``: importing anything inside the ``hf_longctx`` package
runs its ``__init__``, which imports torch and transformers to register the Auto classes (about 5 s). The parser
lives here, with no import heavier than argparse, so ``hf-longctx --help``, ``--version``, argument errors and
``data list`` answer at once; a subcommand's module (``run(args) -> int``) is imported only when it runs.
``python -m hf_longctx`` reaches the same ``main`` through the package, so it pays the import.

The names the parser offers (tasks, demo tasks, benchmark variants) are copied here rather than imported;
``tests/test_cli.py`` fails when a copy drifts from ``hf_longctx.tasks`` / ``hf_longctx.benchmarks``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# hf_longctx.tasks.TASKS: name -> (head, description), for the parser and a `data list` that imports nothing
TASKS_LISTING = {
    "kernel-docs": ("SequenceClassification", "Linux kernel documentation, 6 topics (long-document classification)"),
    "shakespeare-genre": ("SequenceClassification",
                          "genre of ~1,000-word Shakespeare windows, split by work (context matters)"),
    "wiki-bytes": ("CausalLM", "byte-level language modelling on real Wikipedia XML (enwik8-style), bits per byte"),
    "passkey": ("QuestionAnswering", "find a 5-digit pass key hidden at a random depth of real text (extractive QA)"),
}
TASK_NAMES = tuple(TASKS_LISTING)
PRETRAINING_TASK_NAMES = ("mlm", "clm")  # hf_longctx.tasks.PRETRAINING_TASKS
CORPUS_NAMES = ("kernel-docs", "shakespeare-genre", "wiki-bytes")  # hf_longctx.data.raw_text.CORPORA
PRETRAINING_TOKENIZERS = ("kernel-docs", "shakespeare-genre", "bytes")  # hf_longctx.tasks.PRETRAINING_TOKENIZERS
DEMO_TASK_NAMES = ("kernel-docs", "shakespeare-genre")  # hf_longctx.demo.DEMO_TASKS
VARIANT_NAMES = ("longformer", "reformer", "transfo-xl")  # hf_longctx.variants.VARIANTS, by name
BENCH_VARIANTS = VARIANT_NAMES  # each record names its benchmark module
DEVICES = ("auto", "cpu", "cuda", "mps")


# ------------------------------------------------------------------ argument types -------------------------------
# argparse turns a ValueError/ArgumentTypeError here into "argument --x: ..." and exit 2, before anything runs.


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def steps(text: str) -> int:
    value = int(text)
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of steps, or -1 for --epochs, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


positive_int.__name__ = positive_float.__name__ = steps.__name__ = "number"  # argparse's "invalid number value"
probability.__name__ = non_negative_int.__name__ = non_negative_float.__name__ = "number"


class _Formatter(argparse.HelpFormatter):
    """Every option's default in its help, as ArgumentDefaultsHelpFormatter does, but not "(default: None)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or "default" in text or action.default in (None, False, argparse.SUPPRESS, []):
            return text
        return f"{text} (default: %(default)s)"

    def _split_lines(self, text, width):
        import textwrap

        # Never break inside a name such as kernel-docs or --max-length.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


# ------------------------------------------------------------------ subcommands -----------------------------------


def _device(parser, *, bf16: bool = True) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run: auto picks CUDA, then Apple MPS, then the CPU")
    if bf16:
        parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (refused on a device "
                            "without bf16)")


def train_arguments(p) -> None:
    p.add_argument("--task", choices=TASK_NAMES + PRETRAINING_TASK_NAMES, help="a shipped task to train on (see "
                   "`hf-longctx data list`), or mlm / clm: masked or causal language modelling on raw text (the "
                   "shipped corpora's training splits, or --data-dir)")
    p.add_argument("--data-dir", help="or your own documents: a folder with train.jsonl, validation.jsonl and "
                   'test.jsonl, one {"text": ..., "label": ...} per line (a BPE is trained on its train split); with '
                   '--task mlm or clm, a folder of raw *.txt files (one document each) and/or *.jsonl files (one '
                   '{"text": ...} per line), 5%% of the documents held out for validation and 5%% for test')
    p.add_argument("--corpora", nargs="+", choices=CORPUS_NAMES, metavar="CORPUS", help="with --task mlm or clm: "
                   f"pretrain on the training splits of these shipped corpora only ({', '.join(CORPUS_NAMES)}; "
                   "default: all)")
    p.add_argument("--tokenizer", metavar="NAME_OR_DIR", help="with --task mlm or clm and a new model: "
                   f"{', '.join(PRETRAINING_TOKENIZERS)} or a folder with a saved tokenizer (default: a byte-level "
                   "BPE of 8,192 ids trained on the training text)")
    # No argparse defaults for what describes a new model: given with --init-from (whose checkpoint decides them)
    # they would do nothing, so train refuses them there (hf_longctx.train.NEW_MODEL_DEFAULTS fills them in).
    p.add_argument("--variant", help="model family of a new model (default: longformer; an unknown one is refused "
                   "with the list)")
    p.add_argument("--preset", help="size of a new model: tiny, small or base (default: small)")
    p.add_argument("--output-dir", required=True, help="run folder: hf_longctx_run.json, checkpoints/ and, at the "
                   "end, model/")
    p.add_argument("--max-length", type=positive_int, default=1024, help="tokens per example (longer ones are "
                   "truncated)")
    p.add_argument("--epochs", type=positive_float, default=1.0, help="passes over the training split")
    p.add_argument("--max-steps", type=steps, default=-1, help="stop after this many steps (overrides --epochs; "
                   "-1: use --epochs; default: -1)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="examples per step, in training and evaluation")
    p.add_argument("--learning-rate", type=non_negative_float, default=5e-4, help="peak AdamW learning rate")
    p.add_argument("--dropout", type=probability, help="dropout of a new model (default: 0.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the data order and the sample draws")
    p.add_argument("--init-from", help="start from this saved or converted model (or the name of a checkpoint "
                   "shipped in hf_longctx/pretrained/) instead of a random one; its tokenizer, when it saved one, "
                   "replaces the task's")
    p.add_argument("--max-train-samples", type=positive_int, help="use only N training examples (a seeded random "
                   "draw)")
    p.add_argument("--max-eval-samples", type=positive_int, help="evaluate on N validation/test examples (a seeded "
                   "random draw)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainingArguments field, e.g. --set gradient_accumulation_steps=4")
    p.add_argument("--compile", action="store_true", help="train the model compiled with torch.compile (Inductor; "
                   "TrainingArguments' torch_compile): on a CPU 0.79-1.22x the speed of eager steps, faster only for "
                   "the Reformer without dropout (docs/graphs.md)")
    _device(p)
    p.add_argument("--push-to-hub", metavar="REPO", help="when training ends, export model/ to OUTPUT_DIR/hub and "
                   "push it to this Hub repository (HF_TOKEN; checked before training)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint "
                   "(same arguments; --epochs and --max-steps may grow)")
    p.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first if an earlier train run wrote "
                   "it (any other folder is never deleted)")


def evaluate_arguments(p) -> None:
    p.add_argument("model_dir", help="a saved model folder (e.g. RUN/model from `hf-longctx train`)")
    p.add_argument("--task", choices=TASK_NAMES + PRETRAINING_TASK_NAMES, help="a shipped task, or mlm / clm: the "
                   "pretraining metrics on the shipped corpora (or on --data-dir's raw text)")
    p.add_argument("--data-dir", help="or a folder of your own documents, as for `hf-longctx train --data-dir`")
    p.add_argument("--corpora", nargs="+", choices=CORPUS_NAMES, metavar="CORPUS", help="with --task mlm or clm: "
                   f"score on these shipped corpora only ({', '.join(CORPUS_NAMES)}; default: all)")
    p.add_argument("--split", default="test", help="train, validation or test")
    p.add_argument("--max-length", type=positive_int, help="tokens per example (default: the model's longest input)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="examples per forward pass")
    # The name `train` uses; --max-samples, this command's earlier name, still works.
    p.add_argument("--max-eval-samples", "--max-samples", dest="max_samples", type=positive_int,
                   help="evaluate on N examples of the split (a seeded random draw)")
    _device(p)


def generate_arguments(p) -> None:
    p.add_argument("model_dir", help="a saved causal LM folder with its tokenizer")
    p.add_argument("--prompt", required=True, help="text to continue ('-' reads standard input)")
    p.add_argument("--max-new-tokens", type=positive_int, default=200, help="at most this many tokens, and never "
                   "past the model's length")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    # No argparse defaults: given without --sample they would do nothing, so generate refuses them there.
    p.add_argument("--temperature", type=positive_float, help="with --sample (default: 1.0)")
    p.add_argument("--top-k", type=positive_int, help="with --sample (default: 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    _device(p, bf16=False)


def convert_arguments(p) -> None:
    p.add_argument("src", help="a local folder written by save_pretrained, or a Hub model id (downloaded): a "
                   "transformers Longformer, Reformer or TransfoXL; RoBERTa/BERT with --from-short; an hf_longctx "
                   "Longformer with --max-length to lengthen it")
    p.add_argument("dst", help="folder to create (must not exist unless --overwrite)")
    p.add_argument("--from-short", action="store_true",
                   help="SRC is a short-context RoBERTa/BERT: extend its positions (Longformer paper, section 5)")
    p.add_argument("--max-length", type=positive_int, help="longest input in tokens: with --from-short (default "
                   "4096), or for an hf_longctx Longformer, the new length of its position table")
    p.add_argument("--attention-window", type=positive_int, help="with --from-short: even sliding-window size of "
                   "every layer (default 512)")
    p.add_argument("--revision", help="with a Hub id: the branch, tag or commit to download (default: main)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DST if an earlier hf-longctx command wrote it and nothing in it changed since")


def demo_arguments(p) -> None:
    # The defaults are DemoSettings' (hf_longctx.demo); tests/test_demo_data.py checks they agree.
    p.add_argument("--task", choices=DEMO_TASK_NAMES, default="kernel-docs", help="which shipped classification task")
    p.add_argument("--output-dir", default="runs/demo", help="where the runs, the Hub folder and the results go")
    p.add_argument("--overwrite", action="store_true", help="replace --output-dir if it holds an earlier demo run")
    p.add_argument("--max-steps", type=positive_int, default=150, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=16, help="documents per step")
    p.add_argument("--learning-rate", type=positive_float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--max-length", type=positive_int, default=1024, help="tokens per document; longer ones are "
                   "truncated")
    p.add_argument("--truncated-length", type=non_negative_int, default=128, help="tokens the baseline reads (0 "
                   "skips it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data order")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads; 0 (the default) picks the "
                   "idle cores, at least 1")


def compare_arguments(p) -> None:
    # No argparse defaults for the budget: a flag left out takes --quick's value or hf_longctx.compare's default.
    p.add_argument("--task", choices=TASK_NAMES + PRETRAINING_TASK_NAMES, help="a shipped task (default: "
                   "kernel-docs): classification is scored by accuracy, wiki-bytes and clm (causal language modelling "
                   "on raw text) by bits per byte, mlm by perplexity")
    p.add_argument("--data-dir", help="or your own documents: a labelled folder as for `hf-longctx train --data-dir`, "
                   "or with --task clm a folder of raw text")
    p.add_argument("--variants", nargs="+", metavar="VARIANT", help="the variants to compare "
                   f"({', '.join(VARIANT_NAMES)}; default: all)")
    p.add_argument("--max-length", type=positive_int, help="tokens every variant reads (default: 1024; --quick 256)")
    p.add_argument("--truncated", type=non_negative_int, help="tokens the truncated baseline (the Longformer) reads; "
                   "0: no baseline (default: 128; --quick 64)")
    p.add_argument("--seeds", type=int, nargs="+", help="one run of every variant per seed (default: 0)")
    p.add_argument("--steps", type=positive_int, help="optimizer steps of every run (default: 100; --quick 30)")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (default: 16; --quick 8)")
    p.add_argument("--learning-rate", type=positive_float, help="peak AdamW learning rate (default: 0.002; --quick "
                   "0.003)")
    p.add_argument("--output-dir", default="runs/compare", help="where the runs, the table, the plot and the Hub "
                   "folder go")
    p.add_argument("--quick", action="store_true", help="tiny models, 256 tokens, 30 steps on 96 documents: under 2 "
                   "minutes (what the tests run)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted compare in OUTPUT_DIR (same "
                   "arguments)")
    p.add_argument("--overwrite", action="store_true", help="delete OUTPUT_DIR first if an earlier compare wrote it "
                   "(any other folder is never deleted)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads; 0 (the default) picks the "
                   "idle cores, at least 1")
    _device(p, bf16=False)


def export_arguments(p) -> None:
    p.add_argument("model_dir", help="a folder written by `hf-longctx train`, `convert` or save_pretrained")
    p.add_argument("out_dir", help="the Hub-ready folder to write (must not exist unless --overwrite)")
    p.add_argument("--repo-id", help="the Hub repository the card's loading snippet names")
    p.add_argument("--overwrite", action="store_true",
                   help="replace out_dir if an earlier export wrote it and nothing in it changed since")
    p.add_argument("--format", action="append", choices=["onnx"],
                   help="also write model.onnx (dynamic batch and length, checked with onnxruntime; needs "
                        "pip install \"hf_longctx[onnx]\")")


def push_arguments(p) -> None:
    p.add_argument("folder", help="a folder written by `hf-longctx export`")
    p.add_argument("repo_id", help="the Hub repository, e.g. user/my-longformer")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="the branch to commit to (created from main if missing; default: main)")
    p.add_argument("--commit-message", default="Upload hf_longctx model", help="the commit's message on the Hub")
    p.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; upload nothing")
    p.add_argument("--token", help="a Hub token (default: HF_TOKEN or the saved login)")


def data_arguments(p) -> None:
    p.add_argument("action", choices=["list", "show"], help="list every data set, or show one")
    p.add_argument("name", nargs="?", choices=TASK_NAMES, metavar="NAME", help=f"with show: the data set "
                   f"({', '.join(TASK_NAMES)})")
    p.add_argument("--max-length", type=positive_int, default=1024, help="tokens per example when showing")


def bench_arguments(p) -> None:
    p.add_argument("variant", nargs="?", default="longformer", choices=BENCH_VARIANTS, help="the model to measure")
    p.add_argument("--quick", action="store_true", help="a smoke run: two short lengths, one round")
    p.add_argument("--lengths", type=positive_int, nargs="+", help="sequence lengths (default: the variant's)")
    p.add_argument("--repeats", type=positive_int, help="interleaved rounds per length (default: the variant's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--compile", action="store_true", help="also time the training steps of ours and the anchor "
                   "under torch.compile (Inductor), interleaved with the eager ones; cold compile time apart (on a "
                   "CPU a cold compile takes from seconds to minutes per model and length)")
    p.add_argument("--out", help="output path without suffix (default: bench_results/<variant>_cpu)")
    p.epilog = ("Flags a variant's benchmark adds (e.g. reformer's --no-dense) pass through to it: "
                "`hf-longctx bench reformer --help-variant` lists them.")
    p.add_argument("--help-variant", action="store_true", help="show the variant benchmark's own flags and exit")


SUBCOMMANDS = {
    "train": ("hf_longctx.train", train_arguments,
              "fine-tune a variant on a shipped long-document task or your own documents with the standard Trainer"),
    "evaluate": ("hf_longctx.commands.evaluate", evaluate_arguments, "metrics of a saved model on a task split"),
    "generate": ("hf_longctx.commands.generate", generate_arguments, "stream a causal model's continuation of a prompt"),
    "convert": ("hf_longctx.convert", convert_arguments, "turn a transformers Longformer, Reformer or TransfoXL (or "
                "a short RoBERTa/BERT) into an hf_longctx model, or lengthen an hf_longctx Longformer"),
    "compare": ("hf_longctx.compare", compare_arguments, "train every variant and a truncated baseline under one "
                "budget on a task or your documents: a table, a plot, and the best model exported"),
    "demo": ("hf_longctx.demo", demo_arguments,
             "fine-tune a small Longformer on committed real text and report test accuracy"),
    "export": ("hf_longctx.export", export_arguments,
               "write a Hub-ready folder (weights, code, tokenizer, filled model card)"),
    "push": ("hf_longctx.push", push_arguments, "upload an exported folder to the Hugging Face Hub in one commit"),
    "data": ("hf_longctx.commands.data", data_arguments, "list the shipped data sets, or show one's splits and "
             "provenance"),
    "bench": ("hf_longctx.commands.bench", bench_arguments,
              "speed and memory of a variant against transformers' implementation, interleaved"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("hf_longctx")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-longctx", formatter_class=_Formatter,
        description="Long-context Transformers on the Hugging Face stack. Run `hf-longctx COMMAND --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"hf-longctx {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, arguments, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        arguments(p)
        p.set_defaults(_module=module)
    return parser


def data_list(args) -> int:
    """``hf-longctx data list``, answered without importing the package."""
    if args.name is not None:
        print(f"hf-longctx data: `data list` takes no name; did you mean `data show {args.name}`?", file=sys.stderr)
        return 2
    for name, (head, description) in TASKS_LISTING.items():
        print(f"{name:20s} {head:24s} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if unknown:
        if args.command != "bench":  # only a variant's benchmark has flags this parser does not know
            # The subcommand's usage, not the top-level one: it lists the options that were meant.
            subcommand = parser._subparsers._group_actions[0].choices.get(args.command, parser)
            subcommand.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.variant_args = unknown  # hf_longctx.commands.bench hands them on; the variant's parser checks them
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data" and args.action == "list":
        return data_list(args)
    try:
        code = int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback (train says how to go on; see its run())
        print(f"\nhf-longctx {args.command}: interrupted", file=sys.stderr)
        code = 130
    if "torch" in sys.modules:  # a command that ran under torchrun / accelerate launch ends here, see the helper
        from hf_longctx.distributed import exit_process_group

        exit_process_group(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
