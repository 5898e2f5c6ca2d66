"""Steps and handlers the MONAI bundles call from their configs (``_target_`` / ``$`` expressions)."""

from __future__ import annotations

from .batches import channels_last_prepare_batch, select_prepare_batch
from .engines import LazySummaryWriter, publish_best, run_dir_path
from .handlers import ProgressBar, RunCheckpointer
from .poc import finish_run, pretrained_2d_weights
from .runs import (
    as_bool,
    default_run_name,
    locate_bundle_root,
    prepare_run_dir,
    publish_model,
    require_dataset_dir,
    save_atomic,
)
from .segmentation import evaluate_segmentation, feature_mauc_report, format_table, pretrain_2d, write_report

__all__ = [
    "as_bool",
    "LazySummaryWriter",
    "run_dir_path",
    "publish_best",
    "ProgressBar",
    "RunCheckpointer",
    "channels_last_prepare_batch",
    "default_run_name",
    "evaluate_segmentation",
    "feature_mauc_report",
    "finish_run",
    "format_table",
    "locate_bundle_root",
    "prepare_run_dir",
    "pretrain_2d",
    "pretrained_2d_weights",
    "publish_model",
    "require_dataset_dir",
    "save_atomic",
    "select_prepare_batch",
    "write_report",
]
