"""``hf-longctx data``: list the shipped data sets, or show one's splits, sizes and provenance."""

import sys
from importlib import resources

from ..data.files import DataError
from ..tasks import TASKS

PROVENANCE = {
    "kernel-docs": "PROVENANCE_kernel_docs.md",
    "shakespeare-genre": "PROVENANCE.md",
    "wiki-bytes": "PROVENANCE_wiki_bytes.md",
    "passkey": "PROVENANCE_kernel_docs.md",  # its filler text is kernel documentation
}


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["list", "show"], help="list every task, or show one")
    parser.add_argument("name", nargs="?", help="the task to show")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per example when showing")


def run(args) -> int:
    if args.action == "list":
        for name, task in TASKS.items():
            print(f"{name:20s} {task.head.replace('AutoModelFor', ''):24s} {task.description}")
        return 0
    if args.name not in TASKS:
        print(f"hf-longctx data: unknown data set {args.name!r}; choose one of {', '.join(TASKS)}", file=sys.stderr)
        return 1
    task = TASKS[args.name]
    tokenizer = task.tokenizer()
    try:
        data, labels = task.load(tokenizer, args.max_length, 0)
    except DataError as err:  # a damaged packaged file: the message names it and how to restore it
        print(f"hf-longctx data: {err}", file=sys.stderr)
        return 1
    print(f"{task.name}: {task.description}")
    print(f"tokenizer: {type(tokenizer).__name__} with {len(tokenizer)} ids; labels: {labels}")
    for split, ds in data.items():
        lengths = [len(x) for x in ds["input_ids"]]
        print(f"  {split:10s} {len(ds):6d} examples, {sum(lengths):,} tokens (max {max(lengths)} at --max-length "
              f"{args.max_length})")
    print(f"provenance: {resources.files('hf_longctx.data').joinpath(PROVENANCE[task.name])}")
    return 0
