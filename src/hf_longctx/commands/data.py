"""``hf-longctx data``: list the shipped data sets, or show one's splits, sizes and provenance."""

import sys
from importlib import resources

from ..tasks import TASKS

PROVENANCE = {
    "kernel-docs": "PROVENANCE_kernel_docs.md",
    "shakespeare-genre": "PROVENANCE.md",
    "wiki-bytes": "PROVENANCE_wiki_bytes.md",
    "passkey": "PROVENANCE_kernel_docs.md",  # its filler text is kernel documentation
}


# The arguments are defined in hf_longctx_cli.data_arguments.


def run(args) -> int:
    if args.action == "list":
        from hf_longctx_cli import data_list

        return data_list(args)
    if args.name is None:  # not "unknown data set None": list them
        print(f"hf-longctx data: show which data set? `hf-longctx data show NAME`, NAME one of {', '.join(TASKS)}",
              file=sys.stderr)
        return 2
    if args.name not in TASKS:
        print(f"hf-longctx data: unknown data set {args.name!r}; choose one of {', '.join(TASKS)}", file=sys.stderr)
        return 1
    task = TASKS[args.name]
    tokenizer = task.tokenizer()
    from ..train import TrainError, load_task

    try:
        data, labels = load_task(task, tokenizer, args.max_length, 0)
    except TrainError as err:  # a damaged packaged file (the message names it and how to restore it), a bad length
        print(f"hf-longctx data: {err}", file=sys.stderr)
        return 1
    print(f"{task.name}: {task.description}")
    # Only classification tasks have label names ("labels: None" said nothing to a reader).
    print(f"tokenizer: {type(tokenizer).__name__} with {len(tokenizer)} ids"
          + (f"; labels: {', '.join(map(str, labels))}" if labels is not None else f"; head: {task.head}"))
    for split, ds in data.items():
        lengths = [len(x) for x in ds["input_ids"]]
        print(f"  {split:10s} {len(ds):6d} examples, {sum(lengths):,} tokens (max {max(lengths)} at --max-length "
              f"{args.max_length})")
    print(f"provenance: {resources.files('hf_longctx.data').joinpath(PROVENANCE[task.name])}")
    return 0
