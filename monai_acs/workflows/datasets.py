"""Datasets the bundles' inference configs hand to MONAI's evaluators."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from monai.data import IterableDataset

__all__ = ["SkipFailedDataset", "describe_error"]

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
    logged and printed (``SKIPPED <item>: <reason>``) and kept in :attr:`failures` (``(item, reason)`` pairs) for the
    report handler, and the evaluator goes on with the next item. The evaluator sees an iterable without a length
    (MONAI's engines then count the iterations of the epoch themselves).

    Args:
        data: the items (e.g. ``{"image": path}``).
        transform: the preprocessing. Default None.
        name_key: the item key that names it in messages. Default ``"image"``.
    """

    def __init__(self, data: Sequence[Any], transform: Callable | None = None, name_key: str = "image") -> None:
        super().__init__(data=list(data), transform=transform)
        self.name_key = name_key
        self.failures: list[tuple[Any, str]] = []

    def __iter__(self) -> Iterator[Any]:
        self.failures = []
        total = len(self.data)
        for i, item in enumerate(self.data, 1):
            try:
                yield self.transform(item) if self.transform is not None else item
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
                reason = describe_error(exc)
                name = item.get(self.name_key, item) if isinstance(item, dict) else item
                self.failures.append((item, reason))
                logger.error("[%d/%d] skipped %s: %s", i, total, name, reason)
                print(f"[{i}/{total}] SKIPPED {name}: {reason}", flush=True)
