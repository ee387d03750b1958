"""``python -m hf_longctx``: the ``hf-longctx`` command (its parser lives in the top-level module ``hf_longctx_cli``,
so that the console script answers ``--help`` without importing this package and torch)."""

import sys

from hf_longctx_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
