"""Training feedback of the bundles: the learning rate in TensorBoard, ``training_curve.png`` / ``.json`` in the run
folder (atomic, umask permissions, continued on resume), and the progress-bar switch for log files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from monai_acs.workflows import ProgressBar, TrainingFeedback


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_tiny_training_run_writes_the_curve_and_the_learning_rate(poc_trained):
    poc_trained.result()
    run_dir = poc_trained.run_dir
    png = run_dir / "training_curve.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400
    assert png.stat().st_mode & 0o777 == 0o666 & ~_umask()
    curve = json.loads((run_dir / "training_curve.json").read_text())
    assert curve["key_metric"] == "val_mean_dice"
    (epoch,) = curve["epochs"]  # TINY_TRAIN: 1 epoch, validated
    assert epoch["epoch"] == 1 and epoch["loss"] > 0 and 0 <= epoch["val_mean_dice"] <= 1
    assert epoch["learning_rate"] == pytest.approx(0.002)  # train.json's learning_rate
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    assert "learning_rate" in events.Tags()["scalars"], events.Tags()["scalars"]
    rates = events.Scalars("learning_rate")
    assert [r.step for r in rates] == list(range(1, len(rates) + 1)) and len(rates) >= 1
    assert rates[0].value == pytest.approx(0.002)


class _Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


def _trainer(lr_steps: list[float]) -> Engine:
    """A real ignite engine with an optimizer whose rate changes every epoch, and a validator run every 2 epochs."""
    param = torch.nn.Parameter(torch.zeros(1))
    engine = Engine(lambda e, b: [{"loss": torch.tensor(float(b))}])
    engine.optimizer = torch.optim.SGD([param], lr=lr_steps[0])
    validator = Engine(lambda e, b: None)
    validator.state.key_metric_name = "val_score"

    @engine.on(Events.EPOCH_COMPLETED)
    def _validate_and_step(e: Engine) -> None:
        if e.state.epoch % 2 == 0:
            validator.state.epoch = e.state.epoch
            validator.state.metrics = {"val_score": e.state.epoch / 10}
        e.optimizer.param_groups[0]["lr"] = lr_steps[min(e.state.epoch, len(lr_steps) - 1)]

    engine.validator = validator
    return engine


def test_curve_history_loss_metric_and_resume(tmp_path):
    writer = _Writer()
    engine = _trainer([0.1, 0.01, 0.001, 0.0001])
    TrainingFeedback(tmp_path, summary_writer=writer, validator=engine.validator).attach(engine)
    engine.run([1.0, 3.0], max_epochs=3)
    curve = json.loads((tmp_path / "training_curve.json").read_text())
    assert [(e["epoch"], e["loss"], e["learning_rate"]) for e in curve["epochs"]] == [
        (1, 2.0, 0.1), (2, 2.0, 0.01), (3, 2.0, 0.001)]
    assert [e.get("val_score") for e in curve["epochs"]] == [None, 0.2, None]
    assert [(s[0], round(s[1], 6), s[2]) for s in writer.scalars] == [
        ("learning_rate", 0.1, 1), ("learning_rate", 0.1, 2), ("learning_rate", 0.01, 3), ("learning_rate", 0.01, 4),
        ("learning_rate", 0.001, 5), ("learning_rate", 0.001, 6)]
    # a resumed run (restored at epoch 2) continues the curve from there: epoch 3 is redone, not duplicated
    resumed = _trainer([0.1, 0.01, 0.001, 0.0001])
    TrainingFeedback(tmp_path, validator=resumed.validator).attach(resumed)
    resumed.state.epoch, resumed.state.iteration, resumed.state.max_epochs = 2, 4, 2
    resumed.run([5.0, 7.0], max_epochs=4)
    curve = json.loads((tmp_path / "training_curve.json").read_text())
    assert [(e["epoch"], e["loss"]) for e in curve["epochs"]] == [(1, 2.0), (2, 2.0), (3, 6.0), (4, 6.0)]
    assert Image.open(tmp_path / "training_curve.png").format == "PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("variable, value, shown", [("MONAI_ACS_PROGRESS", "0", False), ("TQDM_DISABLE", "1", False),
                                                    ("MONAI_ACS_PROGRESS", "1", True)])
def test_progress_bar_switch(monkeypatch, variable, value, shown):
    monkeypatch.delenv("MONAI_ACS_PROGRESS", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv(variable, value)
    engine = Engine(lambda e, b: None)
    before = len(engine._event_handlers[Events.ITERATION_COMPLETED])
    ProgressBar(desc="infer").attach(engine)
    assert (len(engine._event_handlers[Events.ITERATION_COMPLETED]) > before) is shown
