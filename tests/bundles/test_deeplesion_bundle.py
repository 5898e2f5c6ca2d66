"""The DeepLesion detection bundle through the real ``python -m monai.bundle`` command line, on tiny demo data.

Training (a3d and conv2p5d), evaluation and inference run as subprocesses in the shared command pool, started once by
the module fixture ``jobs``; the unit tests of the workflow steps (transforms, FROC metric, RLE, context slices) run
meanwhile. Inference also runs in this process on one demo series written as a NIfTI CT and as a DICOM series (ITK),
which must give the same detections. Demo data: ``scripts/make_demo_data.py deeplesion --n_studies 3 --image_size 64``
(splits 1, 1, 2).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import (
    META_SCHEMA,
    REPO,
    SCHEMAS,
    bundle_command,
    bundle_in_process,
    cli_args,
    config_list,
    messages,
)
from dicom_helpers import write_dicom_series

from monai_acs.data.deeplesion import read_dl_info, read_hu_png, recist_ellipse_mask, write_deeplesion_demo
from monai_acs.workflows.ct_io import read_ct_volume
from monai_acs.workflows.datasets import context_slices
from monai_acs.workflows.detection import deeplesion_datalist, mask_to_rle, rle_to_mask
from monai_acs.workflows.engines import WarmupMultiStepLambda
from monai_acs.workflows.metrics import FROCMetric
from monai_acs.workflows.transforms import RandDetectionAugmentd, ResizeDetectiond

BUNDLE = REPO / "bundles" / "deeplesion_a3d"
CONFIGS = BUNDLE / "configs"
TRAIN, EVALUATE, INFERENCE, META = (
    CONFIGS / f for f in ("train.json", "evaluate.json", "inference.json", "metadata.json")
)
#: A small DenseNet (same layout as DenseNet-121, which tests/networks covers) and small heads, 64 x 64, 1 epoch.
TINY = {
    "image_size": 64,
    "epochs": 1,
    "batch_size": 2,
    "pretrained": False,
    "block_config": [2, 2, 2],
    "growth_rate": 8,
    "num_init_features": 16,
    "feature_channels": 16,
    "representation_size": 32,
    "mask_channels": 8,
    "anchor_sizes": [[8, 12, 16], [24, 32, 48], [64, 96, 128]],
    "warmup_iters": 2,
    "val_split": 2,
}
#: TINY restricted to the keys inference.json has: it refuses settings it does not know (``--epochs`` included).
INFER_TINY = {key: value for key, value in TINY.items() if key in json.loads(INFERENCE.read_text())}
FP_LEVELS = ["0.5", "1", "2", "4", "8", "16"]


def _key_slice(data: Path) -> tuple[str, int]:
    record = read_dl_info(data / "DL_info.csv")[0]
    return record["series_dir"], record["key_slice_index"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """What ``scripts/make_demo_data.py deeplesion --out DIR --n_studies 3 --image_size 64`` writes."""
    out = tmp_path_factory.mktemp("dl_demo") / "deeplesion"
    write_deeplesion_demo(out, n_studies=3, image_size=64)
    return out


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, demo_data, command_pool):
    """Start train -> (evaluate, inference) for a3d and conv2p5d; ``jobs["pool"][name]`` waits for one."""
    tmp = tmp_path_factory.mktemp("dl_cli")
    pool = command_pool
    series, key = _key_slice(demo_data)
    for op in ("a3d", "conv2p5d"):
        dirs = {"dataset_dir": demo_data, "models_dir": tmp / f"models_{op}", "runs_dir": tmp / "runs"}
        common = [*cli_args({**TINY, "operator": op}), *cli_args(dirs)]
        infer_dirs = {key: dirs[key] for key in ("dataset_dir", "models_dir")}
        infer_args = [*cli_args({**INFER_TINY, "operator": op}), *cli_args(infer_dirs)]
        # a3d: plain `run` ("run": "%training"); conv2p5d: `run training`
        run_id = [] if op == "a3d" else ["training"]
        pool.submit(
            f"dl_train_{op}",
            lambda c=common, r=run_id, o=op: bundle_command("run", *r, "--config_file", TRAIN, *c, "--run_name", o),
        )
        pool.submit(
            f"dl_evaluate_{op}",
            lambda c=common, o=op: bundle_command(
                "run",
                "--config_file",
                config_list(TRAIN, EVALUATE),
                *c,
                "--eval_split",
                2,
                "--output_dir",
                tmp / f"eval_{o}",
            ),
            after=[f"dl_train_{op}"],
        )
        pool.submit(
            f"dl_infer_{op}",
            lambda c=infer_args, o=op: bundle_command(
                "run",
                "--config_file",
                INFERENCE,
                *c,
                "--input_path",
                demo_data / "Images_png" / series,
                "--slice_range",
                f"[{key - 1},{key + 1}]",
                "--score_threshold",
                0.0,
                "--top_k",
                2,
                "--output_dir",
                tmp / f"infer_{o}",
            ),
            after=[f"dl_train_{op}"],
        )
    return {"tmp": tmp, "pool": pool, "series": series, "key": key}


@pytest.fixture(scope="module", autouse=True)
def _start_background_commands(request) -> None:
    """Start the subprocesses before the first test, but only if a selected test of this file needs them."""
    if any("jobs" in item.fixturenames for item in request.session.items if item.module is request.module):
        request.getfixturevalue("jobs")


# -- workflow steps (run while the commands run) ------------------------------------------------------------------


def test_datalist_errors_name_the_problem(tmp_path, demo_data):
    with pytest.raises(FileNotFoundError, match="make_demo_data.py deeplesion"):
        deeplesion_datalist(tmp_path / "nothing", 1)
    with pytest.raises(ValueError, match="no key slice in split 3"):
        deeplesion_datalist(demo_data, 3)
    items = deeplesion_datalist(demo_data, [1, 2])
    assert {i["record"]["split"] for i in items} == {1, 2}


def _box_of(mask: torch.Tensor) -> list[float]:
    rows, cols = torch.where(mask > 0)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


@pytest.mark.parametrize(
    "flip, angle, scale, shift",
    [
        (True, 0.0, 1.0, (0.0, 0.0)),
        (False, 90.0, 1.0, (0.0, 0.0)),
        (True, 180.0, 1.0, (0.125, -0.05)),
        (False, 30.0, 0.5, (0.0, 0.0)),
    ],
)
def test_augmentation_moves_image_masks_and_boxes_together(flip, angle, scale, shift):
    size = 40
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[0, 12:20, 14:26] = 1
    data = {
        "image": mask.float().repeat(3, 1, 1) * 100,
        "masks": mask,
        "boxes": torch.tensor([[14.0, 12, 26, 20]]),
        "labels": torch.tensor([1]),
    }
    aug = RandDetectionAugmentd(prob=1.0)
    aug.randomize = lambda data=None: None  # fixed parameters instead of random ones
    aug._do_transform, aug._flip, aug._params = True, flip, (angle, scale, shift)
    out = aug(data)
    assert out["image"].shape == (3, size, size) and out["masks"].shape == (1, size, size)
    if angle % 90 == 0:  # axis-aligned: the box of the moved box is the moved mask's box
        assert out["boxes"].tolist() == [pytest.approx(_box_of(out["masks"][0]), abs=1e-4)]
    else:  # rotated: the moved box holds the moved mask (up to the half pixel of nearest-neighbour sampling)
        x1, y1, x2, y2 = out["boxes"][0].tolist()
        mx1, my1, mx2, my2 = _box_of(out["masks"][0])
        assert x1 <= mx1 + 0.5 and y1 <= my1 + 0.5 and mx2 <= x2 + 0.5 and my2 <= y2 + 0.5
    if scale == 1.0:  # no sampling outside the source (reflected borders are empty here): slices moved like the mask
        assert torch.equal((out["image"][1] > 50).to(torch.uint8), out["masks"][0])


def test_augmentation_drops_boxes_leaving_the_image():
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, 0:4, 0:4] = 1
    data = {
        "image": torch.zeros(3, 32, 32),
        "masks": mask,
        "boxes": torch.tensor([[0.0, 0, 4, 4]]),
        "labels": torch.tensor([1]),
    }
    aug = RandDetectionAugmentd(prob=1.0)
    aug.randomize = lambda data=None: None
    aug._do_transform, aug._flip, aug._params = True, False, (0.0, 1.0, (-0.5, 0.0))
    out = aug(data)
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,) and out["masks"].shape == (0, 32, 32)


def test_resize_scales_boxes_and_masks():
    mask = torch.zeros(2, 32, 32, dtype=torch.uint8)
    mask[0, 8:16, 4:12] = 1
    mask[1, 20:30, 20:28] = 1
    data = {"image": torch.zeros(3, 32, 32), "masks": mask, "boxes": torch.tensor([[4.0, 8, 12, 16], [20, 20, 28, 30]])}
    out = ResizeDetectiond(64)(data)
    assert out["image"].shape == (3, 64, 64) and out["scale"] == (2.0, 2.0)
    assert out["boxes"].tolist() == [_box_of(out["masks"][0]), _box_of(out["masks"][1])]


def test_froc_metric_on_a_hand_computed_case():
    metric = FROCMetric(fp_rates=(0.5, 1, 2), average_over=(0.5, 1))
    metric.reset()
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10]])}, {"boxes": torch.tensor([[0.0, 0, 10, 10]])}]
    pred = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "scores": torch.tensor([0.9, 0.8])},
        {"boxes": torch.tensor([[0.0, 0, 10, 9], [0, 0, 5, 5]]), "scores": torch.tensor([0.3, 0.7])},
    ]
    metric.update({"pred": pred, "label": gt})
    # by score: 0.9 TP (lesion 1), 0.8 FP, 0.7 FP (IoU 0.25), 0.3 TP (IoU 0.9): FPs/image 0.5 -> 1/2 found, 1 -> 2/2
    assert metric.compute() == pytest.approx((0.5 + 1.0) / 2)
    assert metric.last_result["sensitivity"] == {0.5: 0.5, 1.0: 1.0, 2.0: 1.0}


def test_rle_round_trip_and_context_slices():
    mask = recist_ellipse_mask((20, 30), [5, 10, 25, 10, 15, 5, 15, 15])
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
    full = np.ones((2, 3), bool)
    assert np.array_equal(rle_to_mask(mask_to_rle(full)), full)
    vol = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    assert context_slices(vol, 5, 3, interval_mm=2.0)[:, 0, 0].tolist() == [4.0, 5.0, 6.0]
    assert context_slices(vol, 5, 3, interval_mm=4.0)[:, 0, 0].tolist() == [4.5, 5.0, 5.5]
    assert context_slices(vol, 9, 5, interval_mm=1.0)[:, 0, 0].tolist() == [5.0, 7.0, 9.0, 9.0, 9.0]


def test_lr_schedule_warmup_and_milestones():
    schedule = WarmupMultiStepLambda(
        iters_per_epoch=10, milestones=[10, 13], gamma=0.1, warmup_iters=5, warmup_ratio=0.2
    )
    assert schedule(0) == pytest.approx(0.2) and schedule(5) == 1.0 and schedule(99) == 1.0  # epochs 1-10
    assert schedule(100) == pytest.approx(0.1) and schedule(129) == pytest.approx(0.1)  # epochs 11-13
    assert schedule(130) == pytest.approx(0.01) and schedule(199) == pytest.approx(0.01)  # epochs 14-20


def test_read_ct_volume_formats(tmp_path, demo_data):
    series, key = _key_slice(demo_data)
    png = read_ct_volume(demo_data / "Images_png" / series)
    assert png["format"] == "deeplesion_png" and png["slice_numbers"][0] == 1
    record = read_dl_info(demo_data / "DL_info.csv")[0]
    assert png["slice_interval_mm"] == record["spacing"][2]
    np.testing.assert_array_equal(
        png["volume"][key - 1], read_hu_png(demo_data / "Images_png" / series / f"{key:03d}.png")
    )
    # NIfTI: (x, y, z) voxel order; axial slice k is data[:, :, k].T
    nifti = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(png["volume"], (2, 1, 0)), np.diag([0.8, 0.8, 2.5, 1.0])), str(nifti))
    vol = read_ct_volume(nifti)
    assert vol["format"] == "nifti" and vol["slice_interval_mm"] == 2.5
    np.testing.assert_array_equal(vol["volume"], png["volume"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_ct_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .nii/.nii.gz file"):
        read_ct_volume(tmp_path / "notes.txt")


# -- model zoo checks ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"model zoo schemas not found at {SCHEMAS}")
def test_verify_metadata():
    bundle_in_process("verify_metadata", "--meta_file", META, "--filepath", META_SCHEMA)


def test_verify_net_in_out_trunk():
    # the detector returns per-image dicts, which verify_net_in_out cannot read: inference.json's network_def is its
    # tensor-in / tensor-out part, the 3D DenseNet-121 trunk, checked at full size against network_data_format
    meta = json.loads(META.read_text())["network_data_format"]
    assert meta["outputs"]["pred"]["num_channels"] == 1024
    bundle_in_process("verify_net_in_out", "network_def", "--meta_file", META, "--config_file", INFERENCE,
                      "--device", "cpu", "--n", 1)


def test_missing_dataset_dir_fails_clearly(tmp_path):
    with pytest.raises(Exception) as info:
        bundle_in_process(
            "run",
            "training",
            "--config_file",
            TRAIN,
            *cli_args(TINY),
            "--dataset_dir",
            tmp_path / "none",
            "--runs_dir",
            tmp_path / "runs",
            "--models_dir",
            tmp_path / "models",
        )
    text = messages(info.value)
    assert f"DeepLesion dataset_dir '{tmp_path / 'none'}': missing" in text and "make_demo_data.py" in text, text


# -- command line runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["a3d", "conv2p5d"])
def test_train_writes_checkpoints_report_and_model(jobs, op):
    result = jobs["pool"][f"dl_train_{op}"].check()
    run_dir = jobs["tmp"] / "runs" / op
    for name in ("checkpoint_latest.pt", "model_best.pt", "froc.csv", "froc.png", "froc.json"):
        assert (run_dir / name).is_file(), f"{name} missing in {sorted(p.name for p in run_dir.iterdir())}"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    latest = torch.load(run_dir / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == 1 and {"network", "optimizer", "lr_scheduler"} <= set(latest)
    assert latest["optimizer"]["param_groups"][0]["momentum"] == 0.9
    summary = json.loads((run_dir / "froc.json").read_text())
    assert summary["operator"] == op and summary["num_slices"] == 3 and list(summary["sensitivity"]) == FP_LEVELS
    model = torch.load(jobs["tmp"] / f"models_{op}" / "model.pt", map_location="cpu", weights_only=True)
    fused = [k for k in model if k.endswith(".fusion")]
    assert bool(fused) == (op == "a3d")
    assert "Validation FROC" in result.output and "val_froc" in result.output


@pytest.mark.parametrize("op", ["a3d", "conv2p5d"])
def test_evaluate_writes_froc_csv_and_curve(jobs, op):
    result = jobs["pool"][f"dl_evaluate_{op}"].check()
    out = jobs["tmp"] / f"eval_{op}"
    with (out / "froc.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["fp_per_image", "sensitivity"]
    assert [r[0] for r in rows[1:]] == [*FP_LEVELS, "average"]
    sens = {r[0]: float(r[1]) for r in rows[1:]}
    assert all(0.0 <= v <= 1.0 for v in sens.values())
    assert sens["average"] == pytest.approx(np.mean([sens[k] for k in ("0.5", "1", "2", "4")]), abs=1e-4)
    assert (out / "froc.png").stat().st_size > 1000 and (out / "froc_curve.csv").is_file()
    assert "FROC, split 2" in result.output


@pytest.mark.parametrize("op", ["a3d", "conv2p5d"])
def test_inference_writes_detections_and_overlays(jobs, op):
    jobs["pool"][f"dl_infer_{op}"].check()
    out = jobs["tmp"] / f"infer_{op}"
    result = json.loads((out / "detections.json").read_text())
    key = jobs["key"]
    assert result["format"] == "deeplesion_png" and result["num_slices"] == 3 and result["image_size"] == [64, 64]
    assert [s["slice"] for s in result["slices"]] == [key - 1, key, key + 1]
    dets = [d for s in result["slices"] for d in s["detections"]]
    assert dets, "score_threshold 0 keeps every detection"
    for det in dets[:10]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and 0 <= det["score"] <= 1 and det["label"] == 1
        assert rle_to_mask(det["mask_rle"]).shape == (64, 64)
    overlays = sorted(out.glob("overlay_*_slice*.png"))
    assert len(overlays) == 2
    assert not math.isnan(dets[0]["score"])


#: The demo series as a NIfTI CT (x, y, z voxel order) for the in-process inference tests: 0.8 x 0.8 x 2 mm.
CT_AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _infer_in_process(jobs, input_path: Path, output_dir: Path) -> dict:
    """The conv2p5d model's detections on slices 0 and 1 of ``input_path``, through the bundle's command line (the
    ``fire`` entry point of ``python -m monai.bundle``) in this process; returns ``detections.json``."""
    bundle_in_process(
        "run",
        "--config_file",
        INFERENCE,
        *cli_args({**INFER_TINY, "operator": "conv2p5d"}),
        "--models_dir",
        jobs["tmp"] / "models_conv2p5d",
        "--input_path",
        input_path,
        "--slice_range",
        "[0,1]",
        "--output_dir",
        output_dir,
        "--score_threshold",
        0.0,
        "--top_k",
        1,
    )
    return json.loads((output_dir / "detections.json").read_text())


@pytest.fixture(scope="module")
def nifti_inference(jobs, demo_data, tmp_path_factory) -> dict:
    """The demo series written as a NIfTI CT, and the conv2p5d model's detections on it (:func:`_infer_in_process`)."""
    jobs["pool"]["dl_train_conv2p5d"].check()
    tmp = tmp_path_factory.mktemp("dl_nifti")
    xyz = np.transpose(read_ct_volume(demo_data / "Images_png" / jobs["series"])["volume"], (2, 1, 0))
    nifti = tmp / "ct.nii.gz"
    nib.save(nib.Nifti1Image(xyz, CT_AFFINE), str(nifti))
    result = _infer_in_process(jobs, nifti, tmp / "out")
    return {"xyz": xyz, "nifti": nifti, "out": tmp / "out", "result": result}


