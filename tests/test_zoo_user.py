"""What a model-zoo user does: install the wheel, unpack a bundle zip anywhere, run its inference.json.

The wheel is built from a copy of the package sources (sdist first, then the wheel from the sdist, as
``python -m build`` does), the PoC bundle is zipped by ``scripts/package_bundle.py``, both land in a temporary folder
outside the checkout, and ``python -m monai.bundle run --config_file configs/inference.json`` runs in the unpacked
folder with ``PYTHONPATH`` holding only the installed wheel: the subprocess itself asserts that ``monai_acs`` comes
from there and not from the checkout (the development environment has an editable install of it). The run uses the
model and the sample volumes the bundle ships. The metadata checks cover all five bundles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

import monai.bundle
import monai_acs

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
POC = REPO / "bundles" / "synthetic_poc_acs"
META_SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "monai_acs")
NUM_CLASSES = 6
MIN_SAMPLE_DICE = 0.2
"""Lowest mean foreground Dice (per case and class) of the shipped model on the two sample volumes: measured 0.31."""

# run in the unpacked bundle: refuse a monai_acs that is not the installed wheel, then exactly `python -m monai.bundle`
_RUN_AS_ZOO_USER = """
import runpy, sys
from pathlib import Path
import monai_acs
site = Path(sys.argv[1]).resolve()
where = Path(monai_acs.__file__).resolve()
assert site in where.parents, f"monai_acs imported from {where}, not from the installed wheel in {site}"
print(f"monai_acs {monai_acs.__version__} from {where}", flush=True)
sys.argv = ["monai.bundle", *sys.argv[2:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def _run(args: list, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        encoding="utf-8", errors="replace", timeout=timeout, check=False,
    )
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0, f"{' '.join(str(a) for a in args)} (in {cwd}) exited {proc.returncode}:\n{tail}"
    return proc.stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped_model_entry() -> dict:
    entries = yaml.safe_load((POC / "large_files.yml").read_text())["large_files"]
    return next(e for e in entries if e["path"] == "models/model.pt")


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """sdist and wheel of the package, built from a copy of its sources outside the checkout."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    for name in PACKAGE_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(REPO / name, src / name)
    out = tmp / "out"
    env = {**os.environ, "PYTHONPATH": ""}
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=tmp, env=env)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "tmp": tmp}


def test_wheel_and_sdist_metadata(dists):
    version = monai_acs.__version__
    wheel, sdist = dists["wheel"], dists["sdist"]
    assert wheel.name == f"monai_acs-{version}-py3-none-any.whl" and sdist.name == f"monai_acs-{version}.tar.gz"
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "monai_acs").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "monai_acs").rglob("__init__.py")}
    assert len(packages) >= 6 and all(f"{p}/__init__.py" in names for p in packages)
    metadata = zipfile.ZipFile(wheel).read(f"monai_acs-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata and "\nName: monai-acs\n" in metadata
    requires = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    required = {r.split(">")[0].split("=")[0].split(";")[0].strip() for r in requires if "extra ==" not in r}
    # everything the package and the bundles' configs import at run time
    assert {"torch", "torchvision", "monai", "numpy", "scipy", "nibabel", "itk", "pytorch-ignite", "fire",
            "tensorboard", "tqdm", "matplotlib", "pillow"} <= required, sorted(required)
    assert "Provides-Extra: tracking" in metadata and any(r.startswith("mlflow") and 'extra == "tracking"' in r
                                                          for r in requires)
    assert "License-File: LICENSE" in metadata and f"monai_acs-{version}.dist-info/licenses/LICENSE" in names
    with tarfile.open(sdist) as tar:
        in_sdist = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "LICENSE"} | sources <= in_sdist  # the wheel above was built from it


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_metadata_requires_this_package(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["required_packages_version"].get("monai-acs") == monai_acs.__version__, (
        f"{bundle.name}/configs/metadata.json: required_packages_version['monai-acs'] must be "
        f"{monai_acs.__version__} (monai_acs.__version__), got {meta['required_packages_version'].get('monai-acs')!r}"
    )
    if META_SCHEMA.is_file():  # the zoo schema sits beside the checkout in CI; the per-bundle tests also skip without
        import jsonschema

        jsonschema.validate(meta, json.loads(META_SCHEMA.read_text()))


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_large_files_say_where_the_model_goes(bundle):
    text = (bundle / "large_files.yml").read_text()
    entries = yaml.safe_load(text)["large_files"]
    assert isinstance(entries, list)
    assert "models/model.pt" in text  # a placeholder or the real entry names the published model's place
    for entry in entries:
        assert {"path", "url", "hash_val", "hash_type"} <= set(entry), f"{bundle.name}/large_files.yml: {entry}"
        if entry["path"] == "models/model.pt" and (bundle / entry["path"]).is_file():
            assert entry["hash_type"] == "sha256" and _sha256(bundle / entry["path"]) == entry["hash_val"]


def test_poc_ships_a_small_model_and_sample_data():
    model = POC / "models" / "model.pt"
    assert model.is_file(), "bundles/synthetic_poc_acs/models/model.pt (the shipped model) is missing"
    assert model.stat().st_size < 5 * 2**20
    assert _sha256(model) == _shipped_model_entry()["hash_val"]
    samples = sorted((POC / "sample_data").glob("*.nii.gz"))
    assert [p.name for p in samples] == ["case_000.nii.gz", "case_001.nii.gz"]
    assert sum(p.stat().st_size for p in (POC / "sample_data").rglob("*") if p.is_file()) < 400 * 2**10


def test_zoo_user_runs_the_shipped_model_outside_the_checkout(dists):
    tmp = dists["tmp"] / "user"
    assert REPO not in tmp.resolve().parents
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "--target", site,
          dists["wheel"]], cwd=dists["tmp"])

    zip_path = Path(_run([sys.executable, REPO / "scripts" / "package_bundle.py", POC, "--out", tmp / "zips"],
                         cwd=REPO).strip().splitlines()[-1].split(":")[0])
    assert zip_path.is_file() and zip_path.parent == tmp / "zips"
    umask = os.umask(0o022)
    os.umask(umask)
    assert zip_path.stat().st_mode & 0o777 == 0o666 & ~umask
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert {"synthetic_poc_acs/models/model.pt", "synthetic_poc_acs/sample_data/case_000.nii.gz",
                "synthetic_poc_acs/sample_data/case_001.nii.gz"} <= set(names)
        assert not [n for n in names if n.split("/")[1] in ("data", "runs", "eval")]
        archive.extractall(tmp / "zoo")
    bundle = tmp / "zoo" / "synthetic_poc_acs"
    assert _sha256(bundle / "models" / "model.pt") == _shipped_model_entry()["hash_val"]

    # the zoo's own reading of large_files.yml: the shipped file is there with its hash, so nothing is downloaded
    monai.bundle.download_large_files(bundle_path=str(bundle))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               CUDA_VISIBLE_DEVICES="")
    output = _run([sys.executable, "-c", _RUN_AS_ZOO_USER, site, "run", "--config_file", "configs/inference.json"],
                  cwd=bundle, env=env)
    assert f"monai_acs {monai_acs.__version__} from {site.resolve()}" in output

    _check_sample_predictions(bundle / "eval" / "predictions", bundle / "sample_data", output)


def test_poc_inference_from_the_repository_root_uses_the_shipped_model(tmp_path):
    # what a fresh clone runs right after setup (outputs redirected: tests never write into the checkout)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    output = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                   "bundles/synthetic_poc_acs/configs/inference.json", "--output_dir", tmp_path / "pred"],
                  cwd=REPO, env=env)
    _check_sample_predictions(tmp_path / "pred", POC / "sample_data", output)


def _check_sample_predictions(pred_dir: Path, sample_dir: Path, output: str) -> None:
    """One label map per sample volume, of its shape, with the bundle's classes, and the shipped model's Dice."""
    predictions = sorted(pred_dir.glob("*_seg.nii.gz"))
    assert [p.name for p in predictions] == ["case_000_seg.nii.gz", "case_001_seg.nii.gz"], output[-2000:]
    dice = []
    for pred_file in predictions:
        case = pred_file.name.replace("_seg", "")
        pred = np.asarray(nib.load(str(pred_file)).dataobj)
        label = np.asarray(nib.load(str(sample_dir / "labels" / case)).dataobj)
        assert pred.shape == label.shape == nib.load(str(sample_dir / case)).shape
        assert set(np.unique(pred).tolist()) <= set(range(NUM_CLASSES))
        for c in np.unique(label[label > 0]):
            dice.append(2 * np.sum((pred == c) & (label == c)) / (np.sum(pred == c) + np.sum(label == c)))
    assert np.mean(dice) >= MIN_SAMPLE_DICE, f"shipped model: mean foreground Dice {np.mean(dice):.3f} on the samples"
