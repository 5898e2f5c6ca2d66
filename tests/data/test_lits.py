"""LiTS data layer: synthetic phantoms, layout discovery, seeded datalists, the demo and prepare scripts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_acs.data import lits
from monai_acs.data.lits import (
    find_lits_cases,
    load_lits_datalist,
    make_lits_datalist,
    make_lits_phantom,
    split_lits_cases,
    write_lits_demo,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = (48, 48, 16)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lits_demo")
    write_lits_demo(out, n_cases=5, seed=3, shape_xyz=SMALL)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_hu_per_tissue_and_label(seed):
    shape = (64, 64, 20)
    ct, seg, _ = make_lits_phantom(seed, shape_xyz=shape, n_tumours=2)
    # The phantom draws its tissue map first from the same generator: rebuild it to check each tissue's HU.
    tissue, tumours = lits._lits_tissues(np.random.default_rng(seed), shape, 2)
    assert ct.dtype == np.int16 and seg.dtype == np.uint8 and ct.shape == seg.shape == shape
    assert set(np.unique(seg)) == {0, 1, 2}
    expected = {lits._AIR: -1000, lits._FAT: -100, lits._SOFT: 40, lits._LIVER: 60, lits._BONE: 450}
    in_plane = np.ones((3, 3, 1), dtype=bool)
    for t, hu in expected.items():
        interior = ndimage.binary_erosion(tissue == t, structure=in_plane)
        assert interior.sum() > 20, f"tissue {t} has no interior voxels"
        assert abs(np.median(ct[interior]) - hu) <= 15, f"tissue {t}: median {np.median(ct[interior])}, want ~{hu}"
    # Cortical bone (vertebral rim, ribs) is thin, so partial volume lowers it: its brightest voxels still reach it.
    assert np.percentile(ct[tissue == lits._CORTEX], 95) >= 700
    # Labels: liver ~ +60 HU, tumours darker than liver in [20, 35] HU, air outside the body.
    liver, tumour = ct[seg == 1], ct[seg == 2]
    assert 50 <= np.median(liver) <= 70
    assert 15 <= np.median(tumour) <= 40
    assert np.median(tumour) < np.median(liver) - 15
    assert np.all(ct[0, 0, :] < -900) and np.all(ct[-1, -1, :] < -900)
    liver_interior = ndimage.binary_erosion(seg == 1, structure=np.ones((5, 5, 1), dtype=bool))
    assert 8 <= ct[liver_interior].std() <= 20  # the noise is there and of CT magnitude (~12 HU)


def test_tumours_lie_inside_the_liver():
    for seed in range(4):
        _, seg, _ = make_lits_phantom(seed, shape_xyz=(64, 64, 20), n_tumours=3)
        tumour = seg == 2
        assert tumour.any()
        _, n_components = ndimage.label(tumour)
        assert 1 <= n_components <= 3
        shell = ndimage.binary_dilation(tumour) & ~tumour
        # What touches a tumour is liver (a tumour may reach the liver's edge at a few voxels).
        assert (seg[shell] == 1).mean() > 0.85
        assert (seg[shell] != 0).mean() > 0.85
    _, seg, _ = make_lits_phantom(0, shape_xyz=(64, 64, 20), n_tumours=0)
    assert not (seg == 2).any() and (seg == 1).any()


def test_phantom_liver_is_on_the_patients_right():
    _, seg, affine = make_lits_phantom(0, shape_xyz=(64, 64, 20))
    ijk = np.argwhere(seg > 0).mean(0)
    world = affine[:3, :3] @ ijk + affine[:3, 3]
    assert world[0] > 0  # RAS+: positive x is toward the patient's right


def test_affine_spacing_and_orientation(demo_dir):
    img = nib.load(demo_dir / "volume-0.nii")
    lab = nib.load(demo_dir / "segmentation-0.nii")
    assert img.shape == lab.shape == SMALL
    assert np.allclose(img.header.get_zooms()[:3], (0.7, 0.7, 2.5))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(img.affine, lab.affine)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2}
    assert "synthetic" in (demo_dir / "README.txt").read_text().lower()
    _, _, affine = make_lits_phantom(0, shape_xyz=(8, 9, 10), spacing=(0.8, 0.9, 5.0))
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.8, 0.9, 5.0))


def test_demo_is_seeded(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_lits_demo(a, n_cases=1, seed=7, shape_xyz=(32, 32, 8))
    write_lits_demo(b, n_cases=1, seed=7, shape_xyz=(32, 32, 8))
    assert (a / "volume-0.nii").read_bytes() == (b / "volume-0.nii").read_bytes()
    # Case 0 always has a tumour so that lesion metrics are defined on the demo data.
    assert (np.asarray(nib.load(a / "segmentation-0.nii").dataobj) == 2).any()


def test_find_cases_in_official_layout(demo_dir, tmp_path):
    root = tmp_path / "LiTS"
    for n in range(5):
        batch = root / ("Training Batch 1" if n < 3 else "Training Batch 2")
        batch.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / f"volume-{n}.nii", batch / f"volume-{n}.nii")
        if n != 4:
            shutil.copy(demo_dir / f"segmentation-{n}.nii", batch / f"segmentation-{n}.nii")
    # Gzipped files and numbers past 9 sort numerically.
    img = nib.load(demo_dir / "volume-0.nii")
    nib.save(img, root / "Training Batch 2" / "volume-10.nii.gz")
    nib.save(nib.load(demo_dir / "segmentation-0.nii"), root / "Training Batch 2" / "segmentation-10.nii.gz")
    with pytest.warns(UserWarning, match="volume-4.nii"):
        cases = find_lits_cases(root)
    assert [Path(c["image"]).name for c in cases] == [f"volume-{n}.nii" for n in range(4)] + ["volume-10.nii.gz"]
    for c in cases:
        assert Path(c["label"]).name == Path(c["image"]).name.replace("volume", "segmentation")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unlabelled = find_lits_cases(root, require_labels=False)
    assert len(unlabelled) == 6 and "label" not in unlabelled[4]


def test_missing_or_empty_dataset_dir_says_how_to_make_demo_data(tmp_path):
    for missing in (tmp_path / "nope", tmp_path):
        with pytest.raises(FileNotFoundError, match=r"make_demo_data\.py lits --out") as info:
            find_lits_cases(missing)
        assert "volume-N.nii" in str(info.value) and "segmentation-N.nii" in str(info.value)
    (tmp_path / "volume-3.nii").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"volume-3\.nii"):
        find_lits_cases(tmp_path)
    with pytest.raises(FileNotFoundError, match="make_demo_data"):
        load_lits_datalist(tmp_path / "nope")


def test_split_is_seeded_disjoint_and_complete():
    cases = [{"image": f"volume-{i}.nii", "label": f"segmentation-{i}.nii"} for i in range(20)]
    a = split_lits_cases(cases, val_fraction=0.2, seed=0)
    b = split_lits_cases(list(reversed(cases)), val_fraction=0.2, seed=0)
    c = split_lits_cases(cases, val_fraction=0.2, seed=1)
    assert a == b
    assert a["validation"] != c["validation"]
    train, val = {x["image"] for x in a["training"]}, {x["image"] for x in a["validation"]}
    assert len(val) == 4 and not train & val and train | val == {x["image"] for x in cases}
    assert len(split_lits_cases(cases[:3], val_fraction=0.01)["validation"]) == 1
    assert split_lits_cases(cases[:1], val_fraction=0.0)["validation"] == []
    with pytest.raises(ValueError, match="no training case"):
        split_lits_cases(cases[:1], val_fraction=0.2)
    with pytest.raises(ValueError, match="val_fraction"):
        split_lits_cases(cases, val_fraction=1.0)


def test_datalist_json_round_trip(demo_dir, tmp_path):
    out = tmp_path / "lists" / "datalist.json"
    written = make_lits_datalist(demo_dir, out, val_fraction=0.4, seed=5)
    again = make_lits_datalist(demo_dir, tmp_path / "again.json", val_fraction=0.4, seed=5)
    assert [Path(c["image"]).name for c in written["validation"]] == [
        Path(c["image"]).name for c in again["validation"]
    ]
    data = json.loads(out.read_text())
    assert data["numTraining"] == 3 and data["numValidation"] == 2
    assert data["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    for key in ("training", "validation"):
        for c in data[key]:
            assert not Path(c["image"]).is_absolute()
            assert (out.parent / c["image"]).resolve().is_file()
    from_json = load_lits_datalist(out, "validation")
    from_dir = load_lits_datalist(demo_dir, "validation", val_fraction=0.4, seed=5)
    assert [Path(c["image"]).resolve() for c in from_json] == [Path(c["image"]) for c in from_dir]
    assert all(Path(c["label"]).is_file() for c in from_json)


def test_scripts_make_demo_data_and_prepare_lits(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_demo_data.py"),
            "lits",
            "--out",
            str(out),
            "--n_cases",
            "3",
            "--seed",
            "1",
            "--shape_xyz",
            "32,32,8",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("*.nii")) == [
        "segmentation-0.nii",
        "segmentation-1.nii",
        "segmentation-2.nii",
        "volume-0.nii",
        "volume-1.nii",
        "volume-2.nii",
    ]
    assert nib.load(out / "volume-0.nii").shape == (32, 32, 8)
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_lits.py"), "--dataset_dir", str(out), "--seed", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads((out / "datalist.json").read_text())
    assert data["numTraining"] == 2 and data["numValidation"] == 1 and data["seed"] == 1
