"""What the bundles' configs need around MONAI's engines: batch preparation, a TensorBoard writer that creates its
folder only when the run writes its first event (building a workflow has no side effects), the detector's engine
steps and its learning-rate schedule."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines import PrepareBatchDefault, default_prepare_batch
from monai.utils import str2bool
from torch import Tensor, nn

__all__ = ["LazySummaryWriter", "PrepareBatch", "channels_last_prepare_batch"]


class LazySummaryWriter:
    """``torch.utils.tensorboard.SummaryWriter(log_dir)`` created on first use, for MONAI's ``TensorBoardStatsHandler
    (summary_writer=...)``: the handler can be built (and a workflow checked) without creating ``log_dir``.

    Args:
        log_dir: the event folder.
        **kwargs: further ``SummaryWriter`` arguments.
    """

    def __init__(self, log_dir: str | os.PathLike, **kwargs: Any) -> None:
        self.log_dir, self._kwargs, self._writer = str(log_dir), kwargs, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._writer is None:
            import atexit

            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
            atexit.register(self._writer.close)  # MONAI leaves a writer it was given open: flush at exit
        return getattr(self._writer, name)

    def close(self) -> None:
        """Close the writer if one was created (nothing to do otherwise)."""
        if self._writer is not None:
            self._writer.close()


def channels_last_prepare_batch(
    batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> Any:
    """MONAI's ``default_prepare_batch``, then a 5-D image (N, C, D, H, W) in ``torch.channels_last_3d``.

    Labels and other inputs are left as they are.

    Examples:
        >>> image, label = channels_last_prepare_batch({"image": torch.zeros(2, 3, 4, 5, 6), "label": torch.ones(2)})
        >>> image.is_contiguous(memory_format=torch.channels_last_3d), label.shape
        (True, torch.Size([2]))
    """
    prepared = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
    image, rest = (prepared[0], prepared[1:]) if isinstance(prepared, tuple) else (prepared, None)
    if isinstance(image, torch.Tensor) and image.dim() == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    return image if rest is None else (image, *rest)


class PrepareBatch(PrepareBatchDefault):
    """MONAI's default batch preparation, with an option to hand the network a 5-D image in
    ``torch.channels_last_3d`` (:func:`channels_last_prepare_batch`): a config component,
    ``{"_target_": "monai_acs.workflows.PrepareBatch", "channels_last": "@channels_last"}``.

    Args:
        channels_last: bool or a bundle CLI string such as ``"true"``. Default False.
    """

    def __init__(self, channels_last: Any = False) -> None:
        self.channels_last = str2bool(channels_last)

    def __call__(
        self, batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> Any:
        prepare = channels_last_prepare_batch if self.channels_last else default_prepare_batch
        return prepare(batchdata, device, non_blocking, **kwargs)


def sum_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> Tensor:
    """The detector's total loss: the weighted sum of its loss dict (equal weights, as in the papers, by default)."""
    if not losses:
        raise ValueError("sum_losses: the detector returned no loss")
    weights = weights or {}
    return sum(float(weights.get(k, 1.0)) * v for k, v in losses.items())  # type: ignore[return-value]


def _plain(x: Any) -> Tensor:
    """A plain tensor (MONAI ``MetaTensor`` meta-data tracking slows every op of a large network down)."""
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _to_device(batch: Sequence[Mapping[str, Any]], device: torch.device, with_targets: bool) -> tuple:
    images = torch.stack([_plain(item["image"]).to(torch.float32) for item in batch])
    if images.dim() == 4:
        images = images[:, None]  # (N, D, H, W) -> (N, 1, D, H, W)
    images = images.to(device)
    if not with_targets:
        return images, None
    targets = [{key: _plain(item[key]).to(device) for key in ("boxes", "labels", "masks")} for item in batch]
    return images, targets


