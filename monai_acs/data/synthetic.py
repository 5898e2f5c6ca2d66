"""Synthetic shapes of the ACS paper's proof-of-concept (Sec. IV-A and the appendix "To generate the 2D dataset").

2D samples: a ``size x size`` image (48 by default) cut into four quarters; 3 quarters chosen at random each
hold one random-size circle or square (equal probability) at a random centre, wholly inside the quarter.
3D samples: a ``size^3`` volume cut into eight octants; 4 octants chosen at random each hold one random-size
cone, pyramid, cube, cylinder or sphere (equal probability), wholly inside the octant. The image is the binary
foreground mask plus Gaussian noise of standard deviation ``noise_std`` (0.5: the paper's "N(0, 0.5)") on every
pixel / voxel.

Class ids (one label space for both tasks, :data:`POC_CLASS_NAMES`)::

    0 background   1 cone   2 pyramid   3 cube   4 cylinder   5 sphere

The 2D task uses the *same six ids*: a square is labelled 3 (cube) and a circle 5 (sphere), the 3D shapes
whose every view is that 2D shape; ids 1, 2 and 4 never occur in 2D. A 2D network is therefore built with the
3D task's 6 output channels and the *whole* network, head included, transfers to 3D by conversion, with no
re-initialisation or re-indexing of the last layer (the channels of unseen classes start from weights trained
to stay low, which 3D training then overrides). In 2D per-class metrics, classes 1, 2 and 4 are ``nan``.

Geometry. Arrays are indexed ``(H, W)`` in 2D and ``(D, H, W)`` in 3D, coordinates are pixel centres
``i + 0.5``. Each shape has one random extent ``e`` (diameter, side or height) drawn uniformly in
``[half / 4, half - 2]`` (``half = size // 2``, so 6 to 22 pixels for 48) and a centre drawn uniformly so the
shape lies in ``[1, half - 1]`` on every axis of its region: every region keeps a 1-pixel empty border and
shapes in neighbouring regions never touch. 3D shapes are axis aligned; the axis of the cone, pyramid and
cylinder runs along depth (axis 0, ``D``), with the base of the cone and the pyramid on the low-``D`` side and
the apex on the high-``D`` side. Axial slices (fixed ``D``) of a cone, cylinder or sphere are circles and those
of a cube or pyramid are squares; the other views add triangles, which the 2D data lacks (as in the paper).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .nifti import save_nifti

__all__ = [
    "POC_2D_CLASS_IDS",
    "POC_CLASS_NAMES",
    "POC_NUM_CLASSES",
    "make_2d_sample",
    "make_3d_sample",
    "read_2d_samples",
    "write_dataset",
]

POC_CLASS_NAMES: tuple[str, ...] = ("background", "cone", "pyramid", "cube", "cylinder", "sphere")
"""Class names indexed by class id, shared by the 2D and 3D proof-of-concept tasks."""

POC_NUM_CLASSES: int = len(POC_CLASS_NAMES)
"""Number of classes (output channels) of both the 2D and the 3D proof-of-concept networks: 6."""

POC_2D_CLASS_IDS: dict[str, int] = {"circle": 5, "square": 3}
"""Label ids of the 2D shapes: a circle is labelled as a sphere, a square as a cube."""

_FORMAT_VERSION = 1
_MANIFEST = "manifest.json"
_DATALIST = "datalist.json"

# A shape is drawn on the pixel-centre coordinates of its region, given its extent and centre (per axis).
_ShapeFn = Callable[[list[np.ndarray], float, np.ndarray], np.ndarray]


def _circle(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    y, x = grid
    return (y - c[0]) ** 2 + (x - c[1]) ** 2 <= (e / 2) ** 2


def _square(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    y, x = grid
    return (np.abs(y - c[0]) <= e / 2) & (np.abs(x - c[1]) <= e / 2)


def _height(z: np.ndarray, e: float, cz: float) -> np.ndarray:
    """Fraction of the height along depth, 0 at the base (low ``D``) and 1 at the apex; ``nan`` outside."""
    t = (z - (cz - e / 2)) / e
    return np.where((t >= 0) & (t <= 1), t, np.nan)


def _cone(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    z, y, x = grid
    radius = (e / 2) * (1 - _height(z, e, c[0]))
    with np.errstate(invalid="ignore"):
        return (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2


def _pyramid(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    z, y, x = grid
    half_side = (e / 2) * (1 - _height(z, e, c[0]))
    with np.errstate(invalid="ignore"):
        return np.maximum(np.abs(y - c[1]), np.abs(x - c[2])) <= half_side


def _cube(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    z, y, x = grid
    return (np.abs(z - c[0]) <= e / 2) & (np.abs(y - c[1]) <= e / 2) & (np.abs(x - c[2]) <= e / 2)


def _cylinder(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    z, y, x = grid
    return (np.abs(z - c[0]) <= e / 2) & ((y - c[1]) ** 2 + (x - c[2]) ** 2 <= (e / 2) ** 2)


def _sphere(grid: list[np.ndarray], e: float, c: np.ndarray) -> np.ndarray:
    z, y, x = grid
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= (e / 2) ** 2


# (class id, drawing function), drawn with equal probability.
_SHAPES_2D: tuple[tuple[int, _ShapeFn], ...] = (
    (POC_2D_CLASS_IDS["circle"], _circle),
    (POC_2D_CLASS_IDS["square"], _square),
)
_SHAPES_3D: tuple[tuple[int, _ShapeFn], ...] = ((1, _cone), (2, _pyramid), (3, _cube), (4, _cylinder), (5, _sphere))


def _make_sample(
    rng: np.random.Generator,
    size: int,
    noise_std: float,
    ndim: int,
    n_filled: int,
    shapes: tuple[tuple[int, _ShapeFn], ...],
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    half = size // 2
    grid = list(np.meshgrid(*([np.arange(half) + 0.5] * ndim), indexing="ij"))
    label = np.zeros((size,) * ndim, dtype=np.uint8)
    regions = np.sort(rng.choice(2**ndim, size=n_filled, replace=False))
    for region in regions:
        class_id, draw = shapes[int(rng.integers(len(shapes)))]
        extent = float(rng.uniform(half / 4, half - 2))
        centre = rng.uniform(1 + extent / 2, half - 1 - extent / 2, size=ndim)
        # Region r has corner (bit ndim-1, ..., bit 0) * half: quarters / octants in row-major order.
        corner = [((int(region) >> (ndim - 1 - axis)) & 1) * half for axis in range(ndim)]
        window = tuple(slice(lo, lo + half) for lo in corner)
        label[window][draw(grid, extent, centre)] = class_id
    image = (label > 0).astype(np.float32) + rng.normal(0.0, noise_std, size=label.shape).astype(np.float32)
    return image, label


def make_2d_sample(rng: np.random.Generator, size: int = 48, noise_std: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One 2D proof-of-concept sample: circles and squares in 3 of the 4 quarters, plus Gaussian noise.

    ACS paper, appendix: 3 of the four ``size/2``-square quarters, chosen at random, each hold a random-size
    circle or square (equal probability) at a random centre inside the quarter. See the module docstring for
    the geometry and the class ids (circle 5, square 3, in the 3D task's label space).

    Args:
        rng: the generator all randomness is drawn from, ``numpy.random.default_rng(seed)``.
        size: image side, even and >= 16. Default 48.
        noise_std: standard deviation of the additive Gaussian noise. Default 0.5.

    Returns:
        ``(image, label)``: ``image`` float32 ``(size, size)`` = foreground mask + noise; ``label`` uint8
        ``(size, size)`` with ids in ``{0, 3, 5}``.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: odd or too small ``size``, negative ``noise_std``.

    Examples:
        >>> import numpy as np
        >>> image, label = make_2d_sample(np.random.default_rng(0))
        >>> image.shape, image.dtype, label.dtype
        ((48, 48), dtype('float32'), dtype('uint8'))
        >>> set(np.unique(label).tolist()) <= {0, 3, 5}
        True
    """
    return _make_sample(rng, size, noise_std, ndim=2, n_filled=3, shapes=_SHAPES_2D)


