"""ignite handlers the bundles attach: atomic best/latest checkpoints with resume, and a progress bar."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import torch
from ignite.engine import Engine, Events
from monai.utils import str2bool

from .._progress import progress_enabled
from ..errors import BundleError
from .checkpoints import capture_rng_state, load_checkpoint, load_weights, restore_rng_state, save_atomic
from .runs import normalize_settings, record_resume

__all__ = ["RunCheckpointer", "ProgressBar"]

logger = logging.getLogger(__name__)


class RunCheckpointer:
    """Save ``checkpoint_latest.pt`` after every epoch and ``model_best.pt`` on every improved key metric.

    Both files are written atomically (temporary file + rename). ``checkpoint_latest.pt`` holds the network,
    optimizer, LR scheduler and trainer state and the best metric so far, so a run interrupted at any point resumes
    with ``resume=True`` losing at most the epoch in progress. A ``DataParallel`` / ``DistributedDataParallel`` network
    is saved and loaded unwrapped (no ``module.`` prefix); under ``torch.distributed`` only rank 0 writes, while every
    rank that has the handler loads ``checkpoint_latest.pt`` on resume.

    ``checkpoint_latest.pt`` also holds the run's ``settings`` (refused on resume when they differ from this run's:
    a checkpoint of another operator or network would otherwise load into it) and the state of every random
    generator (:func:`monai_acs.workflows.runs.capture_rng_state`), so that a resumed run on the same device and
    software draws the same augmentations and batch order as one that was never interrupted.

    On resume the checkpoint is read once, here, and the resume is recorded in the run's ``run.json`` only after it
    loaded (:func:`monai_acs.workflows.runs.record_resume`).

    Args:
        run_dir: the run folder; or give ``run``. Default None.
        network: the trained network.
        evaluator: the validation engine whose ``state.metrics[key_metric]`` selects the best model.
        key_metric: metric name. Default ``"val_mean_dice"``.
        optimizer: optimizer to checkpoint. Default None.
        lr_scheduler: LR scheduler to checkpoint. Default None.
        resume: load ``checkpoint_latest.pt`` when the trainer starts. Default False.
        mode: ``"max"`` or ``"min"``. Default ``"max"``.
        settings: what defines the run (as given to :func:`monai_acs.workflows.runs.prepare_run_dir`). Default None.
        run: the :class:`monai_acs.workflows.Run` component; its ``dir``, ``resume`` and ``settings`` replace
            ``run_dir``, ``resume`` and ``settings``. Default None.
    """

    def __init__(
        self,
        run_dir: str | None = None,
        network: torch.nn.Module | None = None,
        evaluator: Engine | None = None,
        key_metric: str = "val_mean_dice",
        optimizer: Any = None,
        lr_scheduler: Any = None,
        resume: bool = False,
        mode: str = "max",
        settings: dict[str, Any] | None = None,
        run: Any = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if network is None or (run_dir is None and run is None):
            raise ValueError("RunCheckpointer needs network= and either run= or run_dir=")
        if run is not None:
            resume, settings = run.resume, run.settings
        self._run, self._run_dir = run, run_dir
        self.network, self.evaluator, self.key_metric = network, evaluator, key_metric
        self.optimizer, self.lr_scheduler, self.resume, self.mode = optimizer, lr_scheduler, str2bool(resume), mode
        self.best_metric = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1
        self.settings = normalize_settings(settings) if settings is not None else None
        self._trainer: Engine | None = None

    @property
    def _module(self) -> torch.nn.Module:
        # save and load the bare network, as MONAI's CheckpointSaver does: no "module." prefix from (D)DP
        wrapped = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
        return self.network.module if isinstance(self.network, wrapped) else self.network

    @staticmethod
    def _writes() -> bool:
        # under torch.distributed only global rank 0 writes; every rank loads on resume
        dist = torch.distributed
        return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)

    @property
    def run_dir(self) -> Path:
        """The run folder (the run component's, resolved when first needed)."""
        return Path(self._run.dir if self._run is not None else self._run_dir)

    @property
    def latest_path(self) -> Path:
        return self.run_dir / "checkpoint_latest.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "model_best.pt"

    def attach(self, engine: Engine) -> None:
        """Attach to the trainer (and to the evaluator given at construction)."""
        self._trainer = engine
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._load_latest)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_latest)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_save_best)

    def _state(self, engine: Engine) -> dict[str, Any]:
        state = {
            "network": self._module.state_dict(),
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "key_metric": self.key_metric,
            "rng": capture_rng_state(engine),
        }
        if self.settings is not None:
            state["run_settings"] = self.settings
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        return state

    def _save_latest(self, engine: Engine) -> None:
        if self._writes():
            save_atomic(self._state(engine), self.latest_path)

    def _maybe_save_best(self, evaluator: Engine) -> None:
        value = evaluator.state.metrics.get(self.key_metric)
        if value is None:
            raise KeyError(f"key metric {self.key_metric!r} not among {sorted(evaluator.state.metrics)}")
        better = value > self.best_metric if self.mode == "max" else value < self.best_metric
        if better:
            epoch = self._trainer.state.epoch if self._trainer is not None else evaluator.state.epoch
            self.best_metric, self.best_epoch = float(value), int(epoch)
            if not self._writes():
                return
            best = {"network": self._module.state_dict(), "epoch": epoch, self.key_metric: float(value)}
            if self.settings is not None:
                best["run_settings"] = self.settings
            save_atomic(best, self.best_path)
            logger.info("new best %s %.4f at epoch %d -> %s", self.key_metric, value, epoch, self.best_path)

    def _load_latest(self, engine: Engine) -> None:
        ckpt = self._run.take_resume_state() if self._run is not None else None
        if ckpt is None:  # no run component (or it was not started): read the file here
            if not self.latest_path.is_file():
                raise FileNotFoundError(f"resume: {self.latest_path} does not exist")
            ckpt = load_checkpoint(self.latest_path, what="checkpoint to resume")
        recorded = ckpt.get("run_settings")
        if recorded is not None and self.settings is not None:
            diff = [f"{k}={recorded[k]!r} (this command: {v!r})" for k, v in self.settings.items()
                    if k in recorded and recorded[k] != v]
            if diff:
                raise BundleError(
                    f"resume refused: {self.latest_path} was made with {'; '.join(diff)}; resume it with its own "
                    f"settings, or drop --resume to start a new run with these"
                )
        load_weights(self._module, ckpt, self.latest_path)
        if self.optimizer is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in ckpt:
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
            milestones = getattr(self.lr_scheduler, "milestones", None)
            if milestones:  # the schedule is the original run's, whatever --epochs says now (docs/runs.md)
                logger.info("learning-rate milestones kept from the run: epochs %s", sorted(milestones))
        self.best_metric, self.best_epoch = ckpt["best_metric"], ckpt["best_epoch"]
        engine.state.epoch, engine.state.iteration = ckpt["epoch"], ckpt["iteration"]
        if not restore_rng_state(ckpt.get("rng"), engine):
            logger.warning("%s: random generator state not (fully) restored; the resumed run draws different "
                           "augmentations than an uninterrupted one", self.latest_path)
        record_resume(self.run_dir)
        logger.info("resumed from %s at epoch %d (best %s %.4f)", self.latest_path, ckpt["epoch"], self.key_metric,
                    self.best_metric)


class ProgressBar:
    """tqdm progress bar over iterations with the loss, per epoch (ignite's ``ProgressBar``).

    Args:
        output_transform: maps the engine output to the value(s) shown. Default: the first sample's ``loss``.
        desc: label of the bar. Default ``"train"``.

    Note:
        ``MONAI_ACS_PROGRESS=0`` (or ``TQDM_DISABLE=1``) leaves the bar out, for log files.
    """

    def __init__(self, output_transform: Callable | None = None, desc: str = "train") -> None:
        self.output_transform = output_transform or _loss_of
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        if not progress_enabled():  # MONAI_ACS_PROGRESS=0 / TQDM_DISABLE=1: log files without bars
            return
        from ignite.handlers import ProgressBar as IgniteBar

        IgniteBar(persist=True, desc=self.desc).attach(engine, output_transform=self.output_transform)


def _loss_of(output: Any) -> dict[str, float]:
    item = output[0] if isinstance(output, (list, tuple)) and output else output
    loss = item.get("loss") if isinstance(item, dict) else None  # evaluators' outputs hold no loss: a plain counter
    return {"loss": float(loss)} if loss is not None else {}