def test_inference_on_nifti_in_process(nifti_inference):
    result, out = nifti_inference["result"], nifti_inference["out"]
    assert result["format"] == "nifti" and [s["slice"] for s in result["slices"]] == [0, 1]
    assert len(list(out.glob("overlay_1_slice*.png"))) == 1


def test_inference_on_dicom_series_matches_nifti(nifti_inference, jobs, tmp_path):
    """The NIfTI CT above written as an axial DICOM series with ITK (int16 stored with RescaleIntercept -1024): the
    reader gives the same HU volume and slice interval, and the bundle's inference the same detections."""
    dicom = write_dicom_series(tmp_path / "ct_dicom", nifti_inference["xyz"], CT_AFFINE)
    volume, reference = read_ct_volume(dicom), read_ct_volume(nifti_inference["nifti"])
    assert volume["format"] == "dicom" and volume["slice_numbers"] == reference["slice_numbers"]
    np.testing.assert_array_equal(volume["volume"], reference["volume"])
    assert volume["slice_interval_mm"] == pytest.approx(reference["slice_interval_mm"]) == pytest.approx(2.0)

    result, expected = _infer_in_process(jobs, dicom, tmp_path / "out"), nifti_inference["result"]
    assert result["format"] == "dicom" and result["input"] == str(dicom)
    for key in ("num_slices", "image_size", "score_threshold"):
        assert result[key] == expected[key], key
    assert result["slice_interval_mm"] == pytest.approx(expected["slice_interval_mm"])
    assert [s["slice"] for s in result["slices"]] == [s["slice"] for s in expected["slices"]] == [0, 1]
    assert any(s["detections"] for s in expected["slices"]), "no detection: the comparison would be vacuous"
    for got, want in zip(result["slices"], expected["slices"]):
        assert len(got["detections"]) == len(want["detections"]), got["slice"]
        for g, w in zip(got["detections"], want["detections"]):
            assert g["label"] == w["label"]
            assert g["box"] == pytest.approx(w["box"], abs=0.011)  # written rounded to 0.01 pixel
            assert g["score"] == pytest.approx(w["score"], abs=2e-5)  # written rounded to 1e-5
            g_mask, w_mask = rle_to_mask(g["mask_rle"]), rle_to_mask(w["mask_rle"])
            assert g_mask.shape == w_mask.shape and (g_mask != w_mask).mean() <= 0.001
    overlays = sorted(p.name for p in (tmp_path / "out").glob("overlay_*.png"))
    assert overlays == sorted(p.name for p in nifti_inference["out"].glob("overlay_*.png")) and len(overlays) == 1
