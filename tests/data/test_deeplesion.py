"""DeepLesion data layer: DL_info.csv, 16-bit PNG slices, 2 mm context resampling, RECIST masks, demo data."""

from __future__ import annotations

import csv
import math
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_acs.data.deeplesion import (
    DL_INFO_COLUMNS,
    find_deeplesion_files,
    load_slices,
    read_dl_info,
    read_hu_png,
    recist_ellipse_mask,
    write_deeplesion_demo,
    write_hu_png,
)

REPO = Path(__file__).resolve().parents[2]
OFFICIAL_COLUMNS = (
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,"
    "Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
    "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("deeplesion_demo")
    records = write_deeplesion_demo(out, n_studies=4, seed=0, image_size=64)
    return out, records


def _row(**overrides) -> dict:
    row = {
        "File_name": "000001_01_01_010.png",
        "Patient_index": 1,
        "Study_index": 1,
        "Series_ID": 1,
        "Key_slice_index": 10,
        "Measurement_coordinates": "10, 16, 22, 16, 16, 13, 16, 19",
        "Bounding_boxes": "5, 8, 27, 24",
        "Lesion_diameters_Pixel_": "12, 6",
        "Normalized_lesion_location": "0.5, 0.5, 0.5",
        "Coarse_lesion_type": -1,
        "Possibly_noisy": 0,
        "Slice_range": "1, 20",
        "Spacing_mm_px_": "0.8, 0.8, 1",
        "Image_size": "32, 32",
        "DICOM_windows": "-175, 275",
        "Patient_gender": "F",
        "Patient_age": 60,
        "Train_Val_Test": 1,
    }
    row.update(overrides)
    return row


def _write_case(root: Path, interval: float, n_slices: int = 20, key: int = 10, rows: list[dict] | None = None) -> Path:
    """A hand-made series whose slice k holds the constant 10 * k HU (linear in z, so interpolation is exact)."""
    for k in range(1, n_slices + 1):
        write_hu_png(root / "Images_png" / "000001_01_01" / f"{k:03d}.png", np.full((32, 32), 10 * k))
    rows = rows or [
        _row(
            File_name=f"000001_01_01_{key:03d}.png",
            Key_slice_index=key,
            Slice_range=f"1, {n_slices}",
            Spacing_mm_px_=f"0.8, 0.8, {interval:g}",
        )
    ]
    with (root / "DL_info.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=DL_INFO_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root / "DL_info.csv"


def test_demo_layout_and_csv_format(demo):
    out, records = demo
    lines = (out / "DL_info.csv").read_text().splitlines()
    assert lines[0] == OFFICIAL_COLUMNS
    # List-valued fields are quoted, comma-separated numbers as in the official file.
    assert re.search(r',"-?\d+(\.\d+)?(, -?\d+(\.\d+)?){7}",', lines[1])
    with (out / "DL_info.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == DL_INFO_COLUMNS
    assert len(rows) == sum(len(r["boxes"]) for r in records)
    assert {r["split"] for r in records} == {1, 2, 3}
    assert "synthetic" in (out / "README.txt").read_text().lower()
    assert [p.name for p in find_deeplesion_files(out)] == ["DL_info.csv", "Images_png"]
    for row in rows:
        assert re.fullmatch(r"\d{6}_\d{2}_\d{2}_\d{3}\.png", row["File_name"])
        series = row["File_name"].rsplit("_", 1)[0]
        lo, hi = (int(float(v)) for v in row["Slice_range"].split(","))
        for k in range(lo, hi + 1):
            assert (out / "Images_png" / series / f"{k:03d}.png").is_file()
    for rec in records:
        assert rec["image_size"] == (64, 64) and rec["spacing"][2] in (1.0, 2.0, 2.5, 5.0)
        for recist, box, diam in zip(rec["recist"], rec["boxes"], rec["diameters"], strict=True):
            long_d = math.dist(recist[0:2], recist[2:4])
            short_d = math.dist(recist[4:6], recist[6:8])
            assert diam[0] == pytest.approx(long_d, rel=1e-3) and diam[1] == pytest.approx(short_d, rel=1e-3)
            assert short_d <= long_d
            xs, ys = recist[0::2], recist[1::2]
            assert box[0] == pytest.approx(max(xs.min() - 5, 0), abs=1e-3)
            assert box[3] == pytest.approx(min(ys.max() + 5, 63), abs=1e-3)
            # The diameters are perpendicular, as RECIST requires.
            assert abs(np.dot(recist[2:4] - recist[0:2], recist[6:8] - recist[4:6])) < 1e-2 * long_d * short_d + 1e-3
        if rec["split"] == 1:
            assert (rec["lesion_types"] == -1).all()


def test_demo_lesions_are_visible_on_the_key_slice(demo):
    out, records = demo
    for rec in records:
        volume = load_slices(out / "Images_png", rec, num_slices=3)
        for recist in rec["recist"]:
            mask = recist_ellipse_mask(volume.shape[1:], recist)
            ring = recist_ellipse_mask(volume.shape[1:], _scaled(recist, 1.8)) & ~recist_ellipse_mask(
                volume.shape[1:], _scaled(recist, 1.3)
            )
            inside, around = np.median(volume[1][mask]), np.median(volume[1][ring])
            assert abs(inside - around) > 20, f"{rec['file_name']}: lesion {inside} vs surroundings {around}"


def _scaled(recist: np.ndarray, factor: float) -> np.ndarray:
    centre = np.tile((recist[0:2] + recist[2:4]) / 2, 4)
    return centre + (recist - centre) * factor


def test_demo_is_seeded(tmp_path):
    a = write_deeplesion_demo(tmp_path / "a", n_studies=1, seed=4, image_size=48)
    b = write_deeplesion_demo(tmp_path / "b", n_studies=1, seed=4, image_size=48)
    assert (tmp_path / "a" / "DL_info.csv").read_text() == (tmp_path / "b" / "DL_info.csv").read_text()
    name = a[0]["series_dir"] + "/" + f"{a[0]['key_slice_index']:03d}.png"
    assert np.array_equal(
        read_hu_png(tmp_path / "a" / "Images_png" / name), read_hu_png(tmp_path / "b" / "Images_png" / name)
    )
    assert b[0]["file_name"] == a[0]["file_name"]


def test_png_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3072, size=(23, 31))
    hu[0, :4] = [-32768, 32767, 0, -1000]
    write_hu_png(tmp_path / "s.png", hu)
    with Image.open(tmp_path / "s.png") as img:
        assert img.mode.startswith("I;16")
        assert int(np.array(img)[0, 2]) == 32768  # stored value is HU + 32768
    back = read_hu_png(tmp_path / "s.png")
    assert back.dtype == np.int32 and np.array_equal(back, hu)


@pytest.mark.parametrize("num_slices", [3, 7])
def test_load_slices_shape_and_key_slice(demo, num_slices):
    out, records = demo
    for rec in records:
        volume = load_slices(out / "Images_png", rec, num_slices=num_slices)
        assert volume.shape == (num_slices, 64, 64) and volume.dtype == np.float32
        key = read_hu_png(out / "Images_png" / rec["series_dir"] / f"{rec['key_slice_index']:03d}.png")
        assert np.array_equal(volume[num_slices // 2], key)
    # The DeepLesion folder is accepted in place of Images_png.
    assert load_slices(out, records[0], num_slices=num_slices).shape[0] == num_slices


@pytest.mark.parametrize(
    ("interval", "num_slices", "expected_slices"),
    [
        (1.0, 7, [4, 6, 8, 10, 12, 14, 16]),  # 2 mm apart = every second 1 mm slice
        (5.0, 7, [8.8, 9.2, 9.6, 10, 10.4, 10.8, 11.2]),  # 2 mm apart = 0.4 of a 5 mm slice, interpolated
        (2.0, 3, [9, 10, 11]),  # already 2 mm: the neighbours themselves
        (0.5, 3, [6, 10, 14]),
    ],
)
def test_load_slices_resamples_to_2mm(tmp_path, interval, num_slices, expected_slices):
    csv_path = _write_case(tmp_path, interval)
    (record,) = read_dl_info(csv_path)
    volume = load_slices(tmp_path / "Images_png", record, num_slices=num_slices, target_interval_mm=2.0)
    assert volume.shape == (num_slices, 32, 32)
    assert np.allclose(volume[:, 0, 0], 10 * np.array(expected_slices), atol=1e-3)
    assert np.allclose(volume.std(axis=(1, 2)), 0)


def test_load_slices_clamps_at_series_ends(tmp_path):
    csv_path = _write_case(tmp_path, 1.0, n_slices=20, key=2)
    (record,) = read_dl_info(csv_path)
    volume = load_slices(tmp_path / "Images_png", record, num_slices=7)
    assert np.allclose(volume[:, 0, 0], 10 * np.array([1, 1, 1, 2, 4, 6, 8]))


def test_read_dl_info_groups_lesions_per_key_slice(tmp_path):
    second = _row(Measurement_coordinates="3, 3, 9, 3, 6, 1, 6, 5", Bounding_boxes="0, 0, 14, 10")
    other = _row(File_name="000001_01_01_012.png", Key_slice_index=12, Train_Val_Test=1)
    csv_path = _write_case(tmp_path, 1.0, rows=[_row(), second, other])
    records = read_dl_info(csv_path)
    assert [r["file_name"] for r in records] == ["000001_01_01_010.png", "000001_01_01_012.png"]
    assert records[0]["boxes"].shape == (2, 4) and records[0]["recist"].shape == (2, 8)
    assert records[0]["series_dir"] == "000001_01_01" and records[0]["spacing"] == (0.8, 0.8, 1.0)
    assert records[0]["dicom_windows"] == [(-175.0, 275.0)] and records[0]["patient_age"] == 60.0
    assert read_dl_info(csv_path, split=2) == []
    assert len(read_dl_info(tmp_path, split=[1, 3])) == 2  # the folder holding DL_info.csv is accepted


def test_recist_mask_area_matches_the_ellipse():
    # 40 x 20 px, axis-aligned: area pi * 40 * 20 / 4 = 628.3.
    mask = recist_ellipse_mask((64, 80), [20, 30, 60, 30, 40, 20, 40, 40])
    assert mask.sum() == pytest.approx(math.pi * 40 * 20 / 4, rel=0.03)
    rows, cols = np.nonzero(mask)
    assert cols.min() == 20 and cols.max() == 60 and rows.min() == 20 and rows.max() == 40
    # Rotated by 30 degrees: same area, same centre.
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    x0, y0, a, b = 40.0, 32.0, 25.0, 10.0
    coords = [x0 - a * c, y0 - a * s, x0 + a * c, y0 + a * s, x0 + b * s, y0 - b * c, x0 - b * s, y0 + b * c]
    mask = recist_ellipse_mask((64, 80), coords)
    assert mask.sum() == pytest.approx(math.pi * a * b, rel=0.03)
    rows, cols = np.nonzero(mask)
    assert cols.mean() == pytest.approx(x0, abs=0.2) and rows.mean() == pytest.approx(y0, abs=0.2)
    # Marks that do not cross at their middles: the ellipse is centred on both diameters.
    mask = recist_ellipse_mask((64, 80), [20, 30, 60, 30, 30, 18, 30, 38])
    rows, cols = np.nonzero(mask)
    assert cols.mean() == pytest.approx(40, abs=0.2) and rows.mean() == pytest.approx(28, abs=0.2)
    # Several lesions: the union; a degenerate mark still gives pixels.
    both = recist_ellipse_mask((64, 80), [[20, 30, 60, 30, 40, 20, 40, 40], [5, 5, 5, 5, 5, 5, 5, 5]])
    assert both[5, 5] and both.sum() > mask.sum()
    with pytest.raises(ValueError, match="8 finite numbers"):
        recist_ellipse_mask((64, 80), [1, 2, 3])


def test_clear_errors_for_bad_files(tmp_path):
    csv_path = _write_case(tmp_path, 1.0)
    (record,) = read_dl_info(csv_path)
    images = tmp_path / "Images_png"
    (images / "000001_01_01" / "014.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"000001_01_01_010\.png.*014\.png"):
        load_slices(images, record, num_slices=7)
    corrupt = images / "000001_01_01" / "012.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"012\.png.*not a readable PNG"):
        load_slices(images, record, num_slices=3, target_interval_mm=2.0)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "000001_01_01" / "008.png")
    with pytest.raises(ValueError, match=r"008\.png.*16-bit"):
        load_slices(images, record, num_slices=3)
    with pytest.raises(ValueError, match="odd"):
        load_slices(images, record, num_slices=4)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"Measurement_coordinates": "10, 16, 22"}, r"DL_info\.csv:3: column 'Measurement_coordinates' must hold 8"),
        ({"Bounding_boxes": "5, x, 27, 24"}, r":3: column 'Bounding_boxes'"),
        ({"Spacing_mm_px_": "0.8, 0.8, nan"}, r":3: column 'Spacing_mm_px_'"),
        ({"Spacing_mm_px_": "0.8, 0.8, 0"}, "must be positive"),
        ({"Key_slice_index": "ten"}, r":3: column 'Key_slice_index' must be an integer"),
        ({"Key_slice_index": 11}, "names slice 10 but Key_slice_index is 11"),
        ({"Slice_range": "12, 20"}, "outside Slice_range"),
        ({"Train_Val_Test": 4}, "Train_Val_Test"),
    ],
)
def test_bad_csv_rows_name_line_and_column(tmp_path, override, match):
    csv_path = _write_case(tmp_path, 1.0, rows=[_row(), _row(**override)])
    with pytest.raises(ValueError, match=match):
        read_dl_info(csv_path)


