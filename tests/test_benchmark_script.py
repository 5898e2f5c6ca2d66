"""scripts/benchmark.py runs on tiny shapes and writes its JSON and Markdown reports (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from script_helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark")


def _run(bench, tmp_path: Path, **kwargs) -> tuple[dict, str]:
    out = tmp_path / "bench"
    threads = torch.get_num_threads()
    report = bench.main(out=str(out), tiny=True, repeats=1, warmup=0, threads=1, **kwargs)
    result = json.loads(out.with_suffix(".json").read_text())
    markdown = out.with_suffix(".md").read_text()
    assert markdown == report
    assert torch.get_num_threads() == threads, "main() must give the calling process its thread count back"
    return result, markdown


def test_layer_sections_write_expected_rows(bench, tmp_path):
    result, markdown = _run(
        bench, tmp_path, sections="layers,views,breakdown,memory,a3d", shapes="a", formats="channels_last_3d",
        script=True,
    )
    meta = result["meta"]
    assert meta["tiny"] and meta["threads"] == 1 and len(meta["loadavg_before"]) == 3 and "loadavg_after" in meta
    sections = result["sections"]
    assert list(sections) == ["layers", "views", "breakdown", "memory", "a3d"]

    layers = sections["layers"]
    cases = {row["case"] for row in layers["rows"]}
    assert len(cases) == 1 and next(iter(cases)).startswith("a: N=1, 8->8, 6x8x8")
    candidates = {row["candidate"] for row in layers["rows"]}
    assert candidates == {f"{k}/channels_last_3d" for k in ("acs", "conv2p5d", "conv3d", "acs_script")}
    for row in layers["rows"]:
        assert len(row["times_s"]) == 1 and row["median_s"] > 0 and row["gflops_per_s"] > 0
    names = {r["name"] for r in layers["ratios"]}
    assert {"acs / fastest conv2p5d", "acs / fastest conv3d", "acs scripted / acs eager"} <= names
    targets = {r["name"]: r["target"] for r in layers["ratios"]}
    assert targets["acs / fastest conv2p5d"] == 1.3 and targets["acs / fastest conv3d"] == 0.6
    assert not any("default layout" in name for name in names)  # no contiguous candidate was asked for

    views = {row["candidate"] for row in sections["views"]["rows"]}
    assert {"conv2p5d (all channels)", "sum of the three views"} <= views
    assert any(v.startswith("axial view alone") for v in views)

    breakdown = sections["breakdown"]["rows"]
    assert {row["candidate"] for row in breakdown} == {"acs/channels_last_3d", "conv2p5d/channels_last_3d"}
    ops = {row["op"] for row in breakdown if row["candidate"] == "acs/channels_last_3d"}
    assert any("conv" in op for op in ops), ops
    assert all(row["ms_per_step"] > 0 and row["calls_per_step"] > 0 for row in breakdown)

    memory = sections["memory"]["rows"]
    assert {row["candidate"] for row in memory} == {f"{k}/channels_last_3d" for k in ("acs", "conv2p5d", "conv3d")}
    for row in memory:  # a fresh subprocess measured each candidate
        assert row["peak_rss"] > 0 and row["saved_bytes"] > 0 and row["peak_over_baseline"] >= 0
    assert {r["name"] for r in sections["memory"]["ratios"]} == {
        "acs / conv2p5d peak, channels_last_3d",
        "acs / conv2p5d saved for backward, channels_last_3d",
    }

    a3d = sections["a3d"]
    assert {row["case"].split(":")[0] for row in a3d["rows"]} == {"D3", "D6"}
    assert any(r["name"] == "a3d / fastest conv2p5d" and r["target"] == 1.10 for r in a3d["ratios"])
    saved = {r["candidate"]: r["saved_bytes"] for r in a3d["rows"] if r["case"].startswith("D3")}
    assert 0 < saved["a3d/channels_last_3d"] <= 1.05 * saved["conv2p5d/channels_last_3d"] + 2**12  # + P, the kernel
    assert any("bytes saved for backward" in note for note in a3d["notes"])

    for heading in ("## layers", "## views", "## breakdown", "## memory", "## a3d", "acs / fastest conv2p5d", "load average"):
        assert heading in markdown


def test_default_layout_is_compared_with_the_fastest_format(bench, tmp_path):
    """What users run: ACS (and A3D) fed a contiguous input against the 2.5D / 3D convolutions' fastest format."""
    result, markdown = _run(bench, tmp_path, sections="layers,memory,a3d", shapes="c", script=False)
    ratios = {r["name"]: r for section in result["sections"].values() for r in section["ratios"]}
    for name, target in (("acs default layout (contiguous input) / fastest conv2p5d", 1.3),
                         ("acs default layout (contiguous input) / fastest conv3d", 0.6),
                         ("acs default layout (contiguous input) / smallest conv2p5d peak", 1.05),
                         ("a3d default layout (contiguous input) / fastest conv2p5d", 1.10)):
        assert ratios[name]["target"] == target and ratios[name]["value"] >= 0, name  # tiny peaks can be 0
    layer_ratio = ratios["acs default layout (contiguous input) / fastest conv2p5d"]
    assert layer_ratio["numerator"] == "acs/contiguous"
    assert layer_ratio["denominator"] in ("conv2p5d/contiguous", "conv2p5d/channels_last_3d")
    assert "default layout" in markdown


