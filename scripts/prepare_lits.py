"""Write a MONAI datalist JSON for a LiTS download, with a seeded train/validation split.

Usage (from the repository root):

    python scripts/prepare_lits.py --dataset_dir /data/LiTS [--out_json /data/LiTS/datalist.json]
        [--val_fraction 0.2 --seed 0]

``dataset_dir`` holds volume-N.nii[.gz] + segmentation-N.nii[.gz], flat or in the official "Training Batch 1/2"
folders. The JSON (paths relative to its folder) can be given to the LiTS bundle as ``--dataset_dir``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.data.lits import make_lits_datalist  # noqa: E402


def main(dataset_dir: str, out_json: str | None = None, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Find the LiTS cases under dataset_dir and write the split (default out_json: DATASET_DIR/datalist.json)."""
    out = Path(out_json) if out_json is not None else Path(dataset_dir) / "datalist.json"
    datalist = make_lits_datalist(dataset_dir, out, val_fraction=val_fraction, seed=seed)
    return (
        f"wrote {out.resolve()}: {datalist['numTraining']} training, {datalist['numValidation']} validation cases "
        f"(seed {seed})"
    )


if __name__ == "__main__":
    fire.Fire(main)
