"""Fixtures shared by the test files."""

import pytest


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: one torch thread runs ~10x faster than threads waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