def test_compiled_candidates_are_timed_and_compared(bench, tmp_path):
    result, markdown = _run(bench, tmp_path, sections="layers,a3d", shapes="d", formats="channels_last_3d",
                            script=False, compile=True)
    layer_rows = {row["candidate"] for row in result["sections"]["layers"]["rows"]}
    assert {"acs_compiled/channels_last_3d", "acs_views_compiled/channels_last_3d",
            "conv2p5d_compiled/channels_last_3d"} <= layer_rows
    assert {row["candidate"] for row in result["sections"]["a3d"]["rows"]} >= {"a3d_compiled/channels_last_3d"}
    names = [r["name"] for section in ("layers", "a3d") for r in result["sections"][section]["ratios"]]
    assert "acs_views_compiled / fastest conv2p5d" in names and "a3d_compiled / fastest conv2p5d" in names
    assert "acs_views_compiled" in markdown


def test_unknown_section_raises(bench, tmp_path):
    with pytest.raises(ValueError, match="unknown sections"):
        bench.main(out=str(tmp_path / "x"), tiny=True, sections="layers,gpu")
    with pytest.raises(ValueError, match=r"unknown layer shapes \['e'\]"):
        bench.main(out=str(tmp_path / "x"), tiny=True, sections="layers", shapes="a,e")


@pytest.mark.slow
def test_model_and_lits_sections_write_expected_rows(bench, tmp_path):
    result, markdown = _run(bench, tmp_path, sections="models,lits", formats="channels_last_3d")
    models = result["sections"]["models"]
    lidc = [row for row in models["rows"] if row["case"].startswith("lidc_seg")]
    assert {row["candidate"] for row in lidc if row["section"] == "models"} == {
        f"{op}/channels_last_3d" for op in ("acs", "conv2p5d", "i3d")
    }
    assert sum(row["section"] == "models-memory" for row in lidc) == 3
    assert any(r["name"] == "acs / fastest 2.5D twin" for r in models["ratios"])
    nets = {row["case"].split(":")[0] for row in models["rows"]}
    assert nets == {"lidc_seg", "deeplesion", "poc", "lits_train"}
    for net in nets:  # every network beside its 2.5D and 3D twins, in the same run
        ops = {row["candidate"].split("/")[0] for row in models["rows"] if row["case"].startswith(net + ":")}
        assert {"conv2p5d", "i3d"} <= ops and ops & {"acs", "a3d"}, (net, ops)
    assert any(note.startswith("DeepLesion backbone") for note in models["notes"])
    lits = result["sections"]["lits"]
    assert {row["candidate"] for row in lits["rows"]} == {f"{op}/channels_last_3d" for op in ("acs", "conv2p5d", "i3d")}
    assert all(row["peak_bytes"] > 0 for row in lits["rows"])
    assert "## models" in markdown and "## lits" in markdown
