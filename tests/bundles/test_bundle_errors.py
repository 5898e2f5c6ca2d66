"""Every hostile input ends in one line naming the file (or setting) and the fix, across the five bundles.

The configuration is checked in each config's ``initialize`` step, before any data is generated or network built,
so these commands run in this process (:func:`_helpers.bundle_in_process`) and take a second each. That the project's
message is the last line a real command prints (not MONAI's "Failed to evaluate" wrapper) is checked by
``test_runs.py::test_two_commands_with_one_run_name_at_once``.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from _helpers import REPO, bundle_in_process, messages

from monai_acs.errors import BundleError, check_command_line, check_schedule, user_message
from monai_acs.workflows.checks import check_affine, check_volume

BUNDLES = ["synthetic_poc_acs", "lits_acs", "lidc_cls_acs", "lidc_seg_acs", "deeplesion_a3d"]


def _configs(bundle: str, name: str):
    return REPO / "bundles" / bundle / "configs" / name


def _fails(tmp_path, bundle: str, *overrides) -> str:
    dirs = ["--dataset_dir", tmp_path / "data", "--models_dir", tmp_path / "models", "--runs_dir", tmp_path / "runs"]
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "training", "--config_file", _configs(bundle, "train.json"), *dirs, *overrides)
    assert not any(tmp_path.iterdir()), f"{sorted(tmp_path.iterdir())}: the command did work before refusing"
    return user_message(info.value) or messages(info.value)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_unknown_override_key_is_refused_with_the_closest_key(tmp_path, bundle):
    text = _fails(tmp_path, bundle, "--epoch", 7)
    assert text.startswith("BundleError: unknown setting --epoch 7: no key 'epoch' in train.json; did you mean "
                           "--epochs?"), text


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("overrides, expected", [
    (("--epochs", 0), "BundleError: --epochs must be 1 or more, got 0"),
    (("--epochs", -3), "BundleError: --epochs must be 1 or more, got -3"),
    (("--epochs", 2, "--val_interval", 5), ("BundleError: --val_interval 5 is larger than --epochs 2: validation "
                                            "would never run")),
], ids=["zero", "negative", "val-interval"])
def test_impossible_schedule_is_refused_before_any_work(tmp_path, bundle, overrides, expected):
    assert _fails(tmp_path, bundle, *overrides).startswith(expected)


@pytest.mark.parametrize("bundle", ["synthetic_poc_acs", "lits_acs", "lidc_cls_acs", "deeplesion_a3d"])
def test_inference_unknown_key_is_refused(tmp_path, bundle):
    configs = [_configs(bundle, "inference.json")]
    if bundle == "deeplesion_a3d":  # layered over train.json
        configs.insert(0, _configs(bundle, "train.json"))
    arg = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "--config_file", arg, "--ouput_dir", tmp_path / "out")
    assert "unknown setting --ouput_dir" in user_message(info.value) and "did you mean --output_dir" in (
        user_message(info.value)), messages(info.value)


def test_added_components_and_named_ids_are_accepted():
    argv = ["/x/monai/bundle/__main__.py", "run", "--config_file", str(_configs("synthetic_poc_acs", "train.json")),
            "--final_id", "show", "--show", "$print(1)", "--train#dataloader#num_workers", "0", "--epochs=3"]
    check_command_line(argv)
    with pytest.raises(BundleError, match=r"--train#dataloader#workers"):
        check_command_line(argv + ["--train#dataloader#workers", "0"])
    check_command_line(["pytest", "--epoch", "7"])  # not a bundle command line: nothing checked


def test_schedule_check_values():
    assert check_schedule("4", 2) == 4
    with pytest.raises(BundleError, match="whole number"):
        check_schedule(2.5)


# -- volumes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("volume, affine, expected", [
    (np.full((4, 4, 4), np.nan, np.float32), np.eye(4), "64 of 64 voxels are NaN or infinite"),
    (np.full((4, 4, 4), np.inf, np.float32), np.eye(4), "are NaN or infinite"),
    (np.zeros((4, 4), np.float32), np.eye(4), r"shape \(4, 4\) is not a 3D volume"),
    (np.zeros((4, 4, 0), np.float32), np.eye(4), "is empty"),
    (np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 0.0, 1.0]), "affine is singular"),
    (np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 1e5, 1.0]), "voxel size 1 x 1 x 1e\\+05 mm is outside"),
    (np.zeros((4, 4, 4), np.float32), np.full((4, 4), np.nan), "affine holds NaN"),
], ids=["nan", "inf", "2d", "empty", "singular", "huge-voxels", "nan-affine"])
def test_check_volume_names_the_file_and_the_fault(volume, affine, expected):
    with pytest.raises(BundleError, match=rf"^ct_7.nii.gz: .*{expected}"):
        check_volume(volume, "ct_7.nii.gz", affine=affine)


def test_check_volume_accepts_one_slice_and_refuses_below_min_size():
    check_volume(np.zeros((8, 8, 1), np.float32), "one_slice.nii.gz", affine=np.eye(4))
    with pytest.raises(BundleError, match="size 8 x 8 x 1 is smaller than 2 x 2 x 2"):
        check_volume(np.zeros((8, 8, 1), np.float32), "one_slice.nii.gz", min_size=2)
    assert check_affine(np.diag([0.7, 0.7, 5.0, 1.0]), "x").shape == (4, 4)


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def test_deeplesion_reader_refuses_nan_and_names_a_truncated_file(tmp_path):
    from monai_acs.workflows.ct_io import read_ct_volume  # NIfTI / DICOM through the one CT reader, load_ct

    nan = _nifti(tmp_path / "nan.nii.gz", np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(BundleError, match=rf"CT '{nan}': 192 of 192 voxels are NaN or infinite"):
        read_ct_volume(nan)
    good = _nifti(tmp_path / "good.nii.gz", np.random.rand(32, 32, 8).astype(np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:600]))
    with pytest.raises(BundleError, match=rf"cannot read CT '{truncated}': .*corrupt or truncated"):
        read_ct_volume(truncated)
    assert read_ct_volume(good)["volume"].shape == (8, 32, 32)


def test_lidc_reader_refuses_nan(tmp_path):
    from monai_acs.workflows.ct_io import load_ct

    nan = _nifti(tmp_path / "nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32))
    with pytest.raises(BundleError, match=rf"CT '{nan}': 256 of 256 voxels are NaN or infinite"):
        load_ct(nan)