def test_missing_files_say_how_to_make_demo_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make_demo_data\.py deeplesion --out"):
        read_dl_info(tmp_path / "DL_info.csv")
    with pytest.raises(FileNotFoundError, match=r"Images_png.*make_demo_data\.py deeplesion"):
        find_deeplesion_files(tmp_path)
    (tmp_path / "DL_info.csv").write_text("File_name,Patient_index\n")
    with pytest.raises(ValueError, match="missing column"):
        read_dl_info(tmp_path / "DL_info.csv")


def test_script_make_demo_data_deeplesion(tmp_path, monkeypatch, capsys):
    # The fire CLI runs in-process (runpy) to spare a second interpreter start; tests/data/test_lits.py runs the
    # same script, and prepare_lits.py, as real subprocesses.
    out = tmp_path / "dl"
    argv = [
        "make_demo_data.py",
        "deeplesion",
        "--out",
        str(out),
        "--n_studies",
        "2",
        "--image_size",
        "48",
        "--seed",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "scripts" / "make_demo_data.py"), run_name="__main__")
    assert "synthetic DeepLesion-layout" in capsys.readouterr().out
    records = read_dl_info(out / "DL_info.csv")
    assert records and load_slices(out / "Images_png", records[0], num_slices=3).shape == (3, 48, 48)
    assert {r["patient_index"] for r in records} <= {1, 2}
