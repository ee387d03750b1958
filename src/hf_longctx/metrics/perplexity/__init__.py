"""Makes the folder a package, so setuptools ships `perplexity.py`; `evaluate.load` reads only that script."""
