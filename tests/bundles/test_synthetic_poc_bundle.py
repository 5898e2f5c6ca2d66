"""The proof-of-concept bundle through the ``python -m monai.bundle`` command line, on tiny generated data.

Every config runs as a real subprocess: training with a plain ``run`` (``conftest.poc_trained``, shared by all
tests), evaluation, inference, and a resumed training started from inside the bundle folder. The module fixture
``jobs`` starts those in the background at once, and the tests that need none of them come first. The commands
that only have to fail with a clear message, and the model zoo checks (``verify_metadata``, ``verify_net_in_out``,
``ckpt_export``), run through the same ``fire`` entry point in this process (:func:`_helpers.bundle_in_process`),
which saves an interpreter start (~10 s of CPU) each."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import (
    META_SCHEMA,
    POC,
    REPO,
    SCHEMAS,
    TINY_INFER,
    TINY_NET,
    TINY_TRAIN,
    bundle_command,
    bundle_in_process,
    cli_args,
    config_list,
    file_states,
    messages,
    snapshot,
)

CONFIGS = POC / "configs"
TRAIN, EVALUATE, INFERENCE, META = (
    CONFIGS / f for f in ("train.json", "evaluate.json", "inference.json", "metadata.json")
)
FOREGROUND = ["cone", "pyramid", "cube", "cylinder", "sphere"]


def tiny_network() -> torch.nn.Module:
    from monai_acs.networks import poc_unet

    return poc_unet("acs", channels=TINY_NET["channels"], strides=TINY_NET["strides"]).eval()


def save_nifti(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


@pytest.fixture(scope="module", autouse=True)
def _start_background_commands(request) -> None:
    """Start the subprocesses before the first test, but only those that the selected tests need."""
    needed = {name for item in request.session.items if item.module is request.module for name in item.fixturenames}
    for name in ("jobs", "poc_trained"):
        if name in needed:
            request.getfixturevalue(name)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, poc_trained, command_pool):
    """Start this file's subprocesses once the shared training run is done; ``jobs["pool"][name]`` waits for one."""
    tmp = tmp_path_factory.mktemp("poc_cli")
    pool, trained, after = command_pool, poc_trained, ["poc_trained"]

    pool.submit("evaluate", lambda: bundle_command(
        "run", "--config_file", config_list(TRAIN, EVALUATE), *cli_args(TINY_TRAIN), *cli_args(trained.dirs()),
        "--output_dir", tmp / "eval"), after=after)
    pool.submit("inference", lambda: bundle_command(
        "run", "--config_file", INFERENCE, *cli_args(TINY_INFER), "--models_dir", trained.models,
        "--input_dir", trained.data / "imagesVal", "--output_dir", tmp / "pred"), after=after)

    def resume_from_inside_bundle():
        """A copy of the 1-epoch run resumed to 2 epochs, with cwd=bundle folder and a relative --config_file."""
        shutil.copytree(trained.run_dir, tmp / "inside_runs" / "resumed")
        shutil.copytree(trained.models, tmp / "inside_models", ignore=shutil.ignore_patterns("model.pt", "model.json"))
        before = (snapshot(REPO, recursive=False), snapshot(POC))
        result = bundle_command(
            "run", "training", "--config_file", "configs/train.json", *cli_args({**TINY_TRAIN, "epochs": 2}),
            "--dataset_dir", trained.data, "--models_dir", tmp / "inside_models", "--runs_dir", tmp / "inside_runs",
            "--resume", "true", "--run_name", "resumed",
            "--final_id", "show_root", "--show_root", "$print('bundle_root=' + @bundle_root)",
            cwd=POC)
        return result, before, (snapshot(REPO, recursive=False), snapshot(POC))

    pool.submit("resume_inside", resume_from_inside_bundle, after=after)
    return {"tmp": tmp, "pool": pool}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with an untrained tiny network's ``model.pt``, for checks that need no trained model."""
    folder = tmp_path_factory.mktemp("tiny_models")
    torch.save(tiny_network().state_dict(), folder / "model.pt")
    return folder


