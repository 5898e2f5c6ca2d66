"""multi_gpu_train.json of the PoC bundle: 2 ranks on CPU (gloo) with torchrun, tiny settings."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from _helpers import POC, REPO, TINY_TRAIN, cli_args, config_list, run_command

CONFIGS = POC / "configs"
MULTI = config_list(CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json")
# 4 training volumes, batch 1: a DistributedSampler gives each of the 2 ranks 2 of them, i.e. 2 iterations per epoch
DDP_TINY = {**TINY_TRAIN, "n_3d_train": 4, "batch_size": 1, "epochs": 2}
ALL_RANKS = {"LrScheduleHandler", "ValidationHandler"}  # handlers every rank needs (validation metrics all-gather)
RANK_AWARE = {"RunCheckpointer", "LitsDiceReport"}  # every rank loads on resume / reads gathered metrics; rank 0 writes


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "monai.bundle", *map(str, args)]


def load_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("network", state)


def assert_same_weights(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("bundle", ["synthetic_poc_acs", "lidc_seg_acs", "lidc_cls_acs", "lits_acs", "deeplesion_a3d"])
def test_rank0_only_handlers_are_flagged_not_indexed(bundle):
    """Every handler that writes is switched off on ranks > 0 by its own flag (``"_disabled_": "@is_not_rank0"``),
    or writes on rank 0 only by itself (RunCheckpointer, the report); multi_gpu_train.json names no handler index."""
    configs = REPO / "bundles" / bundle / "configs"
    train = json.loads((configs / "train.json").read_text())
    multi = json.loads((configs / "multi_gpu_train.json").read_text())
    assert not [k for k in multi if re.search(r"#handlers#\d+", k)], "index-based handler overrides are back"
    assert train["is_not_rank0"] is False and multi["is_not_rank0"] == "$dist.get_rank() > 0"
    for section in ("train", "validate"):
        for handler in train[section]["handlers"]:
            if isinstance(handler, str):  # a reference, e.g. "@report" (MetricsReport writes on rank 0 only)
                continue
            name = handler["_target_"].rsplit(".", 1)[-1]
            if name in ALL_RANKS | RANK_AWARE:
                continue
            assert handler.get("_disabled_") == "@is_not_rank0", f"{bundle} {section}: {name} writes on every rank"


def test_torchrun_two_ranks_train_the_same_model(tmp_path):
    dirs = {"dataset_dir": tmp_path / "data", "models_dir": tmp_path / "models", "runs_dir": tmp_path / "runs"}
    result = run_command(torchrun(
        "run", "training", "--config_file", MULTI, *cli_args(DDP_TINY), *cli_args(dirs),
        "--rank_state_dir", tmp_path / "ranks", "--bundle_root", POC), cwd=tmp_path)
    out = result.check().output

    rank0, rank1 = load_state(tmp_path / "ranks" / "rank0.pt"), load_state(tmp_path / "ranks" / "rank1.pt")
    assert_same_weights(rank0, rank1, "rank 0 and rank 1 ended with different weights")

    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, f"one run folder expected, got {runs}"
    run_dir = runs[0]
    latest = torch.load(run_dir / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == 2
    assert latest["iteration"] == 2 * 2, "each rank should see half of the 4 volumes per epoch (DistributedSampler)"
    assert_same_weights(latest["network"], rank0, "checkpoint_latest.pt is not the trained model")

    # trained: the weights moved away from the converted 2D-pretrained initialisation
    from monai_acs.networks import poc_unet

    pretrained = next((tmp_path / "models").glob("pretrained_2d_unet_*.pt"))
    init = poc_unet("acs", weights=str(pretrained), channels=DDP_TINY["channels"], strides=DDP_TINY["strides"])
    assert any(not torch.equal(rank0[k], v) for k, v in init.state_dict().items()), "the model did not train"

    # only rank 0 wrote: one process's TensorBoard files, one report, the model published without "module."
    pids = {p.name.split(".")[-2] for p in run_dir.glob("events.out.tfevents.*")}
    assert len(pids) == 1, f"TensorBoard files from several processes: {sorted(p.name for p in run_dir.iterdir())}"
    assert {"model_best.pt", "results.json", "feature_mauc.json"} <= {p.name for p in run_dir.iterdir()}
    assert out.count("| **mean (foreground)** |") == 1
    assert not (tmp_path / "eval").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "data", "models", "ranks", "runs"], "something was written into the working folder"
    published = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    init.load_state_dict(published, strict=True)


@pytest.mark.slow
def test_torchrun_resume_loads_checkpoint_on_every_rank(tmp_path, poc_trained):
    """A 1-epoch single-process run resumed with 2 ranks: both ranks start from its checkpoint and stay equal."""
    poc_trained.result()
    shutil.copytree(poc_trained.run_dir, tmp_path / "runs" / "resumed")
    shutil.copytree(poc_trained.models, tmp_path / "models", ignore=shutil.ignore_patterns("model.pt", "model.json"))
    result = run_command(torchrun(
        "run", "training", "--config_file", MULTI, *cli_args({**TINY_TRAIN, "epochs": 2}),
        "--dataset_dir", poc_trained.data, "--models_dir", tmp_path / "models", "--runs_dir", tmp_path / "runs",
        "--resume", "true", "--run_name", "resumed", "--rank_state_dir", tmp_path / "ranks", "--bundle_root", POC),
        cwd=tmp_path)
    out = result.check().output
    assert out.count("resumed from") == 2, "every rank must load checkpoint_latest.pt"
    assert_same_weights(load_state(tmp_path / "ranks" / "rank0.pt"), load_state(tmp_path / "ranks" / "rank1.pt"),
                        "rank 0 and rank 1 ended with different weights")
    latest = torch.load(tmp_path / "runs" / "resumed" / "checkpoint_latest.pt", map_location="cpu", weights_only=True)
    assert latest["epoch"] == 2
