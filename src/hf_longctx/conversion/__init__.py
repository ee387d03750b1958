"""Checkpoint conversion, one module per source family (see ``hf_longctx.convert`` for the command)."""