def make_3d_sample(rng: np.random.Generator, size: int = 48, noise_std: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One 3D proof-of-concept sample: five kinds of solids in 4 of the 8 octants, plus Gaussian noise.

    ACS paper, appendix: 4 of the eight ``size/2``-cube octants, chosen at random, each hold a random-size
    cone, pyramid, cube, cylinder or sphere (equal probability) at a random centre inside the octant. Axes are
    ``(D, H, W)``; cone, pyramid and cylinder stand along ``D`` (axis 0), base at low ``D``. See the module
    docstring for the geometry.

    Args:
        rng: the generator all randomness is drawn from, ``numpy.random.default_rng(seed)``.
        size: volume side, even and >= 16. Default 48.
        noise_std: standard deviation of the additive Gaussian noise. Default 0.5.

    Returns:
        ``(image, label)``: ``image`` float32 ``(size, size, size)`` = foreground mask + noise; ``label`` uint8
        ``(size, size, size)``, ids 0 background, 1 cone, 2 pyramid, 3 cube, 4 cylinder, 5 sphere.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: odd or too small ``size``, negative ``noise_std``.

    Examples:
        >>> import numpy as np
        >>> image, label = make_3d_sample(np.random.default_rng(0), size=16)
        >>> image.shape, label.shape, int(label.max()) <= 5
        ((16, 16, 16), (16, 16, 16), True)
    """
    return _make_sample(rng, size, noise_std, ndim=3, n_filled=4, shapes=_SHAPES_3D)


def read_2d_samples(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Read a 2D ``.npz`` written by :func:`write_dataset` as a list of MONAI-style sample dicts.

    Args:
        path: the ``.npz`` file (``pretrain_2d_training.npz`` or ``pretrain_2d_validation.npz``).

    Returns:
        One dict per sample, ``{"image": float32 (1, H, W), "label": uint8 (1, H, W)}``: channel-first arrays
        (views into the loaded arrays) ready for ``monai.data.Dataset`` and dictionary transforms.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file lacks the ``image`` / ``label`` arrays or their shapes differ.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_dataset(folder / "poc", n_2d=2, n_3d_train=1, n_3d_val=1, seed=0, size=16)
        >>> samples = read_2d_samples(folder / "poc" / "pretrain_2d_training.npz")
        >>> len(samples), samples[0]["image"].shape
        (2, (1, 16, 16))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"2D sample file not found: {path}")
    with np.load(path) as data:
        if "image" not in data or "label" not in data:
            raise ValueError(f"{path}: expected arrays 'image' and 'label', found {sorted(data.files)}")
        images, labels = data["image"], data["label"]
    if images.shape != labels.shape or images.ndim != 3:
        raise ValueError(f"{path}: image {images.shape} and label {labels.shape} must both be (N, H, W)")
    return [{"image": images[i : i + 1], "label": labels[i : i + 1]} for i in range(images.shape[0])]


def _readme(params: dict) -> str:
    p = params
    return f"""SYNTHETIC DATA - no patient data. Proof-of-concept shapes of the ACS paper (Sec. IV-A and appendix).

Generated by monai_acs.data.synthetic.write_dataset(out_dir, n_2d={p["n_2d"]}, n_3d_train={p["n_3d_train"]},
n_3d_val={p["n_3d_val"]}, seed={p["seed"]}, n_2d_val={p["n_2d_val"]}, size={p["size"]}, noise_std={p["noise_std"]}),
which calls make_2d_sample / make_3d_sample with numpy Generators spawned from numpy.random.SeedSequence({p["seed"]}).
Re-running it with the same arguments reproduces these files exactly; parameters are in {_MANIFEST}.

Classes (2D and 3D share ids): {", ".join(f"{i} {n}" for i, n in enumerate(POC_CLASS_NAMES))}.
In 2D a circle is labelled 5 (sphere) and a square 3 (cube).

Files
  {_DATALIST}                MONAI datalist: "training" / "validation" 3D cases (paths relative to this folder),
                               "training_2d" / "validation_2d" 2D .npz files
  imagesTr/ labelsTr/          3D training cases, NIfTI, float32 image / uint8 label
  imagesVal/ labelsVal/        3D validation cases
  pretrain_2d_training.npz     2D samples: "image" float32 (N, H, W), "label" uint8 (N, H, W)
  pretrain_2d_validation.npz   (only when n_2d_val > 0)

Axes: NIfTI arrays are stored as (D, H, W) with an identity affine (1 mm voxels), so a NIfTI viewer shows D as
its x axis. Cone, pyramid and cylinder stand along D (axis 0), base at low D.
"""


def _remove_orphan_partials(out_dir: Path) -> None:
    """Remove ``.<name>.partial-pid<N>-*`` folders whose writer ``N`` was killed (older ones: after an hour)."""
    import re
    import time

    for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        match = re.search(r"partial-pid(\d+)-", partial.name)
        if match is None:
            dead = time.time() - partial.stat().st_mtime > 3600
        else:
            try:
                os.kill(int(match.group(1)), 0)
                dead = False
            except ProcessLookupError:
                dead = True
            except PermissionError:
                dead = False
        if dead and int(match.group(1) if match else -1) != os.getpid():
            shutil.rmtree(partial, ignore_errors=True)


def _check_existing(out_dir: Path, params: dict) -> bool:
    """True when ``out_dir`` holds a complete data set with ``params``; raises if it holds anything else."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise NotADirectoryError(f"dataset path {out_dir} exists and is not a directory")
    manifest_path = out_dir / _MANIFEST
    if not manifest_path.is_file():
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir} is not empty and holds no {_MANIFEST}: not a data set written by write_dataset; "
                "choose another folder or empty this one"
            )
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
        found = manifest["parameters"]
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FileExistsError(f"{manifest_path} is unreadable or malformed ({err}); delete {out_dir} to regenerate")
    if found != params:
        diff = {k: (found.get(k), v) for k, v in params.items() if found.get(k) != v}
        raise FileExistsError(
            f"{out_dir} holds a different synthetic data set: (existing, requested) = {diff}; "
            "refusing to overwrite it. Use another folder or delete this one."
        )
    missing = [f for f in files if not (out_dir / f).is_file()]
    if missing:
        raise FileExistsError(
            f"{out_dir} is incomplete: {len(missing)} file(s) listed in {_MANIFEST} are missing "
            f"(first: {missing[0]}); delete the folder to regenerate it"
        )
    return True


