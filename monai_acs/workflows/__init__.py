"""Steps and handlers the MONAI bundles call from their configs (``_target_`` / ``$`` expressions)."""

from __future__ import annotations

from .checkpoints import check_checkpoint, save_atomic
from .checks import require_dataset_dir
from .engines import LazySummaryWriter, PrepareBatch, channels_last_prepare_batch
from .._progress import progress_enabled
from .feedback import TrainingFeedback
from .handlers import ProgressBar, RunCheckpointer
from .poc import pretrained_2d_weights
from .publish import publish_best, publish_model
from .report import MetricsReport
from .runs import Run, check_bundle_root, default_run_name, find_latest_run, prepare_run_dir
from .segmentation import feature_mauc_report, pretrain_2d

__all__ = [
    "LazySummaryWriter",
    "MetricsReport",
    "PrepareBatch",
    "ProgressBar",
    "Run",
    "RunCheckpointer",
    "TrainingFeedback",
    "channels_last_prepare_batch",
    "check_checkpoint",
    "check_bundle_root",
    "default_run_name",
    "feature_mauc_report",
    "find_latest_run",
    "prepare_run_dir",
    "progress_enabled",
    "pretrain_2d",
    "pretrained_2d_weights",
    "publish_best",
    "publish_model",
    "require_dataset_dir",
    "save_atomic",
]
