"""The one NIfTI writer of the package: a volume with its affine, every axis kept, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_nifti"]


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` as NIfTI with ``affine`` (voxel to RAS world, mm) as both qform and sform, in the array's dtype.

    Every axis is kept (a one-slice volume stays 3D, unlike MONAI's ``SaveImage`` with its default squeezing). The
    file is written beside ``path`` and renamed over it, so a reader never sees half a file.

    Args:
        array: the voxels, (X, Y, Z) (or (X, Y) for a 2D image).
        affine: 4 x 4 voxel-to-world matrix.
        path: ``.nii`` or ``.nii.gz`` file; its folder is created.

    Returns:
        The written path.

    Examples:
        >>> import tempfile, nibabel as nib
        >>> path = tempfile.mkdtemp() + "/m.nii.gz"
        >>> out = save_nifti(np.zeros((4, 5, 1), np.uint8), np.diag([0.5, 0.5, 2.0, 1.0]), path)
        >>> nib.load(str(out)).shape, [float(z) for z in nib.load(str(out)).header.get_zooms()]
        ((4, 5, 1), [0.5, 0.5, 2.0])
    """
    import nibabel as nib

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else ".nii"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
