"""Thin CLI modules for subcommands whose logic lives elsewhere (each: ``add_arguments(parser)``, ``run(args)``)."""
