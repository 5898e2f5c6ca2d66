"""Proof-of-concept generators: shapes, classes, regions, geometry, noise, determinism, and the on-disk data set."""

from __future__ import annotations

import doctest
import json
import os

import nibabel as nib
import numpy as np
import pytest

import monai_acs.data.synthetic as synthetic_module
from monai_acs.data import (
    POC_2D_CLASS_IDS,
    POC_CLASS_NAMES,
    POC_NUM_CLASSES,
    make_2d_sample,
    make_3d_sample,
    read_2d_samples,
    write_dataset,
)

CONE, PYRAMID, CUBE, CYLINDER, SPHERE = 1, 2, 3, 4, 5


def _regions(label: np.ndarray) -> list[np.ndarray]:
    """The 4 quarters (2D) or 8 octants (3D) of a label map."""
    half = label.shape[0] // 2
    ndim = label.ndim
    corners = np.stack(np.meshgrid(*[[0, half]] * ndim, indexing="ij"), -1).reshape(-1, ndim)
    return [label[tuple(slice(c, c + half) for c in corner)] for corner in corners]


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def test_class_ids_are_documented_constants():
    assert POC_CLASS_NAMES == ("background", "cone", "pyramid", "cube", "cylinder", "sphere")
    assert POC_NUM_CLASSES == 6
    assert POC_2D_CLASS_IDS == {"circle": SPHERE, "square": CUBE}


@pytest.mark.parametrize("size", [16, 48])
def test_2d_sample_shapes_classes_and_regions(size):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        image, label = make_2d_sample(rng, size=size)
        assert image.shape == label.shape == (size, size)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        seen |= set(np.unique(label).tolist())
        regions = _regions(label)
        filled = [r for r in regions if r.any()]
        assert len(filled) == 3, "exactly 3 of the 4 quarters hold a shape"
        for region in filled:
            assert len(set(np.unique(region).tolist()) - {0}) == 1, "one shape (one class) per quarter"
            # a 1-pixel empty border inside every quarter: shapes never touch across quarters
            assert not region[[0, -1], :].any() and not region[:, [0, -1]].any()
    assert seen == {0, CUBE, SPHERE}


@pytest.mark.parametrize("size", [16, 48])
def test_3d_sample_shapes_classes_and_regions(size):
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(25):
        image, label = make_3d_sample(rng, size=size)
        assert image.shape == label.shape == (size, size, size)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        seen |= set(np.unique(label).tolist())
        filled = [r for r in _regions(label) if r.any()]
        assert len(filled) == 4, "exactly 4 of the 8 octants hold a shape"
        for region in filled:
            assert len(set(np.unique(region).tolist()) - {0}) == 1
            for axis in range(3):
                assert not np.take(region, [0, -1], axis=axis).any()
    assert seen == set(range(POC_NUM_CLASSES))


def test_2d_geometry():
    rng = np.random.default_rng(2)
    half = 24
    for _ in range(20):
        _, label = make_2d_sample(rng)
        for region in _regions(label):
            if not region.any():
                continue
            cls = int(region.max())
            box = region[_bbox(region > 0)]
            assert half / 4 - 1 <= max(box.shape) <= half - 2
            fill = (box > 0).mean()
            if cls == CUBE:  # a square fills its (square) bounding box
                assert fill == 1.0 and abs(box.shape[0] - box.shape[1]) <= 1
            else:  # a disc fills about pi/4 of it
                assert 0.6 < fill < 0.9 and abs(box.shape[0] - box.shape[1]) <= 1


def test_3d_geometry_and_depth_orientation():
    rng = np.random.default_rng(3)
    checked = set()
    for _ in range(15):
        _, label = make_3d_sample(rng)
        for region in _regions(label):
            if not region.any():
                continue
            cls = int(region.max())
            box = region[_bbox(region > 0)] > 0
            areas = box.sum(axis=(1, 2))  # axial cross-section area along D
            assert 5 <= max(box.shape) <= 22
            if cls == CUBE:
                assert box.all()
            elif cls == CYLINDER:  # the same disc on every axial slice
                assert (box == box[:1]).all() and 0.6 < box[0].mean() < 0.9
            elif cls in (CONE, PYRAMID):  # base at low D, shrinking towards the apex at high D
                assert np.all(np.diff(areas) <= 0) and areas[0] > 4 * areas[-1]
                widest = box[0]
                if cls == PYRAMID:  # square base
                    assert widest.all()
                else:  # round base
                    assert widest.mean() < 0.9
            elif cls == SPHERE:  # widest in the middle, symmetric
                assert areas.argmax() not in (0, len(areas) - 1)
                assert abs(int(areas[0]) - int(areas[-1])) <= max(areas) // 2
            checked.add(cls)
    assert checked == {CONE, PYRAMID, CUBE, CYLINDER, SPHERE}


def test_noise_is_gaussian_with_the_requested_std():
    rng = np.random.default_rng(4)
    image, label = make_3d_sample(rng)
    noise = image - (label > 0)
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    image, label = make_2d_sample(rng)
    noise = image - (label > 0)
    assert abs(noise.mean()) < 0.04 and abs(noise.std() - 0.5) < 0.03
    image, label = make_2d_sample(rng, noise_std=0.0)
    np.testing.assert_array_equal(image, (label > 0).astype(np.float32))


