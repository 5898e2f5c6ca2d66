"""Runs never lose data: run folder ownership, resume settings, ``latest``, atomic publishing, orphan cleanup, RNG state.

Each refusal is checked for its message and for leaving every other run's files as they were
(:func:`_helpers.file_states`). The module functions are tested directly (``monai_acs.workflows.runs``); the command
line through the PoC bundle on tiny data, in this process where a command only has to fail
(:func:`_helpers.bundle_in_process`) and as real subprocesses where a process must be killed or two must race.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import POC, TINY_TRAIN, bundle_command, bundle_in_process, cli_args, file_states, messages

from monai_acs.errors import BundleError, RunFolderError
from monai_acs.workflows.checkpoints import (
    capture_rng_state,
    clean_orphans,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_atomic,
)
from monai_acs.workflows.publish import publish_model
from monai_acs.workflows.runs import RUN_INFO, default_run_name, prepare_run_dir, record_resume, release_folder

TRAIN = POC / "configs" / "train.json"
SETTINGS = {"operator": "acs", "pretrained": True, "seed": 0, "dataset_dir": "/data/poc"}

# A child process that owns a run folder, leaves a half-written checkpoint behind and waits to be killed.
_OWNER = """
import os, sys, tempfile, time, torch
from monai_acs.workflows.runs import prepare_run_dir, save_atomic
run = prepare_run_dir(sys.argv[1], "r", settings={"operator": "acs", "pretrained": True, "seed": 0,
                                                  "dataset_dir": "/data/poc"})
