"""scripts/package_bundle.py: the model zoo zip of a bundle, fetched back with monai.bundle and run from there."""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import POC, REPO, TINY_INFER, bundle_command, cli_args, run_command
from script_helpers import load_script

SCRIPT = REPO / "scripts" / "package_bundle.py"
VERSION = json.loads((POC / "configs" / "metadata.json").read_text())["version"]
NAME = POC.name


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, poc_trained):
    """A copy of the PoC bundle with the tiny trained model.pt, a model.ts and clutter, packaged by the script."""
    tmp = tmp_path_factory.mktemp("package")
    bundle = tmp / "src" / NAME
    shutil.copytree(POC, bundle, ignore=shutil.ignore_patterns("data", "runs", "eval", "*.pt", "*.ts"))
    poc_trained.result()
    shutil.copy(poc_trained.models / "model.pt", bundle / "models" / "model.pt")
    # any TorchScript file will do here: exporting the network is test_synthetic_poc_bundle's ckpt_export test
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bundle / "models" / "model.ts"))
    clutter = ["data/poc/imagesTr/case_000.nii.gz", "runs/acs_p/checkpoint_latest.pt", "eval/results.json",
               "configs/__pycache__/x.cpython-311.pyc", "models/pretrained_2d_unet_c4-8_s2_r1_n32_e1_seed0.pt",
               "models/model_20260101-000000.pt", "models/model.json", "configs/.train.json.swp", ".DS_Store"]
    for rel in clutter:
        touch(bundle / rel)
    result = run_command([sys.executable, SCRIPT, bundle, "--out", tmp / "dist"]).check()
    return {"tmp": tmp, "bundle": bundle, "zip": tmp / "dist" / f"{NAME}_v{VERSION}.zip", "output": result.output}


def test_zip_has_model_zoo_layout(packaged):
    archive = packaged["zip"]
    assert archive.is_file(), packaged["output"]
    names = set(zipfile.ZipFile(archive).namelist())
    files = {n for n in names if not n.endswith("/")}
    expected = {f"{NAME}/configs/{p.name}" for p in (POC / "configs").iterdir() if p.is_file()}
    expected |= {f"{NAME}/LICENSE", f"{NAME}/large_files.yml", f"{NAME}/models/model.pt", f"{NAME}/models/model.ts"}
    for folder in ("docs", "sample_data"):
        expected |= {f"{NAME}/{p.relative_to(POC).as_posix()}" for p in (POC / folder).rglob("*")
                     if p.is_file() and not p.name.startswith(".")}
    assert f"{NAME}/sample_data/case_000.nii.gz" in expected
    assert files == expected, f"extra: {sorted(files - expected)}, missing: {sorted(expected - files)}"
    assert f"{NAME}/models/" in names  # the folder entry, so an empty models/ still extracts
    assert all(n.startswith(f"{NAME}/") for n in names)


def test_zip_permissions_follow_the_umask(packaged):
    mask = os.umask(0o022)
    os.umask(mask)
    assert packaged["zip"].stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600
    for info in zipfile.ZipFile(packaged["zip"]).infolist():
        assert (info.external_attr >> 16) & 0o777 == (0o755 if info.is_dir() else 0o644), info.filename


def test_refuses_to_overwrite_a_release(packaged):
    script = load_script("package_bundle")
    with pytest.raises(FileExistsError, match="bump the version"):
        script.package_bundle(str(packaged["bundle"]), out=str(packaged["zip"].parent))
    again = script.package_bundle(str(packaged["bundle"]), out=str(packaged["zip"].parent), overwrite=True)
    assert Path(again) == packaged["zip"]


def test_same_bundle_gives_same_zip(packaged, tmp_path):
    other = load_script("package_bundle").package_bundle(str(packaged["bundle"]), out=str(tmp_path))
    assert Path(other).read_bytes() == packaged["zip"].read_bytes()


def test_rejects_folder_without_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a MONAI bundle"):
        load_script("package_bundle").package_bundle(str(tmp_path), out=str(tmp_path / "dist"))


def test_inference_runs_from_the_downloaded_zip(packaged, poc_data):
    import monai.bundle

    zoo = packaged["tmp"] / "zoo"
    monai.bundle.download(name=NAME, url=packaged["zip"].as_uri(), bundle_dir=str(zoo), progress=False)
    extracted = zoo / NAME
    parser = monai.bundle.load_bundle_config(str(extracted), "inference.json")
    assert parser["_meta_"]["version"] == VERSION

    inputs = packaged["tmp"] / "inputs"
    inputs.mkdir()
    shutil.copy(poc_data / "imagesVal" / "case_000.nii.gz", inputs / "case_000.nii.gz")
    # run as a zoo user does, from the extracted folder; no --bundle_root / --models_dir / --output_dir: the model
    # comes from, and the predictions go into, the extracted bundle
    bundle_command("run", "--config_file", "configs/inference.json", *cli_args(TINY_INFER),
                   "--input_dir", inputs, cwd=extracted).check()
    # from anywhere else, bundle_root must be given: refused with what to pass, nothing written
    refused = bundle_command("run", "--config_file", extracted / "configs" / "inference.json", *cli_args(TINY_INFER),
                             "--input_dir", inputs, cwd=packaged["tmp"])
    assert refused.returncode != 0 and "is not a bundle folder" in refused.output, refused.tail(5)
    assert "--bundle_root <path>" in refused.output.strip().splitlines()[-1], refused.tail(5)
    prediction = extracted / "eval" / "predictions" / "case_000_seg.nii.gz"
    assert prediction.is_file(), sorted(p.relative_to(extracted).as_posix() for p in extracted.rglob("*"))
    assert nib.load(str(prediction)).shape == nib.load(str(inputs / "case_000.nii.gz")).shape
    assert set(np.unique(np.asarray(nib.load(str(prediction)).dataobj)).tolist()) <= set(range(6))
