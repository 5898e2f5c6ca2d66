"""Datasets the bundles' inference configs hand to MONAI's evaluators."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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
            from .runs import save_atomic

            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["input", "status"])
            writer.writerows(statuses)
            save_atomic(text.getvalue(), self.report)
        skipped = sum(status != "ok" for _, status in statuses)
        print(f"{len(statuses) - skipped} of {len(statuses)} inputs pass the checks"
              + (f"; {skipped} skipped" if skipped else ""), flush=True)
