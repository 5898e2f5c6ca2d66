"""Shared pytest setup for every test folder: thread cap, deterministic seeds, and the ``slow`` marker switch.

``slow`` tests (full torchvision zoo, full bundle runs) are skipped unless ``--runslow`` is given or the environment
sets ``MONAI_ACS_SLOW=1``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# CI machines have 2 cores shared with other jobs: never let torch take more.
torch.set_num_threads(2)
try:
    torch.set_num_interop_threads(2)
except RuntimeError:  # already set, or parallel work already started in this process
    pass


def _slow_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--runslow")) or os.environ.get("MONAI_ACS_SLOW", "").strip().lower() in (
        "1",
        "true",
        "yes",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow (or set MONAI_ACS_SLOW=1)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_enabled(config):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow or MONAI_ACS_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _deterministic_seed() -> None:
    """Seed python, numpy and torch before every test so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
