"""The LiTS bundle (bundles/lits_acs) end to end on tiny synthetic data, through the commands a user types.

One module fixture writes the demo data with ``scripts/make_demo_data.py lits`` (3 phantoms of 48 x 48 x 24 voxels),
a COCO-format DeepLab checkpoint in a private torchvision cache (so ``--pretraining coco`` takes the real offline
loading path), and the inference inputs (a NIfTI in the demo's L-P-S orientation, the same volume re-stored in R-S-P
order, the same volume as a DICOM series written with ITK, and a corrupt file). It then runs the commands in a small
thread pool, each in its own process with one torch thread: training, evaluation, inference, ``scripts/segment_ct.py``,
``verify_net_in_out``, ``ckpt_export`` and a run without data. The tests check their results.

Plumbing runs use ``--operator conv2p5d`` (the same torchvision DeepLabV3-ResNet101, about 3x cheaper on CPU than
ACS); ``verify_net_in_out`` runs the default ACS network, and tests/networks/test_lits_net.py trains it one step.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import Result, bundle_command, cli_args, run_command
from dicom_helpers import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "lits_acs"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
COCO_FILE = "deeplabv3_resnet101_coco-586e9e4e.pth"

SHAPE_XYZ = (48, 48, 24)
TINY = {
    "operator": "conv2p5d",
    "epochs": 1,
    "val_interval": 1,
    "batch_size": 2,
    "num_samples": 1,
    "crop_size": [16, 32, 32],
    "roi_size": [24, 48, 48],  # one window per demo volume (z, y, x)
    "num_workers": 0,
}
TIMEOUT_S = 900


# ------------------------------------------------------------------------------------------------------ helpers
def _run(args: list[Any], cwd: Path = REPO, env: dict[str, str] | None = None) -> Result:
    return run_command(args, cwd=cwd, timeout=TIMEOUT_S, env=env)


def _bundle(*args: Any, cwd: Path = REPO, env: dict[str, str] | None = None) -> Result:
    return bundle_command(*args, cwd=cwd, env=env, timeout=TIMEOUT_S)


# RSP storage of an LPS volume: new[i, j, k] = old[nx - 1 - i, k, j]
def _to_rsp(xyz: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.flip(xyz, 0).transpose(0, 2, 1))


def _from_rsp(xyz: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.flip(xyz.transpose(0, 2, 1), 0))


def _rsp_affine(affine: np.ndarray, nx: int) -> np.ndarray:
    index_map = np.array([[-1, 0, 0, nx - 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    return affine @ index_map


@dataclass
class LitsRuns:
    root: Path
    data: Path
    torch_home: Path
    inputs: Path
    futures: dict[str, Future] = field(default_factory=dict)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def run_dir(self) -> Path:
        return self.runs / "tiny"

    def result(self, name: str) -> Result:
        return self.futures[name].result(timeout=2 * TIMEOUT_S)


@pytest.fixture(scope="module")
def lits(tmp_path_factory) -> LitsRuns:
    root = tmp_path_factory.mktemp("lits_bundle")
    runs = LitsRuns(root=root, data=root / "data", torch_home=root / "torch_home", inputs=root / "inputs")
    demo = _run([sys.executable, REPO / "scripts" / "make_demo_data.py", "lits", "--out", runs.data, "--n_cases", 3,
                 "--shape_xyz", ",".join(map(str, SHAPE_XYZ))]).check()
    assert "wrote 3 synthetic LiTS-layout cases" in demo.output

    import torchvision

    torch.manual_seed(0)
    coco = torchvision.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    (runs.torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(coco.state_dict(), runs.torch_home / "hub" / "checkpoints" / COCO_FILE)
    del coco
    (root / "empty_torch_home").mkdir()

    source = nib.load(runs.data / "volume-2.nii")
    xyz, affine = np.asarray(source.dataobj), source.affine
    runs.inputs.mkdir()
    shutil.copy(runs.data / "volume-2.nii", runs.inputs / "volume-2.nii")
    rsp = nib.Nifti1Image(_to_rsp(xyz), _rsp_affine(affine, xyz.shape[0]))
    rsp.set_qform(rsp.affine, code=1)
    rsp.set_sform(rsp.affine, code=1)
    nib.save(rsp, runs.inputs / "reoriented.nii.gz")
    (runs.inputs / "broken.nii.gz").write_bytes(b"not a NIfTI file" * 64)
    nib.save(nib.Nifti1Image(xyz[:, :, 5:6], affine), runs.inputs / "one_slice.nii.gz")
    nib.save(nib.Nifti1Image(np.full(xyz.shape, np.nan, np.float32), affine), runs.inputs / "all_nan.nii.gz")
    assert nib.aff2axcodes(affine) == ("L", "P", "S")  # the demo's orientation, which the RSP copy assumes
    write_dicom_series(runs.inputs / "series_a", xyz, affine)

    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="lits-cli")

    def submit(name: str, fn: Callable[[], Any], after: tuple[str, ...] = ()) -> None:
        waits = [runs.futures[n] for n in after]

        def job() -> Any:
            for w in waits:
                w.result()
            return fn()

        runs.futures[name] = pool.submit(job)

    dirs = {"dataset_dir": runs.data, "runs_dir": runs.runs, "models_dir": runs.models}
    submit("train", lambda: _bundle(
        "run", "training", "--config_file", CONFIGS / "train.json", *cli_args(TINY), *cli_args(dirs),
        "--run_name", "tiny", "--pretraining", "coco", env={"TORCH_HOME": str(runs.torch_home)},
    ))
    submit("fail_fast", lambda: _bundle(
        "run", "training", "--config_file", CONFIGS / "train.json", "--dataset_dir", root / "no_such_dir",
        "--runs_dir", root / "fail_runs", "--pretraining", "coco", env={"TORCH_HOME": str(root / "empty_torch_home")},
    ))
    submit("verify_net", lambda: _bundle(
        "verify_net_in_out", "network_def", "--meta_file", CONFIGS / "metadata.json",
        "--config_file", CONFIGS / "inference.json",
    ))

    def varied_checkpoint() -> Path:
        # The 1-iteration model predicts background everywhere, which would make the geometry checks vacuous. Make its
        # last layer threshold the most variable input feature at its 40th / 80th percentile on the test volume, so
        # that the label maps hold background, liver and tumour in space-dependent places.
        from monai.transforms import Compose, LoadImaged, Orientationd, RepeatChanneld, ScaleIntensityRanged

        from monai_acs.networks import lits_deeplab
        from monai_acs.workflows.transforms import DepthFirstd

        state = torch.load(runs.models / "model.pt", map_location="cpu", weights_only=True)
        net = lits_deeplab(TINY["operator"], return_dict=False)
        net.load_state_dict(state)
        net.eval()
        image = Compose([
            LoadImaged("image", ensure_channel_first=True, image_only=True),
            Orientationd("image", "LPS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            DepthFirstd("image"),
            ScaleIntensityRanged("image", -200, 250, 0.0, 1.0, clip=True),
            RepeatChanneld("image", 3),
        ])({"image": str(runs.inputs / "volume-2.nii")})["image"]
        features = []
        hook = net.get_submodule("classifier.4").register_forward_pre_hook(lambda m, args: features.append(args[0]))
        with torch.no_grad():
            net(image.as_tensor()[None])
        hook.remove()
        f = features[0][0].flatten(1)  # (256, voxels)
        k = int(f.std(1).argmax())
        q1, q2 = (float(q) for q in torch.quantile(f[k], torch.tensor([0.4, 0.8])))
        assert q2 > q1, "flat features"
        weight = torch.zeros_like(state["classifier.4.weight"])
        weight[1, k], weight[2, k] = 1.0, 2.0  # logits 0, f - q1, 2 f - q1 - q2: 0 | 1 | 2 split at q1 and q2
        state["classifier.4.weight"] = weight
        state["classifier.4.bias"] = torch.tensor([0.0, -q1, -q1 - q2])
        path = root / "varied.pt"
        torch.save(state, path)
        return path

    submit("varied", varied_checkpoint, after=("train",))
    submit("evaluate", lambda: _bundle(  # from inside the bundle, relative config paths
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", *cli_args(TINY),
        "--dataset_dir", runs.data, "--output_dir", root / "eval", "--ckpt_path", runs.models / "model.pt",
        cwd=BUNDLE,
    ), after=("train",))
    submit("infer", lambda: _bundle(
        "run", "--config_file", CONFIGS / "inference.json", "--input", runs.inputs, "--output_dir", root / "seg",
        "--ckpt_path", root / "varied.pt", "--operator", TINY["operator"], "--roi_size", "[24,48,48]",
    ), after=("varied",))
    submit("segment_ct", lambda: _run([
        sys.executable, REPO / "scripts" / "segment_ct.py", "--input", runs.inputs / "reoriented.nii.gz",
        "--output", root / "seg_script", "--ckpt", root / "varied.pt", "--operator", TINY["operator"],
        "--roi_size", "24,48,48", "--device", "cpu",
    ], cwd=root), after=("varied",))
    submit("export", lambda: _bundle(
        "ckpt_export", "network_def", "--filepath", root / "model.ts", "--ckpt_file", runs.models / "model.pt",
        "--meta_file", CONFIGS / "metadata.json", "--config_file", CONFIGS / "inference.json",
        "--operator", TINY["operator"],
    ), after=("train",))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


# -------------------------------------------------------------------------------------------------------- tests
def test_missing_dataset_dir_fails_before_any_network_is_built(lits):
    """The data check comes first: with --pretraining coco and an empty torchvision cache, building the network would
    fail on the missing COCO file; the run must instead fail on the data, with the layout and the demo command."""
    result = lits.result("fail_fast")
    assert result.returncode != 0, result.tail()
    assert "no_such_dir' does not exist" in result.output, result.tail()
    assert "volume-N.nii" in result.output and "python scripts/make_demo_data.py lits --out DIR" in result.output
    assert COCO_FILE not in result.output, "the network was built before the data were checked"
    assert not (lits.root / "fail_runs").exists()


def test_training_uses_coco_weights_and_leaves_checkpoints(lits):
    result = lits.result("train").check()
    out = result.output
    assert "LiTS: 2 training and 1 validation cases" in out
    assert "| | Lesion DG | Lesion DPC | Liver DG | Liver DPC |" in out
    run = lits.run_dir
    for name in ("model_best.pt", "checkpoint_latest.pt", "results.json", "results.md", "validation/epoch_0001.json",
                 "validation/epoch_0001.csv", "validation/epoch_0001_per_case.csv"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard log"
    report = json.loads((run / "results.json").read_text())
    assert report["best_epoch"] == 1 and report["cases"] == 1
    assert set(report["liver"]) == {"dice_global", "dice_per_case", "cases_counted"}

    published = torch.load(lits.models / "model.pt", map_location="cpu", weights_only=True)
    assert published["classifier.4.weight"].shape[0] == 3  # head re-initialised for 3 classes
    coco = torch.load(lits.torch_home / "hub" / "checkpoints" / COCO_FILE, map_location="cpu", weights_only=True)
    for key in ("backbone.conv1.weight", "backbone.layer4.2.conv3.weight", "classifier.0.convs.0.0.weight"):
        a, b = coco[key].flatten().double(), published[key].flatten().double()
        assert a.numel() == b.numel(), key
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95, f"{key} does not come from the COCO checkpoint"


def test_evaluate_prints_and_writes_the_four_dice_figures(lits):
    result = lits.result("evaluate").check()
    assert "| | Lesion DG | Lesion DPC | Liver DG | Liver DPC |" in result.output
    assert "| this model (1 cases) |" in result.output
    summary = json.loads((lits.root / "eval" / "lits_dice.json").read_text())
    for region in ("tumour", "liver"):
        for key in ("dice_global", "dice_per_case"):
            assert 0.0 <= summary[region][key] <= 1.0 or np.isnan(summary[region][key])
    with open(lits.root / "eval" / "lits_dice.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["region"] for r in rows] == ["tumour", "liver"]
    validation_case = json.loads((lits.run_dir / "validation" / "epoch_0001.json").read_text())["per_case"][0]["case"]
    assert summary["per_case"][0]["case"] == validation_case
    assert not (BUNDLE / "eval").exists() and not (BUNDLE / "runs").exists(), "outputs written into the bundle"


def _check_segmentation(seg_file: Path, shape: tuple, affine: np.ndarray) -> np.ndarray:
    seg = nib.load(seg_file)
    assert seg.shape == tuple(shape), (seg_file, seg.shape, shape)
    np.testing.assert_allclose(seg.affine, affine, atol=1e-4, err_msg=str(seg_file))
    label = np.asarray(seg.dataobj)
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2}
    return label


def test_inference_writes_masks_in_each_inputs_geometry(lits):
    result = lits.result("infer").check()
    out = lits.root / "seg"
    assert "segmented 4 of 6 inputs" in result.output, result.tail()

    source = nib.load(lits.inputs / "volume-2.nii")
    reference = _check_segmentation(out / "volume-2_seg.nii.gz", source.shape, source.affine)
    assert len(np.unique(reference)) == 3, "constant prediction: the geometry checks would be vacuous"

    rsp = nib.load(lits.inputs / "reoriented.nii.gz")
    assert nib.aff2axcodes(rsp.affine) == ("R", "S", "P")
    label_rsp = _check_segmentation(out / "reoriented_seg.nii.gz", rsp.shape, rsp.affine)
    np.testing.assert_array_equal(_from_rsp(label_rsp), reference)  # same voxels, same prediction

    from monai.transforms import LoadImage

    dicom = LoadImage(image_only=True)(str(lits.inputs / "series_a"))
    assert tuple(dicom.shape) == source.shape
    np.testing.assert_allclose(np.asarray(dicom.affine), source.affine, atol=1e-4)
    label_dicom = _check_segmentation(out / "series_a_seg.nii.gz", tuple(dicom.shape), np.asarray(dicom.affine))
    np.testing.assert_array_equal(label_dicom, reference)

    with open(out / "volumes.csv") as f:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == {"volume-2.nii", "reoriented.nii.gz", "series_a", "broken.nii.gz", "one_slice.nii.gz",
                         "all_nan.nii.gz"}
    assert rows["broken.nii.gz"]["status"].startswith("error:") and "broken.nii.gz" in rows["broken.nii.gz"]["status"]
    assert "SKIPPED" in result.output and "broken.nii.gz" in result.output
    nan_file = lits.inputs / "all_nan.nii.gz"
    assert rows["all_nan.nii.gz"]["status"] == f"error: ValueError: image {nan_file} holds NaN or infinite values"
    # a one-slice CT gets a one-slice 3D mask in its own geometry (MONAI's SaveImage wrote a 2D one)
    one = nib.load(lits.inputs / "one_slice.nii.gz")
    assert rows["one_slice.nii.gz"]["status"] == "ok" and rows["one_slice.nii.gz"]["shape"] == "48x48x1"
    _check_segmentation(out / "one_slice_seg.nii.gz", one.shape, one.affine)
    for name, stem in (("volume-2.nii", "volume-2"), ("reoriented.nii.gz", "reoriented"), ("series_a", "series_a")):
        row = rows[name]
        assert row["status"] == "ok"
        seg = nib.load(out / f"{stem}_seg.nii.gz")
        label = np.asarray(seg.dataobj)
        voxel_ml = abs(np.linalg.det(seg.affine[:3, :3])) / 1000.0
        assert int(row["liver_voxels"]) == int((label >= 1).sum())
        assert int(row["tumour_voxels"]) == int((label == 2).sum())
        assert float(row["liver_ml"]) == pytest.approx((label >= 1).sum() * voxel_ml, abs=1e-3)
        assert float(row["tumour_ml"]) == pytest.approx((label == 2).sum() * voxel_ml, abs=1e-3)
        png = out / f"{stem}_overlay.png"
        assert row["overlay"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segment_ct_script_single_file(lits):
    result = lits.result("segment_ct").check()
    assert "segmented 1 of 1 input(s)" in result.output, result.tail()
    rsp = nib.load(lits.inputs / "reoriented.nii.gz")
    label = _check_segmentation(lits.root / "seg_script" / "reoriented_seg.nii.gz", rsp.shape, rsp.affine)
    with open(lits.root / "seg_script" / "volumes.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok" and int(row["liver_voxels"]) == int((label >= 1).sum())


def test_verify_metadata_net_in_out_and_torchscript_export(lits):
    from monai.bundle import verify_metadata

    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is absent")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    result = lits.result("verify_net").check()
    assert "data shape of network is verified with no error" in result.output, result.tail()
    lits.result("export").check()
    scripted = torch.jit.load(str(lits.root / "model.ts"), map_location="cpu")
    with torch.no_grad():
        out = scripted(torch.rand(1, 3, 8, 16, 24))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 8, 16, 24)


# ------------------------------------------------------------------------------------------ in-process unit tests
def test_depth_first_and_orientation_invert_exactly():
    """An R-S-P volume: Orientationd to L-P-S then DepthFirstd gives (z, y, x) with spacing (z, y, x); Invertd restores
    the data and the affine exactly."""
    from monai.data import MetaTensor
    from monai.transforms import Compose, Invertd, Orientationd

    from monai_acs.workflows.transforms import DepthFirstd

    affine = torch.tensor(_rsp_affine(np.diag([-0.7, -0.8, 2.5, 1.0]), 5))  # voxel axes R (0.7), S (2.5), P (0.8)
    image = MetaTensor(torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 5, 6, 7), affine=affine)
    pre = Compose([Orientationd("image", "LPS", labels=(("L", "R"), ("P", "A"), ("I", "S"))), DepthFirstd("image")])
    data = pre({"image": image})
    net = data["image"]
    assert tuple(net.shape) == (1, 6, 7, 5)  # (z: S, y: P, x: L)
    np.testing.assert_allclose([float(s) for s in net.pixdim], [2.5, 0.8, 0.7])
    assert nib.aff2axcodes(_reverse_columns(net.affine)) == ("L", "P", "S")
    data["pred"] = MetaTensor(net.clone(), meta=dict(net.meta))
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert back.shape == image.shape
    torch.testing.assert_close(back.as_tensor(), image.as_tensor())
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(affine), atol=1e-6)


def _reverse_columns(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=float).copy()
    a[:, :3] = a[:, 2::-1]
    return a


def test_lits_dice_metric_matches_monai_acs_metrics_and_the_report_only_writes_it(tmp_path):
    """Dice global / per case of liver (labels 1 and 2) and tumour (label 2), from per-case counts, equal
    monai_acs.metrics on the binary maps; a case without tumour in label and prediction is left out of DPC. The
    metric is attached as an ignite Metric; LitsDiceReport writes what it computed, and nothing else."""
    from ignite.engine import Engine

    from monai_acs import metrics
    from monai_acs.workflows.lits import LitsDiceReport
    from monai_acs.workflows.metrics import LitsDiceMetric

    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (1, 6, 7, 8)) for _ in range(3)] + [rng.integers(0, 2, (1, 5, 5, 5))]
    labels = [rng.integers(0, 3, (1, 6, 7, 8)) for _ in range(3)] + [rng.integers(0, 2, (1, 5, 5, 5))]
    engine = Engine(lambda e, batch: [{"pred": torch.as_tensor(preds[e.state.iteration - 1]),
                                       "label": torch.as_tensor(labels[e.state.iteration - 1]),
                                       "case_name": f"case{e.state.iteration - 1}"}])
    metric = LitsDiceMetric()
    metric.attach(engine, "val_lits")
    LitsDiceReport("val_lits", output_dir=str(tmp_path), print_results=True).attach(engine)
    engine.run(list(range(len(preds))), max_epochs=1)
    for region, select in (("liver", lambda x: (x >= 1)), ("tumour", lambda x: (x == 2))):
        p = [select(x[0]).astype(np.uint8) for x in preds]
        lab = [select(x[0]).astype(np.uint8) for x in labels]
        dg, dpc = metrics.dice_global(p, lab, 2)[1], metrics.dice_per_case(p, lab, 2)[1]
        assert engine.state.metrics[f"val_lits/{region}_dice_global"] == pytest.approx(dg)
        assert engine.state.metrics[f"val_lits/{region}_dice_per_case"] == pytest.approx(dpc)
    assert engine.state.metrics["val_lits"] == engine.state.metrics["val_lits/tumour_dice_global"]
    summary = engine.state.metric_details["val_lits"]
    assert summary["tumour"]["cases_counted"] == 3 and summary["liver"]["cases_counted"] == 4
    assert [r["case"] for r in summary["per_case"]] == ["case0", "case1", "case2", "case3"]
    assert {p.name for p in tmp_path.iterdir()} == {"lits_dice.json", "lits_dice.csv", "lits_dice_per_case.csv"}
    written = json.loads((tmp_path / "lits_dice.json").read_text())
    assert written["tumour"]["dice_global"] == pytest.approx(engine.state.metrics["val_lits"])
    bare = Engine(lambda e, batch: None)
    LitsDiceReport("val_lits").attach(bare)
    with pytest.raises(KeyError, match="no LitsDiceMetric attached as 'val_lits'"):
        bare.run([0], max_epochs=1)


@pytest.mark.slow
def test_multi_gpu_config_trains_the_same_model_on_two_cpu_ranks(tmp_path):
    """multi_gpu_train.json under torchrun with 2 ranks on CPU (gloo): both ranks end with the same weights; rank 0
    alone writes the run folder, and its validation counts each validation case once (gathered from both ranks)."""
    data = tmp_path / "data"
    # 2 validation cases: MONAI's DistributedSampler (even_divisible=False) refuses fewer cases than ranks
    _run([sys.executable, REPO / "scripts" / "make_demo_data.py", "lits", "--out", data, "--n_cases", 5,
          "--shape_xyz", ",".join(map(str, SHAPE_XYZ))]).check()
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    result = _run([
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
        "run", "training", "--config_file", configs, *cli_args({**TINY, "num_samples": 2}), "--dataset_dir", data,
        "--runs_dir", tmp_path / "runs", "--models_dir", tmp_path / "models", "--run_name", "ddp",
        "--pretraining", "none", "--rank_state_dir", tmp_path / "ranks", "--val_fraction", 0.4,
    ]).check()
    assert "| | Lesion DG | Lesion DPC | Liver DG | Liver DPC |" in result.output
    rank0 = torch.load(tmp_path / "ranks" / "rank0.pt", map_location="cpu", weights_only=True)
    rank1 = torch.load(tmp_path / "ranks" / "rank1.pt", map_location="cpu", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:  # parameters agree; batch-norm running statistics stay per rank on CPU (no SyncBatchNorm)
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(rank0[key], rank1[key], msg=key)
    validation = json.loads((tmp_path / "runs" / "ddp" / "validation" / "epoch_0001.json").read_text())
    assert validation["cases"] == 2  # each case counted once, gathered from both ranks
    assert (tmp_path / "models" / "model.pt").is_file()
