"""The 2D to 3D converter: rule table, torch.fx graph pass, weight loading."""

from __future__ import annotations

from .api import ConversionError, convert_to_3d, find_leftover_2d
from .weights import load_2d_weights, resolve_weights

__all__ = ["ConversionError", "convert_to_3d", "find_leftover_2d", "load_2d_weights", "resolve_weights"]
