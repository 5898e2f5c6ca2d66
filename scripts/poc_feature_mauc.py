"""Feature mAUC of the proof-of-concept UNet before any 3D training, per operator, random vs 2D-pretrained.

This is the "Feature mAUC w/o training" column of ACS paper Table IV, without the (slow) 3D training that
``scripts/compare.py`` adds. Every setting (UNet channels, data, 2D pretraining) comes from the bundle's own
``configs/train.json``, with the same overrides a training run takes; the generated data and the pretrained 2D UNet
are created as a training run would create them, if absent.

    python scripts/poc_feature_mauc.py --out bundles/synthetic_poc_acs/docs/feature_mauc.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, load_decathlon_datalist
from monai.transforms import Compose, EnsureTyped, LoadImaged

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.networks import poc_unet
from monai_acs.workflows import feature_mauc_report


def main(
    bundle: str = "bundles/synthetic_poc_acs",
    operators: str | tuple = ("acs", "conv2p5d", "i3d", "mean_acs", "soft_acs", "a3d"),
    out: str | None = None,
    seed: int = 0,
    **overrides: Any,
) -> dict:
    """Print and optionally save ``{"<operator>:<p|r>": {"feature_mauc", "parameters"}}``.

    Args:
        bundle: the proof-of-concept bundle folder. Default ``bundles/synthetic_poc_acs``.
        operators: comma-separated operator keys. Default acs, conv2p5d, i3d, mean_acs, soft_acs, a3d.
        out: JSON file to write. Default None (print only).
        seed: seed of the random ("r.") initialisation. Default 0.
        overrides: train.json keys, as for a training run (``--channels "[8,16,32,64]"``, ``--dataset_dir ...``).
    """
    root = Path(bundle).resolve()
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser.update({"bundle_root": str(root), **overrides, "pretrained": True})
    parser.get_parsed_content("prepare_data")  # the bundle's run step: generate the data set if absent
    weights_2d = parser.get_parsed_content("weights_2d")
    channels = tuple(parser.get_parsed_content("channels"))
    options = {key: parser.get_parsed_content(key) for key in ("strides", "num_res_units", "num_classes")}
    if isinstance(operators, str):
        operators = tuple(o.strip() for o in operators.split(","))
    items = load_decathlon_datalist(parser.get_parsed_content("datalist"), True, "validation")
    transform = Compose([LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True),
                         EnsureTyped(["image", "label"], track_meta=False)])
    loader = DataLoader(CacheDataset(items, transform, progress=False), batch_size=1)
    results = {}
    for operator in operators:
        for pretrained in (True, False):
            torch.manual_seed(seed)
            net = poc_unet(operator, weights=weights_2d if pretrained else None, channels=channels,
                           strides=tuple(options["strides"]), num_res_units=options["num_res_units"],
                           out_channels=options["num_classes"], depth=parser.get_parsed_content("size"))
            value = feature_mauc_report(net, loader, "cpu", options["num_classes"])
            results[f"{operator}:{'p' if pretrained else 'r'}"] = {
                "feature_mauc": value, "parameters": sum(p.numel() for p in net.parameters())}
            print(f"{operator} {'p.' if pretrained else 'r.'}: feature mAUC {value:.4f}", flush=True)
    if out:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    fire.Fire(main)
