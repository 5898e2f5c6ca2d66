"""Datasets the bundles' inference configs hand to MONAI's evaluators."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import IterableDataset

__all__ = ["InputsReport", "SkipFailedDataset", "describe_error"]

logger = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of the first error in the chain that is not MONAI's "applying transform ..." wrapper.

    Examples:
        >>> describe_error(RuntimeError("applying transform x"))
        'RuntimeError: applying transform x'
    """
    err: BaseException | None = exc
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if not str(err).startswith("applying transform"):
            return f"{type(err).__name__}: {' '.join(str(err).split())}"
        err = err.__cause__ or err.__context__
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class SkipFailedDataset(IterableDataset):
    """A MONAI ``IterableDataset`` that skips the items whose ``transform`` fails, and remembers why.

    Inference over many files should not stop at one unreadable, corrupt or wrongly shaped input: each failure is
    logged and printed (``[i/n] SKIPPED <item>: <reason>``) and kept in :attr:`failures` (``(item, reason)`` pairs),
    :attr:`statuses` keeps ``(name, "ok" | "error: <reason>")`` per input in order, for the report handlers
    (:class:`InputsReport`), and the evaluator goes on with the next item. The evaluator sees an iterable without a
    length (MONAI's engines then count the iterations of the epoch themselves).

    Args:
        data: the items (e.g. ``{"image": path}``).
        transform: the preprocessing. Default None.
        name_key: the item key that names it in messages. Default ``"image"``.

    Raises (while iterated):
        FileNotFoundError: ``data`` is empty.
        BundleError: every item failed (the first reason is in the message).
    """

    def __init__(self, data: Sequence[Any], transform: Callable | None = None, name_key: str = "image") -> None:
        super().__init__(data=list(data), transform=transform)
        self.name_key = name_key
        self.failures: list[tuple[Any, str]] = []
        self.statuses: list[tuple[str, str]] = []

    def _name(self, item: Any) -> str:
        return str(item.get(self.name_key, item) if isinstance(item, Mapping) else item)

    def __iter__(self) -> Iterator[Any]:
        from ..errors import BundleError

        self.failures, self.statuses = [], []
        total = len(self.data)
        if not total:
            raise FileNotFoundError("no input to process (the input folder holds no matching file)")
        for i, item in enumerate(self.data, 1):
            try:
                out = self.transform(item) if self.transform is not None else item
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
                reason = describe_error(exc)
                self.failures.append((item, reason))
                self.statuses.append((self._name(item), f"error: {reason}"))
                logger.error("[%d/%d] skipped %s: %s", i, total, self._name(item), reason)
                print(f"[{i}/{total}] SKIPPED {self._name(item)}: {reason}", flush=True)
                continue
            self.statuses.append((self._name(item), "ok"))
            yield out
        if len(self.failures) == total:
            item, reason = self.failures[0]
            raise BundleError(f"every input failed its checks (first: {self._name(item)}: {reason}); fix the inputs")


class InputsReport:
    """ignite handler: at the end of an inference pass over a :class:`SkipFailedDataset`, print how many inputs
    passed their checks and write ``report`` (CSV ``input,status``: ``ok`` or ``error: <reason>`` per input).

    Args:
        dataset: the evaluator's :class:`SkipFailedDataset`.
        report: the CSV path; None prints only. Default None.
    """

    def __init__(self, dataset: SkipFailedDataset, report: str | os.PathLike | None = None) -> None:
        self.dataset, self.report = dataset, report

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self._write)

    def _write(self, engine: Any) -> None:
        statuses = self.dataset.statuses
        if self.report is not None:
            from .checkpoints import save_atomic

            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["input", "status"])
            writer.writerows(statuses)
            save_atomic(text.getvalue(), self.report)
        skipped = sum(status != "ok" for _, status in statuses)
        print(f"{len(statuses) - skipped} of {len(statuses)} inputs pass the checks"
              + (f"; {skipped} skipped" if skipped else ""), flush=True)


def context_slices(
    volume: np.ndarray, index: int, num_slices: int, interval_mm: float, target_interval_mm: float = 2.0
) -> np.ndarray:
    """D slices centred on ``volume[index]`` at ``target_interval_mm`` spacing, linearly interpolated along z.

    Positions beyond the volume are clamped to its first / last slice (as
    :func:`monai_acs.data.deeplesion.load_slices` does with ``Slice_range``).

    Examples:
        >>> vol = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
        >>> context_slices(vol, 2, 3, interval_mm=1.0)[:, 0, 0].tolist()
        [0.0, 2.0, 4.0]
        >>> context_slices(vol, 0, 3, interval_mm=4.0)[:, 0, 0].tolist()
        [0.0, 0.0, 0.5]
    """
    if num_slices < 1 or num_slices % 2 == 0:
        raise ValueError(f"num_slices must be odd and positive, got {num_slices}")
    step = float(target_interval_mm) / float(interval_mm)
    last = volume.shape[0] - 1
    out = []
    for j in range(-(num_slices // 2), num_slices // 2 + 1):
        position = min(max(index + j * step, 0.0), float(last))
        below = math.floor(position + 1e-6)
        frac = position - below
        slice_ = volume[below]
        if frac > 1e-6 and below < last:
            slice_ = (1 - frac) * slice_ + frac * volume[below + 1]
        out.append(slice_)
    return np.stack(out).astype(np.float32)


class SliceContextDataset(torch.utils.data.Dataset):
    """One item per axial slice (or those in ``slice_range``) of a :func:`read_ct_volume` result, with its context.

    Items: ``{"image": (D, H, W) HU, "slice": slice number, "original_size": (H, W)}`` passed through ``transform``.

    Args:
        volume: a :func:`read_ct_volume` result.
        num_slices: D. Default 3.
        target_interval_mm: context spacing. Default 2.0.
        slice_range: inclusive (first, last) slice numbers (PNG numbers for DeepLesion folders, 0-based indices for
            NIfTI / DICOM); None: every slice. Default None.
        transform: applied to each item. Default None.
    """

    def __init__(
        self,
        volume: Mapping[str, Any],
        num_slices: int = 3,
        target_interval_mm: float = 2.0,
        slice_range: Sequence[int] | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.volume = volume
        self.num_slices, self.target_interval_mm, self.transform = int(num_slices), float(target_interval_mm), transform
        numbers = list(volume["slice_numbers"])
        if slice_range is not None:
            lo, hi = int(slice_range[0]), int(slice_range[1])
            selected = [i for i, n in enumerate(numbers) if lo <= n <= hi]
            if not selected:
                raise ValueError(
                    f"slice_range {list(slice_range)} selects no slice of {volume['input']} "
                    f"(slices {numbers[0]}..{numbers[-1]})"
                )
        else:
            selected = list(range(len(numbers)))
        self.indices = selected

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        vol = self.volume["volume"]
        image = context_slices(vol, index, self.num_slices, self.volume["slice_interval_mm"], self.target_interval_mm)
        item = {
            "image": torch.as_tensor(image),
            "slice": int(self.volume["slice_numbers"][index]),
            "index": index,
            "original_size": tuple(int(s) for s in vol.shape[-2:]),
        }
        return self.transform(item) if self.transform is not None else item


def list_collate(batch: Sequence[Any]) -> list[Any]:
    """Collate a detection batch as a plain list of items (images keep their own targets)."""
    return list(batch)

