"""Data that ships with hf_longctx: a small sample of real long documents for the demo and the tests."""

from .shakespeare import LABEL_NAMES, SPLITS, load_demo_dataset, read_records

__all__ = ["LABEL_NAMES", "SPLITS", "load_demo_dataset", "read_records"]