# -- bad input ----------------------------------------------------------------------------------------------------


def test_inference_missing_input_dir_fails_clearly(tmp_path, tiny_models):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "--config_file", INFERENCE, *cli_args(TINY_INFER), "--models_dir", tiny_models,
                          "--input_dir", missing, "--output_dir", tmp_path / "pred")
    text = messages(info.value)
    assert f"FileNotFoundError: dataset_dir '{missing}' does not exist. Expected: NIfTI" in text, text
    assert not (tmp_path / "pred").exists()


def test_inference_skips_bad_files_and_processes_the_good_ones(tmp_path, poc_data, tiny_models, capsys):
    # A folder with one good volume and four bad ones: each bad one gets one line naming it and the fault, the good
    # one is still segmented, and inputs.csv records every status.
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(poc_data / "imagesVal" / "case_000.nii.gz", inputs / "case_000.nii.gz")
    good = (poc_data / "imagesVal" / "case_001.nii.gz").read_bytes()
    volume = np.asarray(nib.load(str(poc_data / "imagesVal" / "case_001.nii.gz")).dataobj).astype(np.float32)
    truncated = inputs / "case_001.nii.gz"  # an interrupted copy: nibabel's own error has no file name
    truncated.write_bytes(gzip.compress(gzip.decompress(good)[:400]))
    nan = inputs / "case_002.nii.gz"
    save_nifti(np.full_like(volume, np.nan), nan)
    flat = inputs / "case_003.nii.gz"
    save_nifti(volume[:, :, 0], flat)
    one_slice = inputs / "case_004.nii.gz"
    save_nifti(volume[:, :, :1], one_slice)
    bundle_in_process("run", "--config_file", INFERENCE, *cli_args(TINY_INFER), "--models_dir", tiny_models,
                      "--input_dir", inputs, "--output_dir", tmp_path / "pred")
    out = capsys.readouterr().out
    assert f"SKIPPED {truncated}: ValueError: cannot read image file '{truncated}'" in out and "truncated" in out, out
    assert f"SKIPPED {nan}: ValueError: image {nan} holds NaN or infinite values" in out, out
    assert f"SKIPPED {flat}: BundleError: {flat}: shape (1, 16, 16) is not a 3D volume" in out, out
    assert f"SKIPPED {one_slice}: BundleError: {one_slice}: size 16 x 16 x 1 is smaller than 2 x 2 x 2" in out, out
    assert "1 of 5 inputs pass the checks; 4 skipped" in out
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == ["case_000_seg.nii.gz"]
    statuses = (tmp_path / "pred" / "inputs.csv").read_text().splitlines()
    assert statuses[1] == f"{inputs / 'case_000.nii.gz'},ok" and sum("error:" in row for row in statuses) == 4


def test_train_label_shape_mismatch_names_the_file(tmp_path, poc_data):
    data = tmp_path / "poc"
    shutil.copytree(poc_data, data)
    label = data / "labelsTr" / "case_001.nii.gz"
    save_nifti(np.zeros((16, 16, 12), np.uint8), label)
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "training", "--config_file", TRAIN, *cli_args(TINY_TRAIN), "--pretrained", "false",
                          "--dataset_dir", data, "--models_dir", tmp_path / "models", "--runs_dir", tmp_path / "runs")
    text = messages(info.value)
    assert f"label {label} has spatial shape (16, 16, 12) but image" in text and "(16, 16, 16)" in text, text


# -- augmentation ------------------------------------------------------------------------------------------------


