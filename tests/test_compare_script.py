"""scripts/compare.py: the table it writes (labels, stand-in pretraining note, failed rows) from given results."""

from __future__ import annotations

import csv

from script_helpers import load_script


def test_table_labels_stand_in_pretraining_and_failed_rows(tmp_path):
    compare = load_script("compare")
    assert compare._label("acs", True) == "ACS p." and compare._label("i3d", False) == "3D r."
    assert compare._label("i3d", True, "p.*") == "3D p.* (I3D)" and compare._label("conv2p5d", True, "p.*") == "2.5D p.*"
    rows = [
        {"model": "ACS p.*", "operator": "acs", "pretrained": True, "dice": 0.5, "dice_per_case": 0.25, "miou": 0.125,
         "size_mb": 1.5, "parameters": 375000, "seconds": 61.0},
        {"model": "3D p.* (I3D)", "operator": "i3d", "pretrained": True, "seconds": 3.0, "failed": "OSError: no file"},
    ]
    compare.write_outputs(rows, tmp_path, "lidc_seg_acs: measured on annotation-derived data", "segmentation",
                          "\\* p.* = a stand-in")
    text = (tmp_path / "results.md").read_text().splitlines()
    assert text[0] == "## lidc_seg_acs: measured on annotation-derived data"
    assert "| ACS p.* | 50.0 | 25.0 | 12.5 | 1.50 MB | 61 s |" in text
    assert any(line.startswith("| 3D p.* (I3D) | not run: OSError: no file") for line in text)
    assert text[-1] == "\\* p.* = a stand-in"
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == ["ACS p.*", "3D p.* (I3D)"] and table[1]["failed"] == "OSError: no file"
    assert (tmp_path / "results.png").stat().st_size > 1000
