"""Data: synthetic proof-of-concept generators and data set readers."""

from __future__ import annotations

from .synthetic import (
    POC_2D_CLASS_IDS,
    POC_CLASS_NAMES,
    POC_NUM_CLASSES,
    make_2d_sample,
    make_3d_sample,
    read_2d_samples,
    write_dataset,
)

__all__ = [
    "POC_2D_CLASS_IDS",
    "POC_CLASS_NAMES",
    "POC_NUM_CLASSES",
    "make_2d_sample",
    "make_3d_sample",
    "read_2d_samples",
    "write_dataset",
]
