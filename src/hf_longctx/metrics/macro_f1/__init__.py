"""Makes the folder a package, so setuptools ships `macro_f1.py`; `evaluate.load` reads only that script."""