def test_training_augments_and_validation_does_not():
    from monai.bundle import ConfigParser
    from monai.transforms import RandFlipd, Randomizable, RandRotate90d

    parser = ConfigParser()
    parser.read_config(str(POC / "configs" / "train.json"))
    train = parser.get_parsed_content("train#preprocessing", lazy=False, instantiate=True)
    val = parser.get_parsed_content("validate#preprocessing", lazy=False, instantiate=True)
    flips = [t for t in train.transforms if isinstance(t, RandFlipd)]
    assert sorted(t.flipper.spatial_axis for t in flips) == [0, 1, 2]
    assert [tuple(t.spatial_axes) for t in train.transforms if isinstance(t, RandRotate90d)] == [(1, 2)]
    assert not any(isinstance(t, Randomizable) for t in val.transforms)
    # image and label move together (flips along any axis and turns in the axial plane keep cones, pyramids and
    # cylinders standing along depth, so the class ids stay right)
    label = np.zeros((1, 6, 6, 6), dtype=np.float32)
    label[0, 1:4, 2, 3] = 3
    for transform in flips + [t for t in train.transforms if isinstance(t, RandRotate90d)]:
        transform.set_random_state(0)
        transform.prob = 1.0
        out = transform({"image": label.copy(), "label": label.copy()})
        moved = np.asarray(out["image"])
        assert not np.array_equal(moved, label) and moved.sum() == label.sum()
        assert np.array_equal(moved, np.asarray(out["label"]))


# -- model zoo checks ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"model zoo schemas not found at {SCHEMAS}")
def test_verify_metadata():
    bundle_in_process("verify_metadata", "--meta_file", META, "--filepath", META_SCHEMA)


def test_verify_net_in_out():
    # n=2: 16^3 input; the metadata's "8*n" at n=1 fails, see the next test
    bundle_in_process("verify_net_in_out", "network_def", "--meta_file", META, "--config_file", INFERENCE, "--n", 2,
                      "--device", "cpu")


def test_verify_net_in_out_smallest_declared_shape():
    # metadata declares 16*n: at n=1 the default UNet (3 down-samplings) still has 2^3 voxels at its bottom
    bundle_in_process("verify_net_in_out", "network_def", "--meta_file", META, "--config_file", INFERENCE, "--n", 1,
                      "--device", "cpu")


def test_ckpt_export_torchscript_matches_eager(tmp_path, tiny_models):
    # torch.jit.script (ckpt_export's default, as the model zoo exports), so the export is not tied to one input shape
    ts_file = tmp_path / "model.ts"
    bundle_in_process("ckpt_export", "network_def", "--filepath", ts_file, "--ckpt_file", tiny_models / "model.pt",
                      "--meta_file", META, "--config_file", INFERENCE, *cli_args(TINY_NET))
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(ts_file), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["version"] == json.loads(META.read_text())["version"]
    eager = tiny_network()
    eager.load_state_dict(torch.load(tiny_models / "model.pt", weights_only=True))
    for shape in [(1, 1, 16, 16, 16), (2, 1, 16, 24, 32)]:  # uneven D/H/W catch axis mix-ups
        x = torch.randn(*shape)
        with torch.no_grad():
            # eager runs channels-last with InstanceNorm as group_norm (keep_channels_last), the export the
            # contiguous composed ops: float32 rounding apart across the network (5e-5 seen)
            torch.testing.assert_close(exported(x), eager(x), rtol=1e-4, atol=2e-4)


# -- training -----------------------------------------------------------------------------------------------------


def test_train_with_plain_run_writes_run_folder_and_report(poc_trained):
    out = poc_trained.result().output  # `run` without a run id: "run": "%training"
    run_dir = poc_trained.run_dir
    for name in ("checkpoint_latest.pt", "model_best.pt", "results.json", "results.md", "feature_mauc.json"):
        assert (run_dir / name).is_file(), f"{name} missing in {sorted(p.name for p in run_dir.iterdir())}"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    latest = torch.load(run_dir / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == TINY_TRAIN["epochs"] and {"network", "optimizer", "lr_scheduler"} <= set(latest)

    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["classes"]) == FOREGROUND
    for row in results["classes"].values():
        assert set(row) == {"dice_global", "dice_per_case", "iou"}
        assert all(0.0 <= v <= 1.0 for v in row.values()), row
    assert results["cases"] == TINY_TRAIN["n_3d_val"]
    assert 0.5 <= results["feature_mauc_before_3d_training"] <= 1.0

    for name in FOREGROUND:  # the per-class table on stdout
        assert f"| {name} |" in out
    assert "| **mean (foreground)** |" in out
    assert str(poc_trained.models / "model.pt") in out and str(run_dir) in out