save_atomic({"network": {}, "epoch": 1}, os.path.join(run, "checkpoint_latest.pt"))
fd, tmp = tempfile.mkstemp(prefix=f".checkpoint_latest.pt.pid{os.getpid()}.", suffix=".tmp", dir=run)
os.write(fd, b"half a checkpoint")
print("ready", flush=True)
time.sleep(600)
"""


def _other_run(runs_dir: Path) -> Path:
    """A finished run beside the one under test, whose files must never change."""
    other = Path(prepare_run_dir(runs_dir, "other", settings={**SETTINGS, "operator": "conv2p5d"}))
    save_atomic({"network": {}, "epoch": 3}, other / "checkpoint_latest.pt")
    save_atomic("{}\n", other / "results.json")
    release_folder(other)
    return other


# -- run folders: lock, collisions, kill ---------------------------------------------------------------------------


def test_killed_owner_frees_its_folder_and_its_half_written_file_is_removed(tmp_path):
    _other_run(tmp_path)
    before = file_states(tmp_path / "other")
    child = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RunFolderError, match=rf"{tmp_path / 'r'} is in use by pid {child.pid} on .*another "
                                                 r"--run_name"):
            prepare_run_dir(tmp_path, "r", resume=True, settings=SETTINGS)
        orphans = list((tmp_path / "r").glob(".*.tmp"))
        assert len(orphans) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the operating system dropped the dead owner's lock: the run resumes, and the half-written file is gone
    run = Path(prepare_run_dir(tmp_path, "r", resume=True, settings=SETTINGS))
    assert not orphans[0].exists() and (run / "checkpoint_latest.pt").is_file()
    # the resume is recorded only once the checkpoint has loaded (RunCheckpointer calls record_resume)
    assert "resumed" not in json.loads((run / RUN_INFO).read_text())
    record_resume(run)
    release_folder(run)
    info = json.loads((run / RUN_INFO).read_text())
    assert info["pid"] == child.pid and len(info["resumed"]) == 1 and info["resumed"][0]["pid"] == os.getpid()
    assert file_states(tmp_path / "other") == before


def test_same_name_twice_refuses_and_default_names_never_collide(tmp_path):
    other = _other_run(tmp_path)
    before = file_states(other)
    with pytest.raises(RunFolderError, match="already holds checkpoints of another run; pass --resume true"):
        prepare_run_dir(tmp_path, "other", settings=SETTINGS)
    names = {default_run_name("acs", "p") for _ in range(200)}
    assert len(names) == 200, "two runs started in the same second must get different names"
    assert file_states(other) == before


def test_two_commands_with_one_run_name_at_once(tmp_path, poc_data, command_pool):
    """Two real trainings with the same --run_name started together: one trains, the other is refused."""
    dirs = {"dataset_dir": poc_data, "models_dir": tmp_path / "models", "runs_dir": tmp_path / "runs"}
    args = ["run", "training", "--config_file", TRAIN, *cli_args({**TINY_TRAIN, "pretrained": False}),
            *cli_args(dirs), "--run_name", "same", "--publish", "false"]
    first = command_pool.submit("same_a", lambda: bundle_command(*args))
    second = command_pool.submit("same_b", lambda: bundle_command(*args))
    results = [first.result(), second.result()]
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.tail(5) for r in results]
    refused = next(r for r in results if r.returncode != 0)
    assert ("is in use by pid" in refused.output or "already holds" in refused.output), refused.tail(20)
    last = refused.output.strip().splitlines()[-1]
    assert last.startswith("error: RunFolderError: ") and str(tmp_path / "runs" / "same") in last, last
    assert "Failed to evaluate" in refused.output  # MONAI's wrapper and the full traceback are still printed above
    winner = torch.load(tmp_path / "runs" / "same" / "checkpoint_latest.pt", weights_only=True)
    assert winner["epoch"] == TINY_TRAIN["epochs"]
    assert json.loads((tmp_path / "runs" / "same" / "results.json").read_text())["cases"] == TINY_TRAIN["n_3d_val"]


# -- resume: settings, latest ---------------------------------------------------------------------------------------


def test_resume_refuses_other_settings_and_latest_means_last_started(tmp_path):
    other = _other_run(tmp_path)  # conv2p5d, has a checkpoint
    before = file_states(other)
    with pytest.raises(BundleError, match=r"the run in .*other was made with operator='conv2p5d' \(this command: "
                                          r"'acs'\); resume it with its own settings"):
        prepare_run_dir(tmp_path, "other", resume=True, settings=SETTINGS)
    # latest with acs settings: the conv2p5d run is never picked, even though it is the only one with a checkpoint
    with pytest.raises(BundleError, match=r"no run under .* was started with this command's settings \(runs there: "
                                          r"other \(operator='conv2p5d'"):
        prepare_run_dir(tmp_path, "latest", resume=True, settings=SETTINGS)
    # an acs run with a checkpoint, then a newer acs run that crashed before its first checkpoint
    done = Path(prepare_run_dir(tmp_path, "acs_done", settings=SETTINGS))
    save_atomic({"network": {}, "epoch": 1}, done / "checkpoint_latest.pt")
    release_folder(done)
    crashed = Path(prepare_run_dir(tmp_path, "acs_crashed", settings={**SETTINGS, "pretrained": "true"}))
    release_folder(crashed)
    with pytest.raises(BundleError, match=rf"the run last started with these settings, {crashed}, has no "
                                          r"checkpoint_latest.pt .* nothing to resume"):
        prepare_run_dir(tmp_path, "latest", resume=True, settings={**SETTINGS, "pretrained": "True"})
    assert file_states(other) == before and file_states(done)["checkpoint_latest.pt"]


def test_resume_in_a_bundle_refuses_another_operator_before_any_work(tmp_path, poc_trained):
    poc_trained.result()
    runs_dir = tmp_path / "runs"
    shutil.copytree(poc_trained.run_dir, runs_dir / "base")
    before = file_states(tmp_path)
    dirs = {**poc_trained.dirs(), "runs_dir": runs_dir, "models_dir": tmp_path / "models"}
    for name in ("base", "latest"):
        with pytest.raises(Exception) as info:
            bundle_in_process("run", "training", "--config_file", TRAIN, *cli_args(TINY_TRAIN), *cli_args(dirs),
                              "--resume", "true", "--run_name", name, "--operator", "conv2p5d")
        text = messages(info.value)
        assert "operator='acs' (this command: 'conv2p5d')" in text, text
    assert file_states(tmp_path) == before, "a refused resume changed files"
    assert not (tmp_path / "models").exists(), "the refusal came after pretraining"


def test_checkpoint_records_settings_and_rng(poc_trained):
    poc_trained.result()
    latest = torch.load(poc_trained.run_dir / "checkpoint_latest.pt", weights_only=True)
    assert latest["run_settings"]["operator"] == "acs" and latest["run_settings"]["channels"] == TINY_TRAIN["channels"]
    assert {"python", "numpy", "torch", "transforms"} <= set(latest["rng"])
    assert len(latest["rng"]["transforms"]) == 5, "the Compose, its 3 flips and its rotation (train.json)"
    info = json.loads((poc_trained.run_dir / RUN_INFO).read_text())
    assert info["settings"] == latest["run_settings"]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(2).tolist(), random.random())
    assert restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]) is True
    b = (torch.rand(3), np.random.rand(2).tolist(), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, poc_data, command_pool):
    """1 epoch then resume to 2 == 2 epochs straight (CPU): network, optimizer and best metric; without the saved
    generator states the augmentations and batch order of epoch 2 differ (checked by hand: the weights differ)."""
    data = tmp_path / "data"
    shutil.copytree(poc_data, data)
    base = ["run", "training", "--config_file", TRAIN, "--dataset_dir", data, "--models_dir", tmp_path / "models",
            "--runs_dir", tmp_path / "runs", "--publish", "false"]
    tiny = {**TINY_TRAIN, "pretrained": False}
    straight = command_pool.submit("rng_straight", lambda: bundle_command(
        *base, *cli_args({**tiny, "epochs": 2}), "--run_name", "straight"))
    first = command_pool.submit("rng_first", lambda: bundle_command(
        *base, *cli_args({**tiny, "epochs": 1}), "--run_name", "resumed"))
    resumed = command_pool.submit("rng_resumed", lambda: bundle_command(
        *base, *cli_args({**tiny, "epochs": 2}), "--run_name", "resumed", "--resume", "true"), after=["rng_first"])
    straight.result().check()
    first.result().check()
    assert "resumed from" in resumed.result().check().output
    a = torch.load(tmp_path / "runs" / "straight" / "checkpoint_latest.pt", weights_only=True)
    b = torch.load(tmp_path / "runs" / "resumed" / "checkpoint_latest.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["network"]:
        assert torch.equal(a["network"][key], b["network"][key]), key
    assert a["best_metric"] == b["best_metric"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


# -- publish -----------------------------------------------------------------------------------------------------


def test_publish_is_atomic_and_keeps_bounded_backups(tmp_path):
    models = tmp_path / "models"
    for i in range(4):
        save_atomic({"network": {"w": torch.full((2,), float(i))}, "epoch": i}, tmp_path / f"best{i}.pt")
        publish_model(tmp_path / f"best{i}.pt", models, info={"i": i}, keep_backups=2)
        time.sleep(0.01)
    assert torch.load(models / "model.pt", weights_only=True)["w"][0] == 3
    backups = sorted(p.name for p in models.glob("model_*.pt"))
    assert len(backups) == 2, backups
    kept = sorted(float(torch.load(models / b, weights_only=True)["w"][0]) for b in backups)
    assert kept == [1.0, 2.0] and json.loads((models / "model.json").read_text()) == {"i": 3}
    # a corrupt best checkpoint: refused naming it, the published model and its backups untouched, no temporary file
    before = file_states(models)
    corrupt = tmp_path / "model_best.pt"
    corrupt.write_bytes((tmp_path / "best3.pt").read_bytes()[:100])
    with pytest.raises(BundleError, match=rf"cannot read best checkpoint {corrupt}: .*corrupt or truncated"):
        publish_model(corrupt, models)
    assert file_states(models) == before and not list(models.glob(".*.tmp"))


def test_orphans_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True)
    pid = int(dead.stdout)
    orphan = tmp_path / f".checkpoint_latest.pt.pid{pid}.abc.tmp"
    partial = tmp_path / f".poc.partial-pid{pid}-xyz"
    mine = tmp_path / f".model.pt.pid{os.getpid()}.def.tmp"
    for f in (orphan, mine):
        f.write_bytes(b"x")
    partial.mkdir()
    removed = clean_orphans(tmp_path)
    assert sorted(removed) == sorted([str(orphan), str(partial)])
    assert mine.exists() and not orphan.exists() and not partial.exists()


# -- checkpoints that cannot be read or do not fit ------------------------------------------------------------------


def test_corrupt_or_unsafe_or_mismatched_checkpoint_names_the_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"network": torch.nn.Linear(2, 3).state_dict(), "run_settings": {"operator": "p3d"}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BundleError, match=rf"cannot read checkpoint {truncated}: .*corrupt or truncated"):
        load_checkpoint(truncated)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"network": {}, "obj": argparse.Namespace(a=1)}, unsafe)  # not a weights-only file
    with pytest.raises(BundleError) as info:
        load_checkpoint(unsafe, what="model")
    assert f"model {unsafe} holds Python objects" in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(BundleError, match=rf"{good} does not fit this Linear .* it was made with operator='p3d'"):
        load_weights(torch.nn.Linear(2, 4), load_checkpoint(good), good)


def test_resume_from_a_corrupt_checkpoint_names_it(tmp_path, poc_trained):
    poc_trained.result()
    runs_dir = tmp_path / "runs"
    shutil.copytree(poc_trained.run_dir, runs_dir / "base")
    latest = runs_dir / "base" / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "training", "--config_file", TRAIN, *cli_args(TINY_TRAIN),
                          *cli_args({**poc_trained.dirs(), "runs_dir": runs_dir, "models_dir": poc_trained.models}),
                          "--resume", "true", "--run_name", "base", "--epochs", 2)
    text = messages(info.value)
    assert f"cannot read checkpoint to resume {latest}" in text and "corrupt or truncated" in text, text


def test_inference_with_a_checkpoint_of_another_network_says_what_it_was_made_with(tmp_path, poc_trained):
    poc_trained.result()
    models = tmp_path / "models"
    shutil.copytree(poc_trained.models, models)
    with pytest.raises(Exception) as info:
        bundle_in_process("run", "--config_file", POC / "configs" / "inference.json", "--channels", "[4,16]",
                          "--strides", "[2]", "--size", 16, "--roi_size", "[16,16,16]", "--models_dir", models,
                          "--input_dir", poc_trained.data / "imagesVal", "--output_dir", tmp_path / "pred")
    text = messages(info.value)
    assert f"{models / 'model.pt'} does not fit this UNet" in text and "channels=[4, 8]" in text, text
    assert not (tmp_path / "pred").exists() or not list((tmp_path / "pred").glob("*.nii.gz"))


# -- every bundle records its settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("bundle", ["synthetic_poc_acs", "lits_acs", "lidc_cls_acs", "lidc_seg_acs", "deeplesion_a3d"])
def test_every_bundle_records_and_checks_its_run_settings(bundle):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(POC.parent / bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(POC.parent / bundle)
    settings = parser.get_parsed_content("run_settings")
    assert {"operator", "seed", "dataset_dir"} <= set(settings) and "epochs" not in settings
    run = parser["training_run"]
    assert run["_target_"] == "monai_acs.workflows.Run" and run["settings"] == "@run_settings"
    assert (run["epochs"], run["val_interval"], run["resume"]) == ("@epochs", "@val_interval", "@resume")
    assert parser["run_dir"] == "$@training_run.dir"
    checkpointers = [h for h in parser["train"]["handlers"] if h["_target_"] == "monai_acs.workflows.RunCheckpointer"]
    assert [h["run"] for h in checkpointers] == ["@training_run"]
    assert parser["initialize"][0] == "$monai_acs.errors.check_command_line()"
    assert parser["training"][-1] == "$@training_run.publish(@report)" and "publish" in parser.get()


def test_training_killed_mid_run_resumes_with_latest(tmp_path, poc_data):
    """kill -9 during training: the folder is not stuck, ``latest`` is that run, and it resumes from its last epoch."""
    dirs = {"dataset_dir": poc_data, "models_dir": tmp_path / "models", "runs_dir": tmp_path / "runs"}
    tiny = {**TINY_TRAIN, "pretrained": False}
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN),
            *cli_args({**tiny, "epochs": 500}), *cli_args(dirs), "--publish", "false"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    try:
        while not list((tmp_path / "runs").glob("*/checkpoint_latest.pt")):
            assert child.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (run,) = list((tmp_path / "runs").iterdir())
    epoch = torch.load(run / "checkpoint_latest.pt", weights_only=True)["epoch"]
    result = bundle_command("run", "training", "--config_file", TRAIN, *cli_args({**tiny, "epochs": epoch + 1}),
                            *cli_args(dirs), "--publish", "false", "--resume", "true", "--run_name", "latest").check()
    assert f"resumed from {run / 'checkpoint_latest.pt'} at epoch {epoch}" in result.output, result.tail()
    assert torch.load(run / "checkpoint_latest.pt", weights_only=True)["epoch"] == epoch + 1
    assert not list(run.glob(".*.tmp")) and len(list((tmp_path / "runs").iterdir())) == 1


def test_data_generation_removes_a_killed_generations_partial_folder(tmp_path):
    from monai_acs.data import write_dataset

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    partial = tmp_path / f".poc.partial-pid{int(dead.stdout)}-abc"
    (partial / "imagesTr").mkdir(parents=True)
    write_dataset(tmp_path / "poc", n_2d=2, n_3d_train=1, n_3d_val=1, seed=0, size=16)
    assert not partial.exists() and (tmp_path / "poc" / "datalist.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["poc"]


def test_a_run_that_stopped_before_training_does_not_block_its_name(tmp_path):
    first = Path(prepare_run_dir(tmp_path, "named", settings=SETTINGS))  # then failed on its data: only run.json
    release_folder(first)
    again = Path(prepare_run_dir(tmp_path, "named", settings=SETTINGS))
    release_folder(again)
    assert again == first and json.loads((again / RUN_INFO).read_text())["pid"] == os.getpid()
    save_atomic("x", again / "events.out.tfevents.1")
    with pytest.raises(RunFolderError, match=r"already holds another run's files \(events.out.tfevents.1, run.json\)"):
        prepare_run_dir(tmp_path, "named", settings=SETTINGS)


def test_saved_files_get_the_permissions_a_plain_open_gives(tmp_path):
    # mkstemp's temporary files are 0600: a published model must stay readable by whoever could read a plain file
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    saved = save_atomic({"network": {}}, tmp_path / "model.pt")
    assert saved.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    published = Path(publish_model(saved, tmp_path / "models"))  # the model inference loads and bundles ship
    assert published.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_resume_reads_its_checkpoint_once_and_is_recorded_after_it_loaded(tmp_path, monkeypatch):
    from ignite.engine import Engine

    import monai_acs.workflows.checkpoints as checkpoints
    import monai_acs.workflows.handlers as handlers
    from monai_acs.workflows import Run, RunCheckpointer

    network = torch.nn.Linear(2, 3)
    first = Path(prepare_run_dir(tmp_path, "r", settings=SETTINGS))
    save_atomic({"network": network.state_dict(), "epoch": 1, "iteration": 1, "best_metric": 0.5, "best_epoch": 1,
                 "run_settings": SETTINGS}, first / "checkpoint_latest.pt")
    release_folder(first)
    reads = []
    real_load = checkpoints.load_checkpoint
    monkeypatch.setattr("monai_acs.workflows.runs.load_checkpoint",
                        lambda *a, **k: reads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(handlers, "load_checkpoint", lambda *a, **k: pytest.fail("RunCheckpointer read the file again"))
    run = Run(POC, runs_dir=tmp_path, name="r", resume=True, settings=SETTINGS)
    assert run.start() == str(first) and len(reads) == 1
    assert "resumed" not in json.loads((first / RUN_INFO).read_text()), "recorded before the checkpoint loaded"
    trainer = Engine(lambda engine, batch: None)
    RunCheckpointer(run=run, network=torch.nn.Linear(2, 3)).attach(trainer)
    trainer.run([0], max_epochs=2)
    release_folder(first)
    assert trainer.state.epoch == 2 and len(reads) == 1
    assert len(json.loads((first / RUN_INFO).read_text())["resumed"]) == 1

    # a truncated checkpoint is refused by start(), naming it, and the resume is not recorded
    latest = first / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    before = (first / RUN_INFO).read_bytes()
    with pytest.raises(BundleError, match=rf"cannot read checkpoint to resume {latest}: .*corrupt or truncated"):
        Run(POC, runs_dir=tmp_path, name="r", resume=True, settings=SETTINGS).start()
    assert (first / RUN_INFO).read_bytes() == before
