"""Makes the folder a package, so setuptools ships `squad_span.py`; `evaluate.load` reads only that script."""
