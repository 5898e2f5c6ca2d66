"""DeepLesion's cache is bounded by memory (``cache_gib``), not a fraction of the data set: the first items that fit
stay in memory, the others are read from their PNG slices each time."""

from __future__ import annotations

import pytest
import torch
from _helpers import REPO
from monai.bundle import ConfigParser

from monai_acs.data.deeplesion import write_deeplesion_demo
from monai_acs.workflows.detection import cache_capacity

TRAIN = REPO / "bundles" / "deeplesion_a3d" / "configs" / "train.json"


def test_capacity_arithmetic():
    # an item: (D, S, S) float32 image + one (S, S) uint8 mask per lesion (+512 bytes of boxes and keys)
    assert cache_capacity(2.0, 3, 512) == int(2 * 2**30 // (512 * 512 * 13 + 512)) == 630
    assert cache_capacity(2.0, 9, 512, lesions_per_item=2) == int(2 * 2**30 // (512 * 512 * 38 + 512))
    assert cache_capacity(0, 3, 512) == 0
    assert cache_capacity(None, 3, 512) > 10**9 and cache_capacity(-1, 3, 512) > 10**9


@pytest.mark.parametrize("cache_gib, cached", [(0.0001, 1), (2.0, None)])
def test_train_dataset_caches_what_fits(tmp_path, cache_gib, cached):
    data = tmp_path / "deeplesion"
    write_deeplesion_demo(data, n_studies=3, image_size=64)
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"dataset_dir": str(data), "image_size": 64, "cache_gib": cache_gib, "num_workers": 0,
                   "bundle_root": str(REPO / "bundles" / "deeplesion_a3d")})
    assert ConfigParser.load_config_file(TRAIN)["cache_gib"] == 2.0  # the default: 2 GiB per dataset
    dataset = parser.get_parsed_content("train#dataset")
    n = len(dataset)
    assert n >= 2
    expected = cached if cached is not None else n  # 2 GiB holds every demo item
    assert dataset.cache_num == expected
    assert sum(item is not None for item in dataset._cache) == expected
    # an item beyond the cache is read and preprocessed on the fly
    item = dataset[n - 1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
