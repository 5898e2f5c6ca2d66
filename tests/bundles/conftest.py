"""Fixtures shared by the bundle tests: one command pool, tiny PoC data, and one tiny PoC training run.

The thread cap, seeds and the ``slow`` marker come from ``tests/conftest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from _helpers import POC, TINY_TRAIN, CommandPool, Result, bundle_command, cli_args


@pytest.fixture(scope="session")
def command_pool():
    """Runs the bundle commands of all bundle tests, a few at a time."""
    pool = CommandPool(workers=3)
    yield pool
    pool.close()


def write_tiny_poc_data(folder: Path) -> Path:
    """The PoC data set of :data:`TINY_TRAIN`, exactly as train.json generates it; returns ``datalist.json``."""
    from monai_acs.data import write_dataset

    return write_dataset(
        folder, n_2d=TINY_TRAIN["n_2d"], n_3d_train=TINY_TRAIN["n_3d_train"], n_3d_val=TINY_TRAIN["n_3d_val"],
        seed=0, size=TINY_TRAIN["size"],
    )


@pytest.fixture(scope="session")
def poc_data(tmp_path_factory) -> Path:
    """A tiny PoC data folder (read-only for tests: copy it before changing anything)."""
    folder = tmp_path_factory.mktemp("poc_data") / "poc"
    write_tiny_poc_data(folder)
    return folder


@dataclass
class TrainedRun:
    """The tiny PoC run every test reuses: ``python -m monai.bundle run`` (no run id) on train.json."""

    data: Path
    models: Path
    runs: Path
    run_name: str
    future: object

    @property
    def run_dir(self) -> Path:
        return self.runs / self.run_name

    def result(self) -> Result:
        """Wait for the run; fail the calling test if it failed."""
        return self.future.result().check()

    def dirs(self) -> dict[str, str]:
        return {"dataset_dir": str(self.data), "models_dir": str(self.models), "runs_dir": str(self.runs)}


@pytest.fixture(scope="session")
def poc_trained(tmp_path_factory, poc_data, command_pool) -> TrainedRun:
    """Start the shared tiny training run (1 epoch, 2D pretraining included) in the pool; tests wait on it."""
    root = tmp_path_factory.mktemp("poc_trained")
    run = TrainedRun(data=poc_data, models=root / "models", runs=root / "runs", run_name="base", future=None)
    args = ["run", "--config_file", POC / "configs" / "train.json", *cli_args(TINY_TRAIN), *cli_args(run.dirs()),
            "--run_name", run.run_name]
    run.future = command_pool.submit("poc_trained", lambda: bundle_command(*args))
    return run


@pytest.fixture(scope="session", autouse=True)
def _start_shared_training_early(request) -> None:
    """Start the shared training run at the first bundle test when any selected test needs it, so that it runs in
    the background while the in-process tests run."""
    if any("poc_trained" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("poc_trained")
