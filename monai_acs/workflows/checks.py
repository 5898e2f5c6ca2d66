"""One input check for every bundle: a volume is finite, 3D, has a sane voxel size and affine, and fits the network.

Used by the bundles' inference and training paths (``CheckVolumed`` after ``LoadImaged`` in configs,
:func:`check_volume` in the CT readers) and, for folders of inputs, :func:`screen_inputs`, which skips and reports
each bad file while the good ones are still processed. Every refusal is a :class:`monai_acs.errors.BundleError`
naming the file, the fault, what was expected and what to do.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from ..errors import BundleError, user_message
from .checkpoints import save_atomic

__all__ = ["CheckVolumed", "check_affine", "check_volume", "require_dataset_dir", "screen_inputs"]

logger = logging.getLogger(__name__)

MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 1e3


def check_affine(affine: Any, source: str) -> np.ndarray:
    """Refuse an affine that cannot map voxels to millimetres: not 4x4, not finite, singular, or with a voxel size
    outside ``[0.001, 1000]`` mm.

    Returns:
        The affine as a float64 array.

    Raises:
        BundleError: naming ``source`` and the fault.

    Examples:
        >>> check_affine(np.diag([0.7, 0.7, 2.5, 1.0]), "ct.nii.gz").diagonal().tolist()
        [0.7, 0.7, 2.5, 1.0]
        >>> try:
        ...     check_affine(np.diag([1.0, 1.0, 0.0, 1.0]), "ct.nii.gz")
        ... except BundleError as err:
        ...     print(err)
        ct.nii.gz: its affine is singular (voxel size 1 x 1 x 0 mm): the header's voxel-to-world matrix is broken; fix the header (pixdim / srow / qform) or re-export the volume
    """
    matrix = np.asarray(torch.as_tensor(affine).detach().cpu().double() if torch.is_tensor(affine) else affine,
                        dtype=np.float64)
    if matrix.shape != (4, 4):
        raise BundleError(f"{source}: its affine has shape {matrix.shape}; expected 4 x 4")
    fix = "fix the header (pixdim / srow / qform) or re-export the volume"
    if not np.isfinite(matrix).all():
        raise BundleError(f"{source}: its affine holds NaN or infinite values: {fix}")
    spacing = np.sqrt((matrix[:3, :3] ** 2).sum(0))
    shown = " x ".join(f"{s:.4g}" for s in spacing)
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12 or spacing.min() == 0:
        raise BundleError(
            f"{source}: its affine is singular (voxel size {shown} mm): the header's voxel-to-world matrix is broken; "
            f"{fix}"
        )
    if spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise BundleError(
            f"{source}: voxel size {shown} mm is outside {MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm; the header's "
            f"units or pixdim are wrong: {fix}"
        )
    return matrix


def check_volume(
    volume: Any,
    source: str,
    affine: Any = None,
    spatial_dims: int = 3,
    channel_first: bool = False,
    min_size: Sequence[int] | int | None = None,
) -> None:
    """Refuse a volume that would give a silently wrong result.

    Args:
        volume: the array (NumPy, torch or MetaTensor).
        source: the file it came from (named in every message).
        affine: its 4x4 voxel-to-world affine, checked by :func:`check_affine`. Default None (not checked).
        spatial_dims: spatial dimensions expected. Default 3.
        channel_first: ``volume`` has a leading channel axis. Default False.
        min_size: the smallest size per spatial axis the network accepts (one int for all). Default None.

    Raises:
        BundleError: the volume is empty, not ``spatial_dims``-D, holds NaN or infinite values, is smaller than
            ``min_size``, or its affine is broken.
    """
    shape = tuple(int(s) for s in volume.shape)
    spatial = shape[1:] if channel_first else shape
    expect = ("C x " if channel_first else "") + " x ".join("DHW"[-spatial_dims:] if spatial_dims <= 3 else "N" * 4)
    if len(spatial) != spatial_dims:
        raise BundleError(
            f"{source}: shape {shape} is not a {spatial_dims}D volume (expected {expect}); pass a {spatial_dims}D "
            f"image (a one-slice volume is fine: size 1 along one axis)"
        )
    if 0 in spatial:
        raise BundleError(f"{source}: shape {shape} is empty; pass a volume with at least one voxel")
    if min_size is not None:
        minimum = [int(min_size)] * spatial_dims if np.isscalar(min_size) else [int(m) for m in min_size]
        if any(s < m for s, m in zip(spatial, minimum)):
            raise BundleError(
                f"{source}: size {' x '.join(map(str, spatial))} is smaller than {' x '.join(map(str, minimum))} "
                f"voxels, the least this bundle takes; pass a larger volume"
            )
    values = torch.as_tensor(np.asarray(volume) if not torch.is_tensor(volume) else volume.detach())
    if values.is_floating_point() or values.is_complex():
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise BundleError(
                f"{source}: {bad} of {values.numel()} voxels are NaN or infinite; expected finite intensities (a "
                f"failed conversion or reconstruction?): fix or remove this file"
            )
    if affine is not None:
        check_affine(affine, source)


def _filename(value: Any, data: Mapping[Hashable, Any], key: Hashable) -> str:
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    name = meta.get("filename_or_obj", f"<{key}>")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


class CheckVolumed(MapTransform):
    """:func:`check_volume` on loaded channel-first images (after ``LoadImaged(..., ensure_channel_first=True)``),
    with the affine of their ``MetaTensor``.

    Args:
        keys: keys to check.
        spatial_dims: expected spatial dimensions. Default 3.
        min_size: smallest size per spatial axis. Default None.
        check_affine: check the affine too. Default True.
        allow_missing_keys: skip absent keys. Default False.
    """

    def __init__(
        self,
        keys: Any,
        spatial_dims: int = 3,
        min_size: Sequence[int] | int | None = None,
        check_affine: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims, self.min_size, self.check_affine = spatial_dims, min_size, check_affine

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            affine = getattr(value, "affine", None) if self.check_affine else None
            check_volume(value, _filename(value, d, key), affine=affine, spatial_dims=self.spatial_dims,
                         channel_first=True, min_size=self.min_size)
        return d


def screen_inputs(
    datalist: Sequence[Mapping[str, Any]],
    transform: Callable[[Any], Any],
    key: str = "image",
    report: str | os.PathLike | None = None,
) -> list[Mapping[str, Any]]:
    """Try ``transform`` (loading and checks) on each item; keep the good ones, skip and report the bad ones.

    One line per skipped file is printed (``SKIPPED <file>: <reason>``); with ``report``, a CSV of every input with
    its status is written. Use it on an inference folder, so that one bad file does not stop the others.

    Args:
        datalist: items such as ``{"image": path}``.
        transform: the preprocessing that reads and checks an item (its output is discarded).
        key: the item's file key (named in the report). Default ``"image"``.
        report: CSV path of the statuses. Default None.

    Returns:
        The good items, in order.

    Raises:
        FileNotFoundError: ``datalist`` is empty.
        BundleError: every input failed (the first reason is in the message).
    """
    items = list(datalist)
    if not items:
        raise FileNotFoundError("no input to process (the input folder holds no matching file)")
    good, rows = [], []
    for i, item in enumerate(items, 1):
        name = str(item.get(key, item))
        try:
            transform(dict(item))
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
            reason = user_message(exc) or f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            print(f"[{i}/{len(items)}] SKIPPED {name}: {reason}", flush=True)
            logger.error("skipped %s: %s", name, reason)
            rows.append({"input": name, "status": f"error: {reason}"})
        else:
            good.append(item)
            rows.append({"input": name, "status": "ok"})
    if report is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["input", "status"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        save_atomic(text.getvalue(), report)
    skipped = len(items) - len(good)
    print(f"{len(good)} of {len(items)} inputs pass the checks" + (f"; {skipped} skipped" if skipped else ""),
          flush=True)
    if not good:
        first = rows[0]["status"][len("error: "):]
        raise BundleError(f"every input failed its checks (first: {rows[0]['input']}: {first}); fix the inputs")
    return good


def require_dataset_dir(dataset_dir: str | os.PathLike, expected: str, how_to_make: str) -> str:
    """Fail fast with a clear message when ``dataset_dir`` is missing or empty.

    Args:
        dataset_dir: the configured data folder.
        expected: a description of the layout the bundle reads.
        how_to_make: the command that makes demo data.

    Returns:
        ``dataset_dir`` as a string.

    Raises:
        FileNotFoundError: the folder does not exist or is empty.
    """
    path = Path(dataset_dir)
    if not path.is_dir() or not any(path.iterdir()):
        state = "does not exist" if not path.exists() else ("is not a folder" if not path.is_dir() else "is empty")
        raise FileNotFoundError(
            f"dataset_dir {str(path)!r} {state}. Expected: {expected}. To make a small demo data set: {how_to_make}"
        )
    return str(path)
