"""Shared pytest setup for every test folder: thread cap, deterministic seeds, and the ``slow`` marker switch.

``slow`` tests (full torchvision zoo, full bundle runs) are skipped unless ``--runslow`` is given or the environment
sets ``MONAI_ACS_SLOW=1``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

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


_CHECKOUT = Path(__file__).resolve().parents[1]
_GENERATED = ("models", "runs", "eval", "data")


def _checkout_outputs() -> dict[str, int]:
    """Every file under the bundles' models / runs / eval / data folders, with its modification time."""
    out = {}
    for bundle in (_CHECKOUT / "bundles").iterdir():
        for name in _GENERATED:
            folder = bundle / name
            if folder.is_dir():
                out.update({p.relative_to(_CHECKOUT).as_posix(): p.stat().st_mtime_ns
                            for p in folder.rglob("*") if p.is_file()})
    return out


@pytest.fixture(scope="session", autouse=True)
def _tests_leave_the_checkout_alone():
    """Fail the session when a test wrote into the checkout's bundle folders (tests write under tmp_path only)."""
    before = _checkout_outputs()
    yield
    after = _checkout_outputs()
    changed = sorted(p for p in after if before.get(p) != after[p]) + sorted(p for p in before if p not in after)
    assert not changed, f"tests changed files in the checkout: {changed[:10]}"


@pytest.fixture(autouse=True)
def _no_network_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network: torch.hub's downloads (torchvision weights) fail as on an offline machine.

    A test that proves the download path substitutes ``torch.hub.download_url_to_file`` or ``torch.hub.urlopen``.
    """
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("tests never touch the network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
