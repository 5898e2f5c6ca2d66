"""Load a file of ``scripts/`` as a module, so tests call its functions and its ``fire`` entry point in-process.

Importable from every test folder as ``from script_helpers import load_script`` (see ``dicom_helpers``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a fresh module named ``monai_acs_script_<name>``."""
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"monai_acs_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
