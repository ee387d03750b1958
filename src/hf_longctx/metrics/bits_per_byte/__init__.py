"""Makes the folder a package, so setuptools ships `bits_per_byte.py`; `evaluate.load` reads only that script."""
