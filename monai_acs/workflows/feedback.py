"""Training feedback: the learning rate in TensorBoard and a training-curve PNG in the run folder."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from .checkpoints import save_atomic

__all__ = ["TrainingFeedback"]

logger = logging.getLogger(__name__)

CURVE_PNG = "training_curve.png"
CURVE_JSON = "training_curve.json"


class TrainingFeedback:
    """Trainer handler: learning rate to TensorBoard, and ``training_curve.png`` (+ ``.json``) in the run folder.

    At the start of every iteration the learning rate of each optimizer parameter group goes to ``summary_writer`` as
    ``learning_rate`` (group 0) and ``learning_rate/group_<i>``, with the iteration as step (warm-up and per-iteration
    schedules show). After every epoch the epoch's mean training loss and, in epochs the validator ran, its key metric
    are appended to ``<run_dir>/training_curve.json``, and ``<run_dir>/training_curve.png`` is redrawn (loss and key
    metric against epoch). Both files are written atomically (:func:`save_atomic`, permissions from the umask); a
    resumed run continues the curve of the run folder.

    Args:
        run_dir: the run folder.
        summary_writer: a TensorBoard ``SummaryWriter`` (or the bundles' ``LazySummaryWriter``); None skips the
            learning-rate scalars.
        validator: the validation evaluator (its ``key_metric`` is plotted); None plots the loss only.
        key_metric: the metric to plot; default the validator's key metric.
        output_transform: maps the trainer output to the loss; default the ``loss`` of the first item (MONAI's
            decollated output) or of the output dict.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        summary_writer: Any = None,
        validator: Engine | None = None,
        key_metric: str | None = None,
        output_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.summary_writer = summary_writer
        self.validator = validator
        self.key_metric = key_metric
        self.output_transform = output_transform or _loss_of
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._epoch_lr: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self._log_learning_rate)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        """Continue the curve of a resumed run (epochs up to the one it resumes from)."""
        self.history = []
        try:
            previous = json.loads((self.run_dir / CURVE_JSON).read_text())
            self.history = [e for e in previous.get("epochs", []) if int(e["epoch"]) <= engine.state.epoch]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    def _epoch_started(self, engine: Engine) -> None:
        self._losses = []
        optimizer = getattr(engine, "optimizer", None)
        self._epoch_lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None

    def _iteration_completed(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if loss is not None:
            self._losses.append(float(loss))

    def _log_learning_rate(self, engine: Engine) -> None:
        """The rate this iteration uses (before a per-iteration scheduler steps at its end)."""
        if self.summary_writer is not None and getattr(engine, "optimizer", None) is not None:
            step = engine.state.iteration
            for i, group in enumerate(engine.optimizer.param_groups):
                tag = "learning_rate" if i == 0 else f"learning_rate/group_{i}"
                self.summary_writer.add_scalar(tag, float(group["lr"]), step)

    def _epoch_completed(self, engine: Engine) -> None:
        entry: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        finite = [v for v in self._losses if math.isfinite(v)]
        entry["loss"] = sum(finite) / len(finite) if finite else None
        if self._epoch_lr is not None:
            entry["learning_rate"] = self._epoch_lr  # the rate at the start of the epoch
        name, value = self._validation(engine)
        if name is not None:
            entry[name] = value
        self.history = [e for e in self.history if e["epoch"] < entry["epoch"]] + [entry]
        try:
            save_atomic(json.dumps({"key_metric": self._metric_name(), "epochs": self.history}, indent=1),
                        self.run_dir / CURVE_JSON)
            save_atomic(self._draw(), self.run_dir / CURVE_PNG)
        except OSError as err:  # feedback must never stop a training run
            logger.warning("could not write the training curve into %s: %s", self.run_dir, err)

    def _metric_name(self) -> str | None:
        if self.key_metric:
            return self.key_metric
        return getattr(getattr(self.validator, "state", None), "key_metric_name", None)

    def _validation(self, engine: Engine) -> tuple[str | None, float | None]:
        """The key metric when the validator ran in this epoch (its state's epoch follows the trainer's)."""
        state = getattr(self.validator, "state", None)
        name = self._metric_name()
        if state is None or name is None or state.epoch != engine.state.epoch or name not in state.metrics:
            return None, None
        try:
            return name, float(state.metrics[name])
        except (TypeError, ValueError):
            return None, None

    def _draw(self) -> bytes:
        from matplotlib.figure import Figure

        name = self._metric_name()
        points = [(e["epoch"], e[name]) for e in self.history if name and e.get(name) is not None]
        fig = Figure(figsize=(9 if points else 5, 3.6), dpi=100)
        axes = fig.subplots(1, 2 if points else 1, squeeze=False)[0]
        losses = [(e["epoch"], e["loss"]) for e in self.history if e.get("loss") is not None]
        axes[0].plot([x for x, _ in losses], [y for _, y in losses], marker="o", markersize=3)
        axes[0].set(xlabel="epoch", ylabel="mean training loss", title="training loss")
        if points:
            axes[1].plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, color="tab:green")
            best = max(points, key=lambda p: p[1])
            axes[1].set(xlabel="epoch", ylabel=name, title=f"validation: best {best[1]:.4g} at epoch {best[0]}")
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()


def _loss_of(output: Any) -> float | None:
    item = output[0] if isinstance(output, (list, tuple)) and output else output
    loss = item.get("loss") if isinstance(item, dict) else item
    try:
        return float(loss) if loss is not None else None
    except (TypeError, ValueError):
        return None
