"""Evaluation metrics that load offline: ``evaluate`` modules shipped inside the package, loaded by path.

``evaluate.load("accuracy")`` fetches its script from the Hugging Face hub, which is out of reach here, so each metric
hf_longctx needs lives in ``metrics/<name>/<name>.py`` (``evaluate`` 0.4's rule for a local module: the folder and
the script share the name, and the script defines one ``evaluate.Metric`` subclass with ``_info`` and
``_compute``), and :func:`load` hands ``evaluate.load`` the folder's path. The scripts import only ``evaluate``,
``datasets`` and the standard library, since ``evaluate`` copies a script alone into its module cache.

- ``accuracy``: ``predictions``, ``references`` (class ids).
- ``macro_f1``: the same; optional ``labels``.
- ``squad_span``: ``predictions`` (answer strings), ``references`` (a gold string or a list of them); SQuAD v1.1
  ``exact_match`` and ``f1``, in [0, 1].
- ``perplexity``: ``losses`` (mean nats per token), optional ``num_tokens`` weights.
- ``bits_per_byte``: ``losses``, optional ``num_tokens`` and ``num_bytes``.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("accuracy", "bits_per_byte", "macro_f1", "perplexity", "squad_span")


def path(name: str) -> Path:
    """The folder of metric ``name``, which ``evaluate.load`` accepts."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; hf_longctx ships {', '.join(NAMES)}")
    return METRICS_DIR / name


def load(name: str, **kwargs):
    """``evaluate.load`` of the packaged metric ``name`` (one of :data:`NAMES`); ``kwargs`` go to ``evaluate.load``
    (``experiment_id``, ``num_process``, ...). No network is used."""
    import evaluate

    return evaluate.load(str(path(name)), **kwargs)


__all__ = ["METRICS_DIR", "NAMES", "load", "path"]
