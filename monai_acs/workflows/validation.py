"""Input checks of the bundles' data path: every bad file fails with a ``ValueError`` naming the file and the fault.

MONAI wraps transform errors in ``RuntimeError("applying transform <...>")`` and nibabel's errors for truncated
files (``EOFError``, ``OSError: Expected 16384 bytes``) do not name the file, so a user with a thousand volumes cannot
tell which one is broken. These two transforms close that gap; the bundles' configs use them in place of
``LoadImaged`` and right after it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImaged, MapTransform

__all__ = ["CheckedLoadImaged", "ValidateSegmentationd"]


class CheckedLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose read errors name the file.

    Same arguments as ``LoadImaged``. A file that cannot be read (missing, empty, truncated, corrupt, unsupported
    format) raises ``ValueError("cannot read <key> file '<path>': <reader error> ...")`` chained to the reader's error.

    Examples:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "case.nii.gz"
        >>> _ = bad.write_bytes(b"not an image")
        >>> try:
        ...     CheckedLoadImaged("image")({"image": str(bad)})
        ... except ValueError as err:
        ...     print(str(bad) in str(err))
        True
    """

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        try:
            return super().__call__(data, reader)
        except Exception as err:  # readers raise anything: OSError, EOFError, ImageFileError, zlib.error, ...
            key, path = self._unreadable(data, reader)
            raise ValueError(
                f"cannot read {key} file {path!r}: {type(err).__name__}: {err}. "
                "The file is corrupt, truncated or not a supported image format; replace or remove it."
            ) from err

    def _unreadable(self, data: Mapping[Hashable, Any], reader: Any) -> tuple[str, Any]:
        """The first (key, path) that fails to load on its own; all keys' paths if none does."""
        for key in self.key_iterator(dict(data)):
            try:
                self._loader(data[key], reader)
            except Exception:  # noqa: BLE001 - any reader error marks the unreadable file
                return str(key), data[key]
        keys = [k for k in self.keys if k in data]
        return "/".join(map(str, keys)), [data[k] for k in keys]


def _filename(value: Any, data: Mapping[Hashable, Any], key: Hashable) -> str:
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    name = meta.get("filename_or_obj", "<unknown file>")
    return str(name[0] if isinstance(name, (list, tuple)) and name else name)


class ValidateSegmentationd(MapTransform):
    """Check a loaded, channel-first image (and its label, when present) before training, evaluation or inference.

    Checks: the image has ``image_channels`` channels and only finite values; the label has one channel, the same
    spatial shape as the image, and integer values in ``0 .. num_classes - 1``.

    Args:
        image_key: key of the image. Default ``"image"``.
        label_key: key of the label; a sample without it gets the image checks only. Default ``"label"``.
        num_classes: number of label classes, background included. Default None (values not checked).
        image_channels: expected image channels. Default 1; None skips the check.

    Raises:
        ValueError: naming the file(s), the fault, what was found and what was expected.

    Examples:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> check = ValidateSegmentationd(num_classes=6)
        >>> sample = {"image": MetaTensor(torch.zeros(1, 8, 8, 8), meta={"filename_or_obj": "img.nii.gz"}),
        ...           "label": MetaTensor(torch.full((1, 8, 8, 8), 7), meta={"filename_or_obj": "lbl.nii.gz"})}
        >>> try:
        ...     check(sample)
        ... except ValueError as err:
        ...     print(err)
        label lbl.nii.gz has values [7] outside the classes 0..5 (image img.nii.gz)
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        num_classes: int | None = None,
        image_channels: int | None = 1,
    ) -> None:
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self.num_classes, self.image_channels = num_classes, image_channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"sample has no {self.image_key!r} entry (keys: {sorted(map(str, d))})")
        image = d[self.image_key]
        image_file = _filename(image, d, self.image_key)
        if image.ndim < 2:
            raise ValueError(f"image {image_file} has shape {tuple(image.shape)}; expected (channels, *spatial)")
        if self.image_channels is not None and image.shape[0] != self.image_channels:
            raise ValueError(
                f"image {image_file} has {image.shape[0]} channel(s) (shape {tuple(image.shape)}), expected "
                f"{self.image_channels}"
            )
        if not bool(torch.isfinite(torch.as_tensor(image)).all()):
            raise ValueError(f"image {image_file} holds NaN or infinite values")
        if self.label_key not in d:
            return d
        label = d[self.label_key]
        label_file = _filename(label, d, self.label_key)
        if label.ndim != image.ndim or label.shape[0] != 1:
            raise ValueError(
                f"label {label_file} has shape {tuple(label.shape)}; expected one channel and the image's "
                f"{image.ndim - 1} spatial dimensions (image {image_file}: {tuple(image.shape)})"
            )
        if tuple(label.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(
                f"label {label_file} has spatial shape {tuple(label.shape[1:])} but image {image_file} has "
                f"{tuple(image.shape[1:])}"
            )
        if self.num_classes is not None:
            values = np.unique(np.asarray(torch.as_tensor(label).detach().cpu()))
            bad = values[(values < 0) | (values >= self.num_classes) | (values != np.round(values))]
            if bad.size:
                shown = ", ".join(f"{v:g}" for v in bad[:10]) + (", ..." if bad.size > 10 else "")
                raise ValueError(
                    f"label {label_file} has values [{shown}] outside the classes 0..{self.num_classes - 1} "
                    f"(image {image_file})"
                )
        return d