def test_train_publishes_plain_state_dict(poc_trained):
    poc_trained.result()
    state = torch.load(poc_trained.models / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "model.pt must be a plain state dict"
    tiny_network().load_state_dict(state, strict=True)
    best = torch.load(poc_trained.run_dir / "model_best.pt", map_location="cpu", weights_only=True)["network"]
    assert all(torch.equal(state[k], best[k]) for k in best), "model.pt differs from the run's model_best.pt"


def test_same_run_name_without_resume_refuses(poc_trained):
    poc_trained.result()
    before = file_states(poc_trained.run_dir.parent.parent)
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "training", "--config_file", TRAIN, *cli_args(TINY_TRAIN),
                          *cli_args(poc_trained.dirs()), "--run_name", poc_trained.run_name)
    text = messages(info.value)
    assert f"RunFolderError: {poc_trained.run_dir} already holds checkpoints" in text, text
    assert "--resume true" in text
    assert file_states(poc_trained.run_dir.parent.parent) == before


def test_resume_continues_from_last_epoch(jobs):
    result, _, _ = jobs["pool"]["resume_inside"]
    out = result.check().output
    run_dir = jobs["tmp"] / "inside_runs" / "resumed"
    assert "resumed from" in out and "at epoch 1" in out
    assert "SupervisedTrainer - INFO - Epoch[1] Complete" not in out, "epoch 1 was trained again"
    assert "SupervisedTrainer - INFO - Epoch[2] Complete" in out
    latest = torch.load(run_dir / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == 2 and latest["iteration"] == 2  # 2 samples, batch 2: one iteration per epoch
    assert json.loads((run_dir / "results.json").read_text())["epochs"] == 2
    assert (jobs["tmp"] / "inside_models" / "model.pt").is_file()


def test_run_from_inside_bundle_folder_resolves_bundle_root(jobs):
    result, (root_before, bundle_before), (root_after, bundle_after) = jobs["pool"]["resume_inside"]
    out = result.check().output
    assert f"bundle_root={POC}\n" in out, "bundle_root did not resolve to the bundle folder"
    assert root_after - root_before == set(), f"written into the repository root: {root_after - root_before}"
    assert bundle_after - bundle_before == set(), f"written into the bundle folder: {bundle_after - bundle_before}"


# -- evaluation and inference -------------------------------------------------------------------------------------


def test_evaluate_writes_results_and_metrics(jobs):
    out = jobs["pool"]["evaluate"].check().output
    eval_dir = jobs["tmp"] / "eval"
    results = json.loads((eval_dir / "results.json").read_text())
    assert list(results["classes"]) == FOREGROUND and results["cases"] == TINY_TRAIN["n_3d_val"]
    metrics = (eval_dir / "metrics.csv").read_text()
    assert "val_mean_dice" in metrics and "val_mean_iou" in metrics
    assert "| **mean (foreground)** |" in out


def test_inference_writes_one_prediction_per_input(jobs, poc_trained):
    jobs["pool"]["inference"].check()
    inputs = sorted((poc_trained.data / "imagesVal").glob("*.nii.gz"))
    preds = sorted((jobs["tmp"] / "pred").glob("*.nii*"))
    assert [p.name for p in preds] == [p.name.replace(".nii.gz", "_seg.nii.gz") for p in inputs]
    for image_file, pred_file in zip(inputs, preds):
        image, pred = nib.load(str(image_file)), nib.load(str(pred_file))
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine)
        values = np.unique(np.asarray(pred.dataobj))
        assert set(values.tolist()) <= set(range(6)), values
