"""The one switch for progress bars (weight downloads, caching, training, evaluation, inference)."""

from __future__ import annotations

import os

__all__ = ["progress_enabled"]

_OFF = ("0", "false", "no", "off")


def progress_enabled() -> bool:
    """Whether to draw progress bars: yes, unless ``MONAI_ACS_PROGRESS`` is ``0`` / ``false`` / ``no`` / ``off`` or
    tqdm's own ``TQDM_DISABLE`` is set to a true value (which also silences MONAI's and torch.hub's bars).

    Examples:
        >>> import os
        >>> os.environ["MONAI_ACS_PROGRESS"] = "0"; progress_enabled()
        False
        >>> del os.environ["MONAI_ACS_PROGRESS"]
    """
    if os.environ.get("MONAI_ACS_PROGRESS", "1").strip().lower() in _OFF:
        return False
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("", *_OFF)
