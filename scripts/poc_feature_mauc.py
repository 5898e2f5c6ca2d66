"""Feature mAUC of the proof-of-concept UNet before any 3D training, per operator, random vs 2D-pretrained.

This is the "Feature mAUC w/o training" column of ACS paper Table IV, without the (slow) 3D training that
``scripts/compare.py`` adds. It needs the bundle's generated data and its pretrained 2D UNet, which the first
``python -m monai.bundle run training --config_file bundles/synthetic_poc_acs/configs/train.json`` creates.

    python scripts/poc_feature_mauc.py --out bundles/synthetic_poc_acs/docs/feature_mauc.json
"""

from __future__ import annotations

import json
from pathlib import Path

import fire
import torch
from monai.data import CacheDataset, DataLoader, load_decathlon_datalist
from monai.transforms import Compose, EnsureTyped, LoadImaged

from monai_acs.networks import poc_unet
from monai_acs.workflows import feature_mauc_report


def main(
    bundle: str = "bundles/synthetic_poc_acs",
    weights_2d: str = "models/pretrained_2d_unet_c8-16-32-64_s2-2-2_r1_n2000_e3_seed0.pt",
    operators: str | tuple = ("acs", "conv2p5d", "i3d", "mean_acs", "soft_acs", "a3d"),
    channels: tuple = (8, 16, 32, 64),
    out: str | None = None,
    seed: int = 0,
) -> dict:
    """Print and optionally save ``{"<operator>:<p|r>": {"feature_mauc", "parameters"}}``."""
    root = Path(bundle)
    if isinstance(operators, str):
        operators = tuple(o.strip() for o in operators.split(","))
    items = load_decathlon_datalist(str(root / "data/poc/datalist.json"), True, "validation")
    transform = Compose([LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True),
                         EnsureTyped(["image", "label"], track_meta=False)])
    loader = DataLoader(CacheDataset(items, transform, progress=False), batch_size=1)
    results = {}
    for operator in operators:
        for pretrained in (True, False):
            torch.manual_seed(seed)
            net = poc_unet(operator, weights=str(root / weights_2d) if pretrained else None, channels=tuple(channels))
            value = feature_mauc_report(net, loader, "cpu", 6)
            results[f"{operator}:{'p' if pretrained else 'r'}"] = {
                "feature_mauc": value, "parameters": sum(p.numel() for p in net.parameters())}
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    fire.Fire(main)
