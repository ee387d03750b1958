"""Fixtures shared by the test files, and the test tiers.

Tiers, as transformers has them (`@slow`, `RUN_SLOW=1`): `make test` runs the everyday tier (minutes); tests marked
`@pytest.mark.slow` (launchers, example scripts, subprocess CLI runs, compiling every head) run only with
`RUN_SLOW=1`, which `make test-all` sets and CI runs. Whole models compiled by Inductor (C++ code generation: from
30 s to several minutes per model, cold, on 2 cores) run only with `RUN_INDUCTOR=1`.
"""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the full tier; `make test-all` (RUN_SLOW=1) runs it, `make test` not")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: `make test-all` (RUN_SLOW=1) runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: one torch thread runs ~10x faster than threads waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

