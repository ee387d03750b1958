"""Thin CLI modules for subcommands whose logic lives elsewhere (each: ``run(args)``; the arguments are defined in
the top-level module ``hf_longctx_cli``)."""
