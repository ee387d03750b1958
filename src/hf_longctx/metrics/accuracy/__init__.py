"""Makes the folder a package, so setuptools ships `accuracy.py`; `evaluate.load` reads only that script."""
