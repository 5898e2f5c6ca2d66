"""The 2D to 3D converter: rule table, torch.fx graph pass, weight loading."""

from __future__ import annotations

from .api import convert_to_3d, find_leftover_2d
from .weights import load_2d_weights, resolve_weights

__all__ = ["convert_to_3d", "find_leftover_2d", "load_2d_weights", "resolve_weights"]