class DetectionTrainStep:
    """``iteration_update`` of a MONAI ``SupervisedTrainer`` for a torchvision-style detector.

    Moves a :func:`list_collate` batch to the engine's device, runs ``network(images, targets)`` in training mode,
    sums the loss dict with ``engine.loss_function`` (:func:`sum_losses`), back-propagates (optionally clipping the
    gradient norm) and steps ``engine.optimizer``.

    Args:
        grad_clip_norm: maximal gradient norm (35 in the reference configuration); None disables. Default None.

    Returns (per call):
        The engine output in MONAI's decollated form, one dict per image, each holding the batch's
        ``{"loss": total, <each loss>: value}`` as detached tensors (the loss replicated as MONAI's trainers do), so
        handlers that read ``from_engine(["loss"], first=True)`` -- MONAI's ``MLFlowHandler`` under ``--tracking
        mlflow``, ``StatsHandler`` -- get the total loss.
    """

    def __init__(self, grad_clip_norm: float | None = None) -> None:
        self.grad_clip_norm = grad_clip_norm

    def __call__(self, engine: Engine, batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Tensor]]:
        images, targets = _to_device(batch, engine.state.device, True)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        losses = engine.network(images, targets)
        loss = engine.loss_function(losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"detection loss is not finite at iteration {engine.state.iteration}: "
                f"{ {k: float(v) for k, v in losses.items()} }"
            )
        loss.backward()
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(engine.network.parameters(), float(self.grad_clip_norm))
        engine.optimizer.step()
        out = {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}
        return [out for _ in images]


class DetectorTrunk(nn.Module):
    """The bundle's ``network_def`` for a :class:`monai_acs.networks.deeplesion.DeepLesionDetector`: the detector's
    modules (shared, not copied) with a tensor-in / tensor-out ``forward``, its 3D trunk,
    ``(N, 1, D, H, W) -> (N, C, D, H / 16, W / 16)`` features.

    MONAI's detection bundles keep the network and the detector apart: ``network_def`` is the network that
    ``verify_net_in_out`` runs and ``ckpt_export`` exports, and a separate ``detector`` component wraps it with
    anchors, proposals, box and mask decoding and the losses. Here the two-stage heads need the proposals, so the
    ``detector`` is built first and ``network_def`` is this view on it. It holds every module of the detector
    (``backbone``, ``neck``, ``rpn``, ``roi_heads``), so its state dict has the detector's keys: a checkpoint of
    ``train.json`` loads ``strict`` into ``inference.json``'s ``network_def`` and ``detector`` alike, and
    ``ckpt_export`` exports all the trained weights (only the trunk is traced).

    Args:
        detector: the detector whose modules these are.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        for name, module in detector.named_children():
            self.add_module(name, module)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


class DetectionEvalStep:
    """``iteration_update`` of a MONAI ``SupervisedEvaluator``: the detector in eval mode on a list batch.

    Args:
        keep_masks: keep the pasted mask probabilities in the output (inference); False drops them (FROC needs
            boxes and scores only). Default False.
        with_targets: put the items' targets in ``output["label"]``. Default True.

    Returns (per call):
        ``{"pred": [per image dict on CPU], "label": [targets on CPU] or None, "items": the batch}``.
    """

    def __init__(self, keep_masks: bool = False, with_targets: bool = True) -> None:
        self.keep_masks, self.with_targets = keep_masks, with_targets

    def __call__(self, engine: Engine, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        images, _ = _to_device(batch, engine.state.device, False)
        engine.network.eval()
        with torch.no_grad():
            detections = engine.network(images)
        pred = [{k: v.detach().cpu() for k, v in det.items() if self.keep_masks or k != "masks"} for det in detections]
        label = None
        if self.with_targets:
            label = [{"boxes": torch.as_tensor(item["boxes"]).cpu()} for item in batch]
        return {"pred": pred, "label": label, "items": list(batch)}


class WarmupMultiStepLambda:
    """LR factor per iteration: linear warm-up, then x ``gamma`` at each milestone epoch (for ``LambdaLR``).

    The papers' schedule (lr 0.02, x0.1 at epochs 10 and 13 of 20) with the reference configuration's linear
    warm-up from ``warmup_ratio`` over the first ``warmup_iters`` iterations. Step the scheduler every iteration.

    Args:
        iters_per_epoch: iterations per epoch (the training loader's length).
        milestones: epochs (1-based, as in the papers: "at epoch 10") from which the factor is multiplied by gamma.
        gamma: factor. Default 0.1.
        warmup_iters: warm-up length in iterations (0 disables). Default 0.
        warmup_ratio: starting factor of the warm-up. Default 0.01.
    """

    def __init__(
        self,
        iters_per_epoch: int,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.01,
    ) -> None:
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma, self.warmup_iters, self.warmup_ratio = float(gamma), int(warmup_iters), float(warmup_ratio)

    def __call__(self, iteration: int) -> float:
        epoch = iteration // self.iters_per_epoch + 1  # the 1-based epoch this iteration belongs to
        factor = self.gamma ** sum(epoch > m for m in self.milestones)
        if iteration < self.warmup_iters:
            factor *= self.warmup_ratio + (1 - self.warmup_ratio) * iteration / self.warmup_iters
        return factor

