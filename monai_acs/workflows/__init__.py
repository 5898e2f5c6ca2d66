"""Steps and handlers the MONAI bundles call from their configs (``_target_`` / ``$`` expressions)."""

from __future__ import annotations

from .engines import LazySummaryWriter, channels_last_prepare_batch, publish_best, run_dir_path, select_prepare_batch
from .._progress import progress_enabled
from .feedback import TrainingFeedback
from .handlers import ProgressBar, RunCheckpointer
from .poc import pretrained_2d_weights
from .report import MetricsReport
from .runs import (
    default_run_name,
    locate_bundle_root,
    prepare_run_dir,
    publish_model,
    require_dataset_dir,
    save_atomic,
)
from .segmentation import feature_mauc_report, pretrain_2d

__all__ = [
    "LazySummaryWriter",
    "run_dir_path",
    "publish_best",
    "MetricsReport",
    "ProgressBar",
    "RunCheckpointer",
    "TrainingFeedback",
    "channels_last_prepare_batch",
    "default_run_name",
    "feature_mauc_report",
    "locate_bundle_root",
    "prepare_run_dir",
    "progress_enabled",
    "pretrain_2d",
    "pretrained_2d_weights",
    "publish_model",
    "require_dataset_dir",
    "save_atomic",
    "select_prepare_batch",
]
