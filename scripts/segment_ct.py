"""Segment liver and liver tumours in CT volumes with the LiTS bundle, without writing bundle syntax.

Usage (from anywhere):

    python scripts/segment_ct.py --input CT --output OUT [--bundle bundles/lits_acs] [--ckpt MODEL.pt]
        [--device cuda:0] [--roi_size 64,512,512] [--overlap 0.625,0,0] [--blend_mode gaussian] [--operator acs]
        [--overlay true]

``CT`` is a NIfTI file (.nii / .nii.gz), a folder of them, a DICOM series folder, or a folder holding NIfTI files
and/or one sub-folder per DICOM series. ``OUT`` receives, per input, ``<name>_seg.nii.gz`` (0 background, 1 liver,
2 tumour, in the input's own geometry) and ``<name>_overlay.png``, plus ``volumes.csv`` with the liver and tumour
volumes in mL. An input that cannot be read is reported and skipped. The work is done by the bundle's
``configs/inference.json`` through ``monai.bundle.ConfigWorkflow``, exactly as
``python -m monai.bundle run --config_file bundles/lits_acs/configs/inference.json --input CT --output_dir OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import fire

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))  # run from a checkout without installing


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [float(v) if "." in v else int(v) for v in value.replace("[", "").replace("]", "").split(",") if v]
    return list(value) if isinstance(value, Sequence) else [value]


def main(
    input: str,
    output: str,
    bundle: str = str(_REPO / "bundles" / "lits_acs"),
    ckpt: str | None = None,
    device: str | None = None,
    roi_size: Any = None,
    overlap: Any = None,
    blend_mode: str | None = None,
    operator: str | None = None,
    overlay: bool | None = None,
) -> str:
    """Segment the CT volume(s) at ``input`` into ``output`` with the bundle's inference config.

    Args:
        input: a NIfTI file, a folder of them, or a DICOM series folder.
        output: the output folder.
        bundle: the bundle folder. Default: ``bundles/lits_acs`` of this checkout.
        ckpt: model weights. Default: the bundle's ``models/model.pt``.
        device: e.g. ``"cpu"`` or ``"cuda:0"``. Default: CUDA when available.
        roi_size: sliding-window size (z, y, x). Default: the config's (64, 512, 512).
        overlap: sliding-window overlap per axis. Default: the config's (0.625, 0, 0), a 24-slice step.
        blend_mode: ``"constant"`` or ``"gaussian"``. Default: the config's.
        operator: the fusion operator the model was trained with. Default: the config's (``"acs"``).
        overlay: write the overlay PNGs. Default: the config's (True).

    Returns:
        A one-line summary.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle).resolve()
    config = root / "configs" / "inference.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist: --bundle must be the LiTS bundle folder (bundles/lits_acs)")
    overrides: dict[str, Any] = {
        "bundle_root": str(root),
        "input": str(Path(input).resolve()),
        "output_dir": str(Path(output).resolve()),
    }
    if ckpt is not None:
        overrides["ckpt_path"] = str(Path(ckpt).resolve())
    if device is not None:
        overrides["device"] = f"$torch.device('{device}')"
    optional = {"roi_size": _as_list(roi_size), "overlap": _as_list(overlap), "blend_mode": blend_mode,
                "operator": operator, "overlay": overlay}
    overrides.update({k: v for k, v in optional.items() if v is not None})
    workflow = ConfigWorkflow(
        config_file=str(config),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type="inference",
        **overrides,
    )
    workflow.initialize()
    results = workflow.run()
    workflow.finalize()
    rows = next((r for r in results if isinstance(r, list)), []) if isinstance(results, list) else []
    ok = sum(1 for r in rows if r.get("status") == "ok")
    return f"segmented {ok} of {len(rows)} input(s); outputs and volumes.csv in {overrides['output_dir']}"


if __name__ == "__main__":
    fire.Fire(main)
