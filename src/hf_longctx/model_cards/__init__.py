"""Model card templates, one per variant (``<model_type>.md``), rendered by ``hf_longctx.export``.

The repository's top-level ``model_cards/`` links here so the templates ship inside the package.
"""
