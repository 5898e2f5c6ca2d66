"""scripts/poc_feature_mauc.py takes its settings from the PoC bundle's train.json and reports r. and p. per operator."""

from __future__ import annotations

import json
from pathlib import Path

from script_helpers import load_script

POC = Path(__file__).resolve().parents[1] / "bundles" / "synthetic_poc_acs"


def test_feature_mauc_script_on_tiny_settings(tmp_path):
    module = load_script("poc_feature_mauc")
    out = tmp_path / "fmauc.json"
    tiny = {"channels": [4, 8], "strides": [2], "size": 16, "n_2d": 32, "n_3d_train": 2, "n_3d_val": 2,
            "pretrain_epochs": 1, "dataset_dir": str(tmp_path / "data"), "models_dir": str(tmp_path / "models")}
    results = module.main(bundle=str(POC), operators="acs,conv2p5d", out=str(out), **tiny)

    assert json.loads(out.read_text()) == results
    assert list(results) == ["acs:p", "acs:r", "conv2p5d:p", "conv2p5d:r"]
    for value in results.values():
        assert 0.5 <= value["feature_mauc"] <= 1.0  # max(AUC, 1 - AUC) per channel
    # ACS and 2.5D keep the 2D parameter count; p. and r. differ only in their values
    assert len({v["parameters"] for v in results.values()}) == 1
    assert results["acs:p"]["feature_mauc"] != results["acs:r"]["feature_mauc"]
    # the data and the 2D pretraining went where the overrides said, as a training run would put them
    assert (tmp_path / "data" / "datalist.json").is_file()
    assert list((tmp_path / "models").glob("pretrained_2d_unet_c4-8_s2_r1_n32_e1_seed0.pt"))
