"""``--tracking mlflow`` for every bundle and run id: train and inference of the five bundles on tiny demo data, with
MLflow's SQLite tracking store in a temporary folder (no server), through MONAI's own ``MLFlowHandler`` wiring
(``monai.bundle`` patches the trainer, validator and evaluator handlers). The PoC runs through the real
``python -m monai.bundle`` command line in a subprocess; the others run the same command line in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import REPO, bundle_command, bundle_in_process, cli_args
from script_helpers import load_script

mlflow = pytest.importorskip("mlflow", reason="optional dependency: pip install -r requirements.txt")

_LIDC = {"width": 8, "roi_size": 16, "spacing_mm": 2}
_DEEPLESION = {
    "image_size": 64, "block_config": [2, 2, 2], "growth_rate": 8, "num_init_features": 16, "feature_channels": 16,
    "representation_size": 32, "mask_channels": 8, "anchor_sizes": [[8, 12, 16], [24, 32, 48], [64, 96, 128]],
}
#: Settings shared by train.json and inference.json of each bundle (tiny networks, pretrained weights off in train).
NET = {
    "synthetic_poc_acs": {"channels": [4, 8], "strides": [2], "size": 16},
    "lidc_seg_acs": _LIDC,
    "lidc_cls_acs": _LIDC,
    "lits_acs": {"operator": "conv2p5d", "roi_size": [24, 48, 48]},
    "deeplesion_a3d": _DEEPLESION,
}
TRAIN = {
    "synthetic_poc_acs": {"n_2d": 32, "n_3d_train": 2, "n_3d_val": 2, "epochs": 1, "val_interval": 1,
                          "batch_size": 2, "pretrained": False},
    "lidc_seg_acs": {"max_shift": 2, "epochs": 1, "lr_milestones": [1], "batch_size": 4, "val_batch_size": 4,
                     "pretrained": False},
    "lidc_cls_acs": {"max_shift": 2, "epochs": 1, "lr_milestones": [1], "batch_size": 4, "val_batch_size": 4,
                     "pretrained": False},
    "lits_acs": {"num_workers": 0, "epochs": 1, "val_interval": 1, "batch_size": 2, "num_samples": 2,
                 "crop_size": [16, 32, 32], "pretraining": "none"},
    "deeplesion_a3d": {"epochs": 1, "batch_size": 2, "pretrained": False, "warmup_iters": 2, "val_split": 2},
}
DATA = {"synthetic_poc_acs": "poc", "lidc_seg_acs": "lidc", "lidc_cls_acs": "lidc", "lits_acs": "lits",
        "deeplesion_a3d": "deeplesion"}
DEMO_ARGS = {
    "poc": ["--n_2d", "32", "--n_3d_train", "2", "--n_3d_val", "2", "--size", "16"],
    "lidc": ["--limit", "8"],
    "lits": ["--n_cases", "2", "--shape_xyz", "48,48,24"],
    "deeplesion": ["--n_studies", "3", "--image_size", "64"],
}
#: A metric each training run must have sent to MLflow: the loss and the validation's key metric.
TRAIN_METRICS = {
    "synthetic_poc_acs": {"train_loss", "val_mean_dice"},
    "lidc_seg_acs": {"train_loss"},
    "lidc_cls_acs": {"train_loss"},
    "lits_acs": {"train_loss", "val_mean_dice"},
    "deeplesion_a3d": {"train_loss"},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    import fire

    script = load_script("make_demo_data")
    root = tmp_path_factory.mktemp("tracking_demo")
    for kind, args in DEMO_ARGS.items():
        fire.Fire(script.SUBCOMMANDS, command=[kind, "--out", str(root / kind), *args])
    return {kind: root / kind for kind in DEMO_ARGS}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow SQLite store for the module (creating its tables is the slow part)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlruns.db")


def _infer_inputs(bundle: str, data: Path) -> dict:
    if bundle == "synthetic_poc_acs":
        return {"dataset_dir": data / "imagesVal"}
    if bundle.startswith("lidc"):
        return {"image": data / "inference" / "ct.nii.gz", "nodules_csv": data / "inference" / "centres.csv"}
    if bundle == "lits_acs":
        return {"input": data / "volume-0.nii"}
    return {"input_path": sorted((data / "Images_png").iterdir())[0]}


def _runs(store: str, experiment: str) -> list:
    client = mlflow.MlflowClient(tracking_uri=store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {store}"
    return client.search_runs([found.experiment_id])


@pytest.mark.parametrize("bundle", list(NET))
def test_mlflow_records_training_and_inference(bundle, demo, store, tmp_path):
    configs = REPO / "bundles" / bundle / "configs"
    data = demo[DATA[bundle]]
    models = tmp_path / "models"
    train = ["run", "training", "--config_file", configs / "train.json", *cli_args({**NET[bundle], **TRAIN[bundle]}),
             "--dataset_dir", data, "--models_dir", models, "--runs_dir", tmp_path / "runs",
             "--tracking", "mlflow", "--tracking_uri", store, "--experiment_name", f"{bundle}_train",
             "--output_dir", tmp_path / "tracking"]
    infer = ["run", "--config_file", configs / "inference.json",
             *cli_args({**NET[bundle], **_infer_inputs(bundle, data)}), "--models_dir", models, "--output_dir", tmp_path / "predictions",
             "--tracking", "mlflow", "--tracking_uri", store, "--experiment_name", f"{bundle}_infer"]
    if bundle == "synthetic_poc_acs":  # the real command line, in a subprocess
        bundle_command(*train).check()
        bundle_command(*infer).check()
    else:
        bundle_in_process(*train)
        bundle_in_process(*infer)

    (run,) = _runs(store, f"{bundle}_train")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert TRAIN_METRICS[bundle] <= set(metrics), sorted(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert run.data.params.get("max_epochs") == "1", run.data.params
    (run,) = _runs(store, f"{bundle}_infer")
    assert run.info.status == "FINISHED" and "max_epochs" in run.data.params


def test_command_line_check_knows_the_tracking_keys():
    from monai_acs.errors import BundleError, check_command_line

    train = str(REPO / "bundles" / "synthetic_poc_acs" / "configs" / "train.json")
    base = ["/venv/monai/bundle/__main__.py", "run", "--config_file", train, "--tracking_uri", "sqlite:////tmp/x.db"]
    check_command_line([*base, "--tracking", "mlflow", "--experiment_name", "e"])  # the keys --tracking adds
    with pytest.raises(BundleError, match="unknown setting --tracking_uri"):
        check_command_line(base)  # without --tracking the key is a typo