def write_dataset(
    out_dir: str | os.PathLike,
    n_2d: int,
    n_3d_train: int,
    n_3d_val: int,
    seed: int = 0,
    n_2d_val: int = 0,
    size: int = 48,
    noise_std: float = 0.5,
) -> Path:
    """Write the proof-of-concept data set (2D pretraining samples, 3D training and validation volumes).

    Layout of ``out_dir`` (see also the ``README.txt`` written there)::

        datalist.json               {"training": [{"image": "imagesTr/case_000.nii.gz", "label": ...}, ...],
                                     "validation": [...], "training_2d": "pretrain_2d_training.npz",
                                     "validation_2d": "pretrain_2d_validation.npz" (if n_2d_val > 0)}
        imagesTr/ labelsTr/ imagesVal/ labelsVal/   3D cases, NIfTI (D, H, W), identity affine
        pretrain_2d_training.npz    2D samples, compressed: "image" float32 (N, H, W), "label" uint8 (N, H, W)
        manifest.json  README.txt

    Paths in the datalist are relative to its folder (``monai.data.load_decathlon_datalist(path, base_dir=
    out_dir)`` resolves them). The 2D training, 2D validation, 3D training and 3D validation samples are drawn
    from four independent generators spawned from ``numpy.random.SeedSequence(seed)``, so changing one count
    does not change the samples of the other splits.

    Idempotent and safe: the data set is written into a temporary sibling folder and moved into place at the
    end, with a manifest of its parameters. If ``out_dir`` already holds a complete data set with the same
    parameters nothing is done; if it holds a different data set, an incomplete one, or foreign files, a
    ``FileExistsError`` is raised and nothing is touched. An empty ``out_dir`` is filled.

    Args:
        out_dir: target folder; created (with parents) if missing.
        n_2d: number of 2D training samples.
        n_3d_train: number of 3D training volumes.
        n_3d_val: number of 3D validation volumes.
        seed: root seed. Default 0.
        n_2d_val: number of 2D validation samples (no file when 0). Default 0.
        size: image / volume side, even and >= 16. Default 48.
        noise_std: standard deviation of the Gaussian noise. Default 0.5.

    Returns:
        Path of ``datalist.json``.

    Raises:
        FileExistsError: ``out_dir`` holds something other than this exact data set.
        NotADirectoryError: ``out_dir`` is a file.
        ValueError: negative counts, or invalid ``size`` / ``noise_std``.

    Examples:
        >>> import json, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "poc"
        >>> datalist = write_dataset(folder, n_2d=3, n_3d_train=2, n_3d_val=1, seed=1, size=16)
        >>> len(json.loads(datalist.read_text())["training"])
        2
        >>> write_dataset(folder, n_2d=3, n_3d_train=2, n_3d_val=1, seed=1, size=16) == datalist  # no-op
        True
    """
    counts = {"n_2d": n_2d, "n_2d_val": n_2d_val, "n_3d_train": n_3d_train, "n_3d_val": n_3d_val}
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    params = {
        "format_version": _FORMAT_VERSION,
        **{k: int(v) for k, v in counts.items()},
        "seed": int(seed),
        "size": int(size),
        "noise_std": float(noise_std),
    }
    out_dir = Path(out_dir)
    if _check_existing(out_dir, params):
        return out_dir / _DATALIST
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphan_partials(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-pid{os.getpid()}-", dir=out_dir.parent))
    try:
        rng_2d, rng_2d_val, rng_train, rng_val = (
            np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
        )
        files: list[str] = []
        datalist: dict[str, object] = {}
        for key, count, rng in (("training_2d", n_2d, rng_2d), ("validation_2d", n_2d_val, rng_2d_val)):
            if key == "validation_2d" and count == 0:
                continue
            pairs = [make_2d_sample(rng, size, noise_std) for _ in range(count)]
            name = f"pretrain_2d_{key[:-3]}.npz"
            np.savez_compressed(
                tmp / name,
                image=np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size), np.float32),
                label=np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, size, size), np.uint8),
            )
            files.append(name)
            datalist[key] = name
        splits_3d = (("training", n_3d_train, rng_train, "Tr"), ("validation", n_3d_val, rng_val, "Val"))
        for key, count, rng, suffix in splits_3d:
            (tmp / f"images{suffix}").mkdir()
            (tmp / f"labels{suffix}").mkdir()
            entries = []
            for i in range(count):
                image, label = make_3d_sample(rng, size, noise_std)
                entry = {
                    "image": f"images{suffix}/case_{i:03d}.nii.gz",
                    "label": f"labels{suffix}/case_{i:03d}.nii.gz",
                }
                save_nifti(image, np.eye(4), tmp / entry["image"])
                save_nifti(label, np.eye(4), tmp / entry["label"])
                files += [entry["image"], entry["label"]]
                entries.append(entry)
            datalist[key] = entries
        (tmp / _DATALIST).write_text(json.dumps(datalist, indent=2) + "\n")
        (tmp / "README.txt").write_text(_readme(params))
        files += [_DATALIST, "README.txt"]
        manifest = {
            "generator": "monai_acs.data.synthetic.write_dataset",
            "parameters": params,
            "class_names": list(POC_CLASS_NAMES),
            "files": files,
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(tmp, out_dir)  # atomic; succeeds onto a missing or empty folder only
        except OSError:
            # Another process (e.g. a second DDP rank) finished first: accept its data set if it is this one.
            if _check_existing(out_dir, params):
                return out_dir / _DATALIST
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / _DATALIST
