"""scripts/count_flops.py reproduces the A3D paper's Table 1 (no fusion and I3D) from hooks on the real modules."""

from __future__ import annotations

import pytest
import torch
from script_helpers import load_script
from torch import nn


@pytest.fixture(scope="module")
def count_flops():
    return load_script("count_flops")


@pytest.mark.parametrize(
    "operator, slices, paper",
    [("conv2p5d", 3, 40.64), ("conv2p5d", 7, 94.83), ("i3d", 3, 78.69), ("i3d", 7, 183.61)],
)
def test_table1_reproduced(count_flops, operator, slices, paper):
    result = count_flops.count_backbone(operator, slices, size=512)
    gflops = result["flops"] / 1e9
    assert abs(gflops / paper - 1) < 0.005, f"{operator} D={slices}: {gflops:.2f} GFLOPs vs paper {paper}"
    assert result["fusion_flops"] == 0
    # every dense layer (2 convs, 2 norms, 2 ReLUs) of the 42 plus stem and 2 transitions was seen once
    assert result["modules"] == 42 * 6 + 4 + 2 * 4


def test_counter_rules_on_known_modules(count_flops):
    net = nn.Sequential(
        nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1), bias=True), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d((1, 2, 2))
    )
    counter = count_flops.FlopCounter(net)
    net(torch.zeros(1, 2, 3, 8, 8))
    out = 4 * 3 * 8 * 8
    assert counter.counts["conv"] == out * 2 * 9 + out
    assert counter.counts["norm"] == 2 * out and counter.counts["act"] == out and counter.counts["pool"] == out


def test_counter_refuses_unknown_weighted_module(count_flops):
    with pytest.raises(TypeError, match="no counting rule"):
        count_flops.FlopCounter(nn.Sequential(nn.Linear(2, 2)))


def test_default_table_runs_every_row_on_meta(count_flops):
    # the documented command's whole default table (every operator, the A3D/ACS rows included) on the meta device
    records = count_flops.flop_table(slices=(3,), size=64)
    assert [r["row"] for r in records] == list(count_flops.ROWS)
    by_row = {r["row"]: r for r in records}
    # ACS and TSM have exactly the FLOPs of no fusion; I3D more; A3D's fusion einsum adds on top
    assert by_row["acs"]["gflops_3"] == by_row["tsm"]["gflops_3"] == by_row["conv2p5d"]["gflops_3"] > 0
    assert by_row["i3d"]["gflops_3"] > by_row["conv2p5d"]["gflops_3"]
    assert by_row["a3d"]["gflops_3_with_fusion"] > by_row["a3d"]["gflops_3"]
