"""The ``hf-longctx`` command: one parser, a dict of subcommand -> module.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their subcommand runs, so ``hf-longctx --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "train": ("hf_longctx.train", "fine-tune a variant on a shipped long-document task with the standard Trainer"),
    "evaluate": ("hf_longctx.commands.evaluate", "metrics of a saved model on a task split"),
    "generate": ("hf_longctx.commands.generate", "stream a causal model's continuation of a prompt"),
    "convert": ("hf_longctx.convert", "turn a transformers Longformer, Reformer or TransfoXL (or a short RoBERTa/BERT) into an hf_longctx model"),
    "demo": ("hf_longctx.demo", "fine-tune a small Longformer on committed real text and report test accuracy"),
    "export": ("hf_longctx.export", "write a Hub-ready folder (weights, code, tokenizer, filled model card)"),
    "push": ("hf_longctx.push", "upload an exported folder to the Hugging Face Hub in one commit"),
    "data": ("hf_longctx.commands.data", "list the shipped data sets, or show one's splits and provenance"),
    "bench": ("hf_longctx.commands.bench", "speed and memory of a variant against transformers' implementation, interleaved"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-longctx",
        description="Long-context Transformers on the Hugging Face stack. Run `hf-longctx COMMAND --help` for details.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in sys.argv[1:2]:  # only the chosen subcommand imports its module
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        parser = build_parser()
    finally:
        sys.argv = saved
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
