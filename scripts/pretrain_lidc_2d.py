"""2D pretraining on axial slices of the LIDC training crops, for the LIDC bundles' ``weights_2d`` key.

A stand-in for ImageNet on a machine that has no ImageNet file (no internet): the 2D network of the bundles learns
to segment the nodule on every axial slice of the *training* crops, and its weights then start the 3D networks
("p.*" rows; see ``bundles/lidc_seg_acs/docs/README.md``). It is not the paper's ImageNet pretraining: label
results that use it as such.

Usage (from the repository root):

    python scripts/pretrain_lidc_2d.py --dataset_dir /data/lidc_crops --out /data/lidc_pre2d \\
        [--width 64] [--spacing_mm 1.0] [--roi_size 48] [--epochs 5]
    python -m monai.bundle run training --config_file bundles/lidc_seg_acs/configs/train.json \\
        --dataset_dir /data/lidc_crops --weights_2d /data/lidc_pre2d/seg_2d.pt      # cls: cls_2d.pt

The crops are read with the segmentation bundle's own ``load_and_window`` transforms (HU window, resampling to
``spacing_mm``), so the 2D inputs match what the 3D networks see.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai.bundle import ConfigParser  # noqa: E402
from monai.transforms import Compose  # noqa: E402

from monai_acs.workflows.lidc import lidc_datalist, pretrain_lidc_2d  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "lidc_seg_acs"


def main(
    dataset_dir: str,
    out: str,
    backbone: str = "resnet18",
    width: int = 64,
    spacing_mm: float = 1.0,
    roi_size: int = 48,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Pretrain and write ``OUT/seg_2d.pt`` and ``OUT/cls_2d.pt`` (each with a ``.json`` of its settings).

    Args:
        dataset_dir: the folder ``scripts/prepare_lidc.py`` wrote (only its training split is read).
        out: output folder; files already there are reused.
        backbone, width: the bundles' network keys (must match the 3D runs that load the weights).
        spacing_mm, roi_size: the bundles' resampling and crop keys (must match too).
        epochs, batch_size, learning_rate, seed, device: 2D training settings.
    """
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"dataset_dir": str(dataset_dir), "spacing_mm": float(spacing_mm), "roi_size": int(roi_size)})
    load = Compose(parser.get_parsed_content("load_and_window"))
    items = lidc_datalist(dataset_dir, "training", "segmentation")
    print(f"2D pretraining on the axial slices of {len(items)} training crops ({roi_size}^3 at {spacing_mm} mm)",
          flush=True)
    paths = pretrain_lidc_2d(items, load, out, backbone, width, roi_size, int(parser["in_channels"]), epochs,
                             batch_size, learning_rate, seed, device)
    print(json.dumps(paths, indent=2), flush=True)
    return paths


if __name__ == "__main__":
    fire.Fire(main)
