"""Bad input on the bundles' data path fails with a ValueError naming the file and the fault.

The transforms are tested directly, and through the PoC train.json preprocessing parsed in-process (the command line
itself is covered by ``test_synthetic_poc_bundle.py``: a label shape mismatch, a corrupt NIfTI, a missing folder).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import POC, TINY_TRAIN, messages
from monai.data import MetaTensor

from monai_acs.workflows.validation import CheckedLoadImaged, ValidateSegmentationd


def save_nifti(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def sample(image: torch.Tensor, label: torch.Tensor | None = None) -> dict:
    d = {"image": MetaTensor(image, meta={"filename_or_obj": "/data/img_7.nii.gz"})}
    if label is not None:
        d["label"] = MetaTensor(label, meta={"filename_or_obj": "/data/lbl_7.nii.gz"})
    return d


# -- CheckedLoadImaged --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "corruption",
    [
        pytest.param(lambda raw: gzip.compress(gzip.decompress(raw)[:400]), id="truncated-volume"),
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated-gzip"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: b"not an image at all", id="text"),
    ],
)
def test_checked_load_names_unreadable_file(tmp_path, corruption):
    good = save_nifti(np.random.rand(8, 8, 8).astype(np.float32), tmp_path / "good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(corruption(good.read_bytes()))
    load = CheckedLoadImaged(["image", "label"], ensure_channel_first=True)
    with pytest.raises(ValueError, match="corrupt, truncated") as info:
        load({"image": str(good), "label": str(bad)})
    assert f"cannot read label file '{bad}'" in str(info.value)


def test_checked_load_reads_good_files(tmp_path):
    image = np.random.rand(8, 6, 4).astype(np.float32)
    path = save_nifti(image, tmp_path / "img.nii.gz")
    out = CheckedLoadImaged("image", ensure_channel_first=True)({"image": str(path)})
    assert out["image"].shape == (1, 8, 6, 4)
    np.testing.assert_allclose(np.asarray(out["image"][0]), image)
    assert out["image"].meta["filename_or_obj"] == str(path)


def test_checked_load_names_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read image file") as info:
        CheckedLoadImaged("image")({"image": str(tmp_path / "gone.nii.gz")})
    assert "gone.nii.gz" in str(info.value)


# -- ValidateSegmentationd ----------------------------------------------------------------------------------------


def test_validate_passes_good_pair_unchanged():
    d = sample(torch.randn(1, 4, 5, 6), torch.randint(0, 6, (1, 4, 5, 6)))
    out = ValidateSegmentationd(num_classes=6)(d)
    assert out["image"] is d["image"] and out["label"] is d["label"]


def test_validate_image_only_sample_for_inference():
    ValidateSegmentationd(num_classes=6)(sample(torch.randn(1, 4, 4, 4)))


@pytest.mark.parametrize(
    "image, label, expected",
    [
        (torch.randn(2, 4, 4, 4), torch.zeros(1, 4, 4, 4), r"image /data/img_7.nii.gz has 2 channel\(s\).*expected 1"),
        (torch.randn(1, 4, 4, 4), torch.zeros(1, 4, 4, 5),
         r"label /data/lbl_7.nii.gz has spatial shape \(4, 4, 5\) but image /data/img_7.nii.gz has \(4, 4, 4\)"),
        (torch.randn(1, 4, 4, 4), torch.zeros(2, 4, 4, 4), r"label /data/lbl_7.nii.gz has shape \(2, 4, 4, 4\); expected"),
        (torch.randn(1, 4, 4, 4), torch.full((1, 4, 4, 4), 6.0), r"values \[6\] outside the classes 0..5"),
        (torch.randn(1, 4, 4, 4), torch.full((1, 4, 4, 4), -1.0), r"values \[-1\] outside the classes 0..5"),
        (torch.randn(1, 4, 4, 4), torch.full((1, 4, 4, 4), 2.5), r"values \[2.5\] outside the classes 0..5"),
        (torch.full((1, 4, 4, 4), float("nan")), torch.zeros(1, 4, 4, 4), r"img_7.nii.gz holds NaN or infinite"),
    ],
    ids=["image-channels", "spatial-shape", "label-channels", "label-too-high", "label-negative", "label-fraction",
         "image-nan"],
)
def test_validate_rejects_bad_sample(image, label, expected):
    with pytest.raises(ValueError, match=expected):
        ValidateSegmentationd(num_classes=6)(sample(image, label))


# -- through the PoC train.json preprocessing ---------------------------------------------------------------------


def train_dataset_error(tmp_path: Path, poc_data: Path, corrupt) -> str:
    """Copy the tiny data, let ``corrupt(folder)`` break it, build train.json's ``train#dataset``; the messages."""
    from monai.bundle import ConfigParser

    data = tmp_path / "poc"
    shutil.copytree(poc_data, data)
    corrupt(data)
    parser = ConfigParser()
    parser.read_config(str(POC / "configs" / "train.json"))
    overrides = {**TINY_TRAIN, "pretrained": False, "bundle_root": str(POC), "dataset_dir": str(data),
                 "models_dir": str(tmp_path / "models"), "runs_dir": str(tmp_path / "runs")}
    for key, value in overrides.items():
        parser[key] = value
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#dataset")  # CacheDataset loads and checks every case when built
    return messages(info.value)


def test_train_config_rejects_label_values_outside_classes(tmp_path, poc_data):
    def corrupt(data):
        label = np.asarray(nib.load(str(data / "labelsTr" / "case_000.nii.gz")).dataobj).copy()
        label[0, 0, :3] = 9
        save_nifti(label, data / "labelsTr" / "case_000.nii.gz")

    text = train_dataset_error(tmp_path, poc_data, corrupt)
    assert f"label {tmp_path / 'poc' / 'labelsTr' / 'case_000.nii.gz'} has values [9] outside the classes 0..5" in text


def test_train_config_rejects_wrong_channel_count(tmp_path, poc_data):
    def corrupt(data):
        image = np.asarray(nib.load(str(data / "imagesTr" / "case_001.nii.gz")).dataobj)
        save_nifti(np.stack([image, image], axis=-1), data / "imagesTr" / "case_001.nii.gz")

    text = train_dataset_error(tmp_path, poc_data, corrupt)
    assert f"image {tmp_path / 'poc' / 'imagesTr' / 'case_001.nii.gz'} has 2 channel(s)" in text
