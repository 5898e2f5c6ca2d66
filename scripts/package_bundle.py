"""Package a bundle as the MONAI model zoo publishes it: ``<name>_v<version>.zip`` holding one folder ``<name>/``.

Usage (from the repository root):

    python scripts/package_bundle.py bundles/synthetic_poc_acs [--out dist] [--overwrite true]

The zip holds ``<name>/configs/``, ``docs/``, ``scripts/`` and ``sample_data/`` (if any), ``LICENSE``,
``large_files.yml`` and ``models/`` with the released weights when present (``model.pt``, ``model.ts``). Data,
run folders, evaluation outputs, caches, hidden files and every other file under ``models/`` (2D pretraining
weights, backups of earlier models) stay out. The zip gets the permissions a plain ``open()`` gives (0666 less the
umask), its files 0644 and its folders 0755. The version comes from ``configs/metadata.json``. A user gets it back with
``monai.bundle.download(name=<name>, url=<zip url>, bundle_dir=...)`` (which unzips it) and runs its configs from
the extracted folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import fire

INCLUDED = ("configs", "docs", "scripts", "sample_data", "LICENSE", "large_files.yml")
"""Top-level entries of a bundle that go into the zip (those present), besides ``models/``."""

WEIGHTS = ("model.pt", "model.ts")
"""Files of ``models/`` that go into the zip when present."""

_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # every entry gets the same timestamp: the same bundle gives the same zip
_FILE_MODE = 0o100644 << 16  # regular file, rw-r--r--
_DIR_MODE = (0o040755 << 16) | 0x10  # directory, rwxr-xr-x, plus the MS-DOS directory flag


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _version(bundle: Path) -> str:
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{bundle} is not a MONAI bundle: {meta_file} does not exist")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as err:
        raise ValueError(f"{meta_file} is not valid JSON: {err}") from err
    version = meta.get("version")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise ValueError(f"{meta_file}: 'version' must be a semantic version like '0.1.0', got {version!r}")
    if version not in meta.get("changelog", {}):
        raise ValueError(f"{meta_file}: the changelog has no entry for version {version}")
    return version


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, without hidden entries, ``__pycache__`` and compiled Python."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p == "__pycache__" for p in parts) or path.suffix == ".pyc":
            continue
        if path.is_file():
            files.append(path)
    return files


def bundle_files(bundle: str | os.PathLike) -> list[tuple[Path, str]]:
    """The (file, name in the zip) pairs of a bundle, in zip order."""
    root = Path(bundle).resolve()
    name = root.name
    pairs: list[tuple[Path, str]] = []
    for entry in INCLUDED:
        path = root / entry
        if path.is_file():
            pairs.append((path, f"{name}/{entry}"))
        elif path.is_dir():
            pairs += [(f, f"{name}/{f.relative_to(root).as_posix()}") for f in _visible_files(path)]
    for weight in WEIGHTS:
        if (root / "models" / weight).is_file():
            pairs.append((root / "models" / weight, f"{name}/models/{weight}"))
    return pairs


def package_bundle(bundle: str, out: str = "dist", overwrite: bool = False) -> str:
    """Write ``<out>/<name>_v<version>.zip`` for the bundle folder ``bundle`` and return its path.

    Args:
        bundle: the bundle folder, e.g. ``bundles/synthetic_poc_acs``.
        out: output folder (created). Default ``dist``.
        overwrite: replace an existing zip of the same version. Default False.

    Returns:
        The path of the zip.

    Raises:
        FileNotFoundError: ``bundle`` has no ``configs/metadata.json`` or no ``configs/inference.json``.
        ValueError: the metadata has no semantic ``version`` with a changelog entry.
        FileExistsError: the zip exists and ``overwrite`` is False.
    """
    root = Path(bundle).resolve()
    version = _version(root)
    if not (root / "configs" / "inference.json").is_file():
        raise FileNotFoundError(f"{root / 'configs' / 'inference.json'} does not exist: nothing a user could run")
    target = Path(out).resolve() / f"{root.name}_v{version}.zip"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; bump the version in configs/metadata.json or pass --overwrite true")
    target.parent.mkdir(parents=True, exist_ok=True)

    pairs = bundle_files(root)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            folders = sorted({str(Path(arcname).parent) for _, arcname in pairs} | {f"{root.name}/models"})
            for folder in folders:  # explicit folder entries, so an empty models/ survives extraction
                info = zipfile.ZipInfo(f"{folder}/", date_time=_FIXED_TIME)
                info.external_attr = _DIR_MODE
                archive.writestr(info, b"")
            for path, arcname in pairs:
                info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = _FILE_MODE
                archive.writestr(info, path.read_bytes())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600: other users could not read the release
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

    weights = [w for w in WEIGHTS if (root / "models" / w).is_file()]
    left_out = sorted(
        p.name for p in root.iterdir() if p.name not in (*INCLUDED, "models") and not p.name.startswith(".")
    )
    print(
        f"{target}: {len(pairs)} files; weights: {', '.join(weights) if weights else 'none (models/ is empty)'}; "
        f"left out: {', '.join(left_out) if left_out else 'nothing'}",
        flush=True,
    )
    return str(target)


if __name__ == "__main__":
    fire.Fire(package_bundle)