def test_determinism_and_errors():
    a = make_3d_sample(np.random.default_rng(5), size=16)
    b = make_3d_sample(np.random.default_rng(5), size=16)
    c = make_3d_sample(np.random.default_rng(6), size=16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        make_2d_sample(np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even number >= 16"):
        make_2d_sample(np.random.default_rng(0), size=15)
    with pytest.raises(ValueError, match="noise_std"):
        make_3d_sample(np.random.default_rng(0), noise_std=-1.0)


SMALL = {"n_2d": 3, "n_3d_train": 2, "n_3d_val": 1, "seed": 11, "size": 16}


def test_write_dataset_layout_and_contents(tmp_path):
    out = tmp_path / "poc"
    datalist_path = write_dataset(out, n_2d_val=2, **SMALL)
    assert datalist_path == out / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    assert len(datalist["training"]) == 2 and len(datalist["validation"]) == 1
    assert datalist["training_2d"] == "pretrain_2d_training.npz"
    assert datalist["validation_2d"] == "pretrain_2d_validation.npz"
    readme = (out / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "seed=11" in readme and "write_dataset" in readme
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["seed"] == 11 and manifest["class_names"] == list(POC_CLASS_NAMES)
    assert all((out / f).is_file() for f in manifest["files"])
    for entry in datalist["training"] + datalist["validation"]:
        image = nib.load(out / entry["image"])
        label = nib.load(out / entry["label"])
        assert image.shape == label.shape == (16, 16, 16)
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(image.affine, np.eye(4))
        lab = np.asanyarray(label.dataobj)
        assert set(np.unique(lab).tolist()) <= set(range(POC_NUM_CLASSES)) and lab.any()
    samples = read_2d_samples(out / datalist["training_2d"])
    assert len(samples) == 3 and len(read_2d_samples(out / datalist["validation_2d"])) == 2
    assert samples[0]["image"].shape == (1, 16, 16) and samples[0]["image"].dtype == np.float32
    assert samples[0]["label"].dtype == np.uint8
    assert set(np.unique(np.concatenate([s["label"] for s in samples])).tolist()) <= {0, CUBE, SPHERE}
    assert [p.name for p in tmp_path.iterdir()] == ["poc"], "no temporary folder left behind"


def test_write_dataset_loads_through_monai_with_axes_kept(tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImage

    out = tmp_path / "poc"
    write_dataset(out, **SMALL)
    items = load_decathlon_datalist(out / "datalist.json", data_list_key="training", base_dir=out)
    assert len(items) == 2 and os.path.isfile(items[0]["image"])
    loaded = np.asarray(LoadImage(image_only=True)(items[0]["label"]))
    np.testing.assert_array_equal(loaded, np.asanyarray(nib.load(items[0]["label"]).dataobj))


def test_write_dataset_is_deterministic_and_splits_independent(tmp_path):
    write_dataset(tmp_path / "a", **SMALL)
    write_dataset(tmp_path / "b", **SMALL)
    write_dataset(tmp_path / "c", **{**SMALL, "n_3d_val": 2, "n_2d": 5})
    for name in ("imagesTr/case_000.nii.gz", "labelsTr/case_001.nii.gz", "imagesVal/case_000.nii.gz"):
        a = np.asanyarray(nib.load(tmp_path / "a" / name).dataobj)
        np.testing.assert_array_equal(a, np.asanyarray(nib.load(tmp_path / "b" / name).dataobj))
        # other counts do not change the samples of a split
        np.testing.assert_array_equal(a, np.asanyarray(nib.load(tmp_path / "c" / name).dataobj))
    with (
        np.load(tmp_path / "a" / "pretrain_2d_training.npz") as a,
        np.load(tmp_path / "c" / "pretrain_2d_training.npz") as c,
    ):
        np.testing.assert_array_equal(a["image"], c["image"][:3])
    other = write_dataset(tmp_path / "d", **{**SMALL, "seed": 12})
    a = np.asanyarray(nib.load(tmp_path / "a" / "labelsTr/case_000.nii.gz").dataobj)
    assert not np.array_equal(a, np.asanyarray(nib.load(other.parent / "labelsTr/case_000.nii.gz").dataobj))


def test_write_dataset_is_idempotent(tmp_path):
    out = tmp_path / "poc"
    write_dataset(out, **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert write_dataset(out, **SMALL) == out / "datalist.json"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_write_dataset_refuses_to_overwrite(tmp_path):
    out = tmp_path / "poc"
    write_dataset(out, **SMALL)
    manifest = (out / "manifest.json").read_text()
    with pytest.raises(FileExistsError, match=r"different synthetic data set.*'seed': \(11, 12\)"):
        write_dataset(out, **{**SMALL, "seed": 12})
    with pytest.raises(FileExistsError, match="n_3d_train"):
        write_dataset(out, **{**SMALL, "n_3d_train": 3})
    assert (out / "manifest.json").read_text() == manifest
    # incomplete data set
    (out / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(FileExistsError, match="incomplete"):
        write_dataset(out, **SMALL)
    # a folder with foreign files
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no manifest.json"):
        write_dataset(foreign, **SMALL)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # a file in the way
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        write_dataset(tmp_path / "file", **SMALL)


def test_write_dataset_fills_an_empty_folder_and_checks_arguments(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    write_dataset(out, **SMALL)
    assert (out / "manifest.json").is_file()
    with pytest.raises(ValueError, match="n_2d must be a non-negative integer"):
        write_dataset(tmp_path / "bad", **{**SMALL, "n_2d": -1})
    with pytest.raises(ValueError, match="even number"):
        write_dataset(tmp_path / "bad", **{**SMALL, "size": 17})
    assert not (tmp_path / "bad").exists()


def test_read_2d_samples_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_2d_samples(tmp_path / "missing.npz")
    np.savez(tmp_path / "wrong.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="expected arrays 'image' and 'label'"):
        read_2d_samples(tmp_path / "wrong.npz")


def test_docstring_examples_run():
    result = doctest.testmod(synthetic_module)
    assert result.attempted > 0 and result.failed == 0
