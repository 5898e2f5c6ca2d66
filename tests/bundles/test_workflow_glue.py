"""The bundle glue of ``monai_acs.workflows`` in isolation: metrics against ``monai_acs.metrics``, the report handler's
best-validation bookkeeping (resume included), the skipping dataset, build-time paths and writers that write nothing
until used, and the one NIfTI writer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import POC
from ignite.engine import Engine

from monai_acs import metrics as reference
from monai_acs.data.nifti import save_nifti
from monai_acs.errors import BundleError
from monai_acs.workflows.datasets import InputsReport, SkipFailedDataset
from monai_acs.workflows.engines import LazySummaryWriter
from monai_acs.workflows.metrics import BinaryClassificationMetrics, SegmentationMetrics
from monai_acs.workflows.report import BEST_VALIDATION, MetricsReport
from monai_acs.workflows.runs import Run

CLASSES = ["background", "a", "b"]


def _evaluate(metric, outputs, name="val_metric") -> dict:
    """Run ``metric`` attached to a bare ignite engine over ``outputs`` (one engine output per iteration)."""
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, name)
    engine.run(outputs, max_epochs=1)
    return dict(engine.state.metrics)


def test_segmentation_metrics_equal_the_package_metrics():
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 3, (6, 5, 4)) for _ in range(4)]
    labels = [rng.integers(0, 3, (6, 5, 4)) for _ in range(4)]
    labels[1][labels[1] == 2] = 0  # class b absent from one case
    onehot = lambda x: torch.nn.functional.one_hot(torch.as_tensor(x), 3).permute(3, 0, 1, 2).float()  # noqa: E731
    outputs = [[{"pred": onehot(p), "label": torch.as_tensor(y)[None]}] for p, y in zip(preds, labels)]
    got = _evaluate(SegmentationMetrics(CLASSES), outputs)
    dice_g = reference.dice_global(preds, labels, num_classes=3)
    dice_c = reference.dice_per_case(preds, labels, num_classes=3)
    iou = reference.iou(preds, labels, num_classes=3)
    for i, name in enumerate(CLASSES[1:], start=1):
        assert got[f"val_metric/dice_global/{name}"] == pytest.approx(dice_g[i])
        assert got[f"val_metric/dice_per_case/{name}"] == pytest.approx(dice_c[i])
        assert got[f"val_metric/iou/{name}"] == pytest.approx(iou[i])
    assert got["val_metric"] == pytest.approx(np.mean(dice_g[1:])) == got["val_metric/dice_global"]
    assert got["val_metric/miou"] == pytest.approx(np.mean(iou[1:])) and got["val_metric/cases"] == 4


def test_binary_classification_metrics_auc_and_one_class():
    probs, labels = [0.9, 0.2, 0.6, 0.4, 0.7], [1, 0, 0, 1, 1]
    outputs = [[{"pred": torch.tensor([p]), "label": torch.tensor([float(y)])}] for p, y in zip(probs, labels)]
    got = _evaluate(BinaryClassificationMetrics(), outputs, "val_auc")
    assert got["val_auc"] == pytest.approx(reference.auc(np.array(probs), np.array(labels)))
    assert got["val_auc/accuracy"] == pytest.approx(0.6)
    assert (got["val_auc/positives"], got["val_auc/negatives"]) == (3, 2)
    one_class = _evaluate(BinaryClassificationMetrics(), outputs[:1], "val_auc")
    assert math.isnan(one_class["val_auc"])


def _evaluation(report: MetricsReport, key: float, dice: float, epoch: int) -> None:
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    engine.state.metrics = {
        "val_key": key, "val_dice": dice, "val_dice/dice_global": dice, "val_dice/dice_per_case": dice,
        "val_dice/miou": dice / 2, "val_dice/cases": 3, "val_dice/dice_global/a": dice,
        "val_dice/dice_per_case/a": dice,
        "val_dice/iou/a": dice / 2,
    }
    report._evaluated(engine)


def test_metrics_report_keeps_the_best_validation_across_a_resume(tmp_path, capsys):
    make = lambda: MetricsReport(str(tmp_path), "segmentation", "val_dice", "title", ["background", "a"],  # noqa: E731
                                 extra={"operator": "acs"}, key_metric="val_key")
    report = make()
    _evaluation(report, key=0.3, dice=0.30, epoch=1)
    _evaluation(report, key=0.5, dice=0.55, epoch=2)
    _evaluation(report, key=0.4, dice=0.45, epoch=3)
    assert json.loads((tmp_path / BEST_VALIDATION).read_text())["epoch"] == 2
    resumed = make()  # a resumed run: a new handler, the best so far read back from the run folder
    _evaluation(resumed, key=0.45, dice=0.48, epoch=4)
    written = resumed.write_best()
    results = json.loads((tmp_path / "results.json").read_text())
    assert written["best_epoch"] == results["best_epoch"] == 2 and results["operator"] == "acs"
    assert results["classes"]["a"]["dice_global"] == pytest.approx(0.55) and results["cases"] == 3
    assert "| a | 55.0 | 55.0 | 27.5 |" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="without a validation"):
        MetricsReport(str(tmp_path / "empty"), "segmentation", "val_dice", "t", key_metric="val_key").write_best()


def test_skip_failed_dataset_reports_and_refuses_all_bad(tmp_path, capsys):
    def transform(item):
        if item["image"].startswith("bad"):
            raise ValueError(f"cannot read {item['image']}")
        return item

    dataset = SkipFailedDataset([{"image": "good1"}, {"image": "bad1"}, {"image": "good2"}], transform)
    assert [x["image"] for x in dataset] == ["good1", "good2"]
    assert dataset.statuses[1] == ("bad1", "error: ValueError: cannot read bad1")
    engine = Engine(lambda e, b: None)
    InputsReport(dataset, tmp_path / "inputs.csv").attach(engine)
    engine.run([0], max_epochs=1)
    assert (tmp_path / "inputs.csv").read_text().splitlines() == [
        "input,status", "good1,ok", "bad1,error: ValueError: cannot read bad1", "good2,ok"]
    assert "2 of 3 inputs pass the checks; 1 skipped" in capsys.readouterr().out
    with pytest.raises(BundleError, match="every input failed"):
        list(SkipFailedDataset([{"image": "bad"}], transform))
    with pytest.raises(FileNotFoundError):
        list(SkipFailedDataset([], transform))


def test_build_time_paths_and_writers_write_nothing(tmp_path):
    run = Run(POC, runs_dir=tmp_path / "runs", models_dir=tmp_path / "models", tags=["acs", "p"], settings={"seed": 0})
    assert Path(run.dir).parent == tmp_path / "runs" and Path(run.dir).name.startswith("acs_p_")
    assert run.dir == run.dir  # named once
    assert Run(POC, runs_dir=tmp_path / "runs", name="mine").dir == str(tmp_path / "runs" / "mine")
    with pytest.raises(BundleError, match=rf"bundle_root {tmp_path} is not a bundle folder .* pass --bundle_root"):
        Run(tmp_path)
    with pytest.raises(BundleError, match="--val_interval 5 is larger than --epochs 2"):
        Run(POC, epochs=2, val_interval=5)
    writer = LazySummaryWriter(tmp_path / "tb")
    writer.close()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists()
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_save_nifti_keeps_every_axis_and_the_affine(tmp_path):
    affine = np.array([[-0.7, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    out = save_nifti(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), affine, tmp_path / "one_slice.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (3, 4, 1) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.get_qform(), affine)
    assert not list(tmp_path.glob(".*tmp*"))
