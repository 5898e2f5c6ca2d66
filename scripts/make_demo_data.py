"""Write small synthetic demo data sets in the layouts the bundles read.

Usage (from the repository root):

    python scripts/make_demo_data.py lits --out DIR [--n_cases 4 --seed 0 --shape_xyz 96,96,40 --spacing 0.7,0.7,2.5]
    python scripts/make_demo_data.py deeplesion --out DIR [--n_studies 6 --seed 0 --image_size 512]

Every data set is synthetic (its README.txt says so): it exercises the code paths, it is not the real data.
Further data sets are added as entries of ``SUBCOMMANDS``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.data.deeplesion import write_deeplesion_demo  # noqa: E402
from monai_acs.data.lits import write_lits_demo  # noqa: E402


def lits(
    out: str,
    n_cases: int = 4,
    seed: int = 0,
    shape_xyz: tuple[int, int, int] = (96, 96, 40),
    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5),
) -> str:
    """LiTS layout: volume-N.nii + segmentation-N.nii synthetic abdominal CT phantoms (0 bg, 1 liver, 2 tumour)."""
    cases = write_lits_demo(out, n_cases=n_cases, seed=seed, shape_xyz=shape_xyz, spacing=spacing)
    return f"wrote {len(cases)} synthetic LiTS-layout cases to {Path(out).resolve()}"


def deeplesion(out: str, n_studies: int = 6, seed: int = 0, image_size: int = 512, context_mm: float = 16.0) -> str:
    """DeepLesion layout: Images_png/<patient>_<study>_<series>/<slice>.png (HU + 32768) and DL_info.csv."""
    records = write_deeplesion_demo(out, n_studies=n_studies, seed=seed, image_size=image_size, context_mm=context_mm)
    n_lesions = sum(len(r["boxes"]) for r in records)
    return (
        f"wrote {n_studies} synthetic DeepLesion-layout studies ({len(records)} key slices, {n_lesions} lesions) "
        f"to {Path(out).resolve()}"
    )


SUBCOMMANDS = {"lits": lits, "deeplesion": deeplesion}


def main() -> None:
    fire.Fire(SUBCOMMANDS)


if __name__ == "__main__":
    main()
