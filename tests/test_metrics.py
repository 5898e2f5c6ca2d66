"""Metrics against hand-computed cases, brute-force references, edge cases and torch inputs."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import torch

import monai_acs.metrics as metrics_module
from monai_acs.metrics import auc, dice_global, dice_per_case, feature_mauc, froc, iou, miou

# Two cases of four voxels, three classes. By hand, per class (P = predicted set, L = label set):
#   class 0: case0 P{0} L{0}        case1 P{2} L{1,2}
#   class 1: case0 P{1,2} L{1}      case1 P{3} L{3}
#   class 2: case0 P{3} L{2,3}      case1 P{0,1} L{0}
PREDS = np.array([[0, 1, 1, 2], [2, 2, 0, 1]])
LABELS = np.array([[0, 1, 2, 2], [2, 0, 0, 1]])


def test_dice_global_hand_computed():
    # pooled: class 0: 2*2/(2+3) = 0.8; class 1: 2*2/(3+2) = 0.8; class 2: 2*2/(3+3) = 2/3
    np.testing.assert_allclose(dice_global(PREDS, LABELS, num_classes=3), [0.8, 0.8, 2 / 3])


def test_dice_per_case_hand_computed():
    # class 0: (2*1/2 + 2*1/3) / 2 = (1 + 2/3) / 2; class 1: (2/3 + 1) / 2; class 2: (2/3 + 2/3) / 2
    np.testing.assert_allclose(dice_per_case(PREDS, LABELS, num_classes=3), [5 / 6, 5 / 6, 2 / 3])


def test_iou_and_miou_hand_computed():
    # pooled: class 0: 2/(2+3-2) = 2/3; class 1: 2/(3+2-2) = 2/3; class 2: 2/(3+3-2) = 1/2
    np.testing.assert_allclose(iou(PREDS, LABELS, num_classes=3), [2 / 3, 2 / 3, 1 / 2])
    assert miou(PREDS, LABELS, num_classes=3) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # per case: class 1: (1/2 + 1) / 2 = 3/4; class 2: (1/2 + 1/2) / 2 = 1/2
    np.testing.assert_allclose(iou(PREDS, LABELS, num_classes=3, per_case=True)[1:], [3 / 4, 1 / 2])
    assert miou(PREDS, LABELS, num_classes=3, per_case=True) == pytest.approx(5 / 8)


def test_global_differs_from_per_case():
    # case 0: 4 label voxels found exactly; case 1: one label voxel missed.
    preds = [np.array([1, 1, 1, 1]), np.array([0, 0])]
    labels = [np.array([1, 1, 1, 1]), np.array([1, 0])]
    assert dice_global(preds, labels)[1] == pytest.approx(2 * 4 / (4 + 5))  # 8/9: big case dominates
    assert dice_per_case(preds, labels)[1] == pytest.approx((1.0 + 0.0) / 2)


def test_empty_cases():
    # both empty for class 1 in case 1: skipped in the per-case mean, neutral in the global one
    preds = np.array([[1, 1, 0], [0, 0, 0]])
    labels = np.array([[1, 0, 0], [0, 0, 0]])
    assert dice_per_case(preds, labels)[1] == pytest.approx(2 / 3)
    assert dice_global(preds, labels)[1] == pytest.approx(2 / 3)
    # empty everywhere: undefined, nan; the miou skips it
    empty = np.zeros((2, 3), dtype=np.int64)
    assert np.isnan(dice_global(empty, empty)[1]) and np.isnan(dice_per_case(empty, empty)[1])
    assert dice_global(empty, empty)[0] == 1.0
    assert np.isnan(miou(empty, empty))
    assert miou(np.array([[2, 0]]), np.array([[2, 0]]), num_classes=3) == 1.0  # class 1 absent: skipped
    # empty prediction, non-empty label: 0 (not skipped)
    assert dice_per_case(np.zeros((1, 3), int), np.array([[0, 1, 1]]))[1] == 0.0
    assert dice_global(np.zeros((1, 3), int), np.array([[0, 1, 1]]))[1] == 0.0
    # false positives on an empty label: 0
    assert dice_per_case(np.array([[1, 0]]), np.array([[0, 0]]))[1] == 0.0


def test_perfect_prediction():
    labels = np.random.default_rng(0).integers(0, 4, size=(3, 5, 6, 7))
    np.testing.assert_array_equal(dice_global(labels, labels, num_classes=4), np.ones(4))
    np.testing.assert_array_equal(dice_per_case(labels, labels, num_classes=4), np.ones(4))
    assert miou(labels, labels, num_classes=4) == 1.0


def test_against_set_reference():
    rng = np.random.default_rng(1)
    preds = rng.integers(0, 3, size=(4, 3, 5, 6))
    labels = rng.integers(0, 3, size=(4, 3, 5, 6))
    for c in range(3):
        p, g = preds == c, labels == c
        inter, sizes = (p & g).sum(), p.sum() + g.sum()
        assert dice_global(preds, labels, 3)[c] == pytest.approx(2 * inter / sizes)
        assert iou(preds, labels, 3)[c] == pytest.approx(inter / (p | g).sum())
        per_case = [2 * (p[n] & g[n]).sum() / (p[n].sum() + g[n].sum()) for n in range(4)]
        assert dice_per_case(preds, labels, 3)[c] == pytest.approx(np.mean(per_case))


def test_torch_bool_float_and_ragged_inputs():
    expected = dice_global(PREDS, LABELS, num_classes=3)
    np.testing.assert_allclose(dice_global(torch.from_numpy(PREDS), torch.from_numpy(LABELS), 3), expected)
    np.testing.assert_allclose(dice_global(PREDS.astype(np.float32), LABELS.astype(np.float64), 3), expected)
    np.testing.assert_allclose(dice_global(list(PREDS), list(LABELS), 3), expected)
    # a MONAI-style batch (B, 1, ...) and bool masks
    batch = torch.tensor([[[True, False]], [[True, True]]])
    assert dice_global(batch, batch)[1] == 1.0
    # ragged cases: one 2x2 and one 3-voxel case; class 1: P{a0,a1,b0} L{a0,b0,b1} -> 2*2/(3+3)
    preds = [np.array([[1, 1], [0, 0]]), torch.tensor([1, 0, 0])]
    labels = [np.array([[1, 0], [0, 0]]), torch.tensor([1, 1, 0])]
    assert dice_global(preds, labels)[1] == pytest.approx(4 / 6)


def test_segmentation_errors():
    with pytest.raises(ValueError, match=r"labels\[0\] holds class ids in \[0, 2\]"):
        dice_global(np.array([[0, 1]]), np.array([[0, 2]]), num_classes=2)
    with pytest.raises(ValueError, match="negative"):
        dice_global(np.array([[0, 1]]), np.array([[0, -1]]))
    with pytest.raises(ValueError, match=r"case 1: preds shape \(3,\) differs from labels shape \(2,\)"):
        dice_global([np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(2)])
    with pytest.raises(ValueError, match="2 cases but labels has 1"):
        dice_per_case(np.zeros((2, 3)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="argmax"):
        iou(np.array([[0.2, 0.9]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        miou(np.zeros((1, 2)), np.zeros((1, 2)), num_classes=1)


def _auc_pairs(scores, labels) -> float:
    """Brute force: P(pos > neg) + 0.5 P(pos == neg) over all pairs."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed():
    # pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # ties: pos {1, 2}, neg {1, 0}: (1,1) tie 0.5, (1,0) 1, (2,1) 1, (2,0) 1 -> 3.5/4
    assert auc(np.array([1, 1, 2, 0]), np.array([1, 0, 1, 0])) == 0.875
    assert auc([0.0, 0.0, 0.0], [1, 0, 0]) == 0.5  # all tied
    assert auc([0.1, 0.9], [False, True]) == 1.0
    assert auc([0.9, 0.1], [0, 1]) == 0.0


def test_auc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=60).astype(float)  # many ties
    labels = rng.integers(0, 2, size=60)
    assert auc(scores, labels) == pytest.approx(_auc_pairs(scores, labels))
    assert auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(_auc_pairs(scores, labels))


def test_auc_errors():
    with pytest.raises(ValueError, match="both classes"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="binary"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="nan"):
        auc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="3 elements"):
        auc([0.1, 0.2, 0.3], [0, 1])


def _hand_features():
    # one case, spatial (1, 1, 6); labels 0 0 0 1 1 2
    labels = np.array([0, 0, 0, 1, 1, 2]).reshape(1, 1, 1, 6)
    feats = np.array(
        [
            [0, 1, 2, 3, 4, 5],  # class 1 and class 2 above background: AUC 1, 1
            [5, 4, 3, 2, 1, 0],  # below: AUC 0, 0 -> sign-free 1, 1
            [0, 1, 0, 1, 0, 1],  # class 1 pos {1, 0} vs neg {0, 1, 0}: (2.5 + 1) / 6 = 7/12; class 2: 2.5/3 = 5/6
        ],
        dtype=np.float32,
    ).reshape(1, 3, 1, 1, 6)
    return feats, labels


def test_feature_mauc_hand_computed():
    feats, labels = _hand_features()
    # class 1: (1 + 1 + 7/12) / 3 = 31/36; class 2: (1 + 1 + 5/6) / 3 = 34/36; mean 65/72
    assert feature_mauc(feats, labels) == pytest.approx(65 / 72)
    assert feature_mauc(feats, labels, channel_reduction="max") == 1.0
    # only channel 2: class 1: 7/12, class 2: 5/6 -> (7/12 + 10/12) / 2 = 17/24
    assert feature_mauc(feats[:, 2:], labels) == pytest.approx(17 / 24)
    # labels with a channel axis, torch inputs
    assert feature_mauc(torch.from_numpy(feats), torch.from_numpy(labels)[:, None]) == pytest.approx(65 / 72)


@pytest.mark.parametrize("ties", [False, True])
def test_feature_mauc_matches_auc_reference(ties):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(2, 4, 5, 6))
    shift = np.array([2.0, 0.0, -1.0, 0.3])[:, None, None, None]
    feats = rng.normal(size=(2, 4, 4, 5, 6)) + (labels[:, None] == 1) * shift
    if ties:  # ReLU zeros and coarse quantisation: many values shared by both classes
        feats = np.round(np.maximum(feats, 0.0))
    expected = []
    for c in (1, 2):
        s = []
        for k in range(4):
            mask = (labels == c) | (labels == 0)
            a = auc(feats[:, k][mask], (labels == c)[mask])
            s.append(max(a, 1 - a))
        expected.append(np.mean(s))
    assert feature_mauc(feats, labels, max_voxels_per_class=None) == pytest.approx(np.mean(expected))
    assert feature_mauc(feats, labels, num_classes=3, max_voxels_per_class=None) == pytest.approx(np.mean(expected))


def test_feature_mauc_on_a_48_cube_with_64_channels():
    # full-size input (speed is a benchmark concern, not asserted here)
    rng = np.random.default_rng(4)
    labels = rng.choice(6, p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], size=(2, 48, 48, 48))  # ~110k background voxels
    feats = torch.randn(2, 64, 48, 48, 48) + torch.from_numpy(labels == 3)[:, None].float()
    value = feature_mauc(feats, labels)
    # class 3 is shifted by one unit on all channels: AUC Phi(1/sqrt(2)) = 0.760; the 4 others ~0.5
    assert value == pytest.approx((4 * 0.5 + 0.760) / 5, abs=0.01)


def test_feature_mauc_subsampling_is_seeded():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=(1, 16, 16, 16))
    feats = rng.normal(size=(1, 4, 16, 16, 16)) + (labels[:, None] == 1)
    value = feature_mauc(feats, labels, max_voxels_per_class=500, seed=7)
    assert value == feature_mauc(feats, labels, max_voxels_per_class=500, seed=7)
    assert value != feature_mauc(feats, labels, max_voxels_per_class=500, seed=8)
    assert value == pytest.approx(feature_mauc(feats, labels, max_voxels_per_class=None), abs=0.03)


def test_feature_mauc_errors():
    feats, labels = _hand_features()
    with pytest.raises(ValueError, match="does not match features shape"):
        feature_mauc(feats[..., :5], labels)
    with pytest.raises(ValueError, match="channel_reduction"):
        feature_mauc(feats, labels, channel_reduction="median")
    with pytest.raises(ValueError, match="no foreground"):
        feature_mauc(feats, np.zeros_like(labels))
    with pytest.raises(ValueError, match="no background"):
        feature_mauc(feats, np.ones_like(labels))
    with pytest.raises(ValueError, match="num_classes=2"):
        feature_mauc(feats, labels, num_classes=2)


def test_froc_hand_computed():
    dets = [
        # image 0, lesions A (0,0,10,10) and B (20,20,30,30)
        [(0, 0, 10, 10, 0.9), (1, 1, 10, 10, 0.8), (20, 20, 30, 29, 0.3)],
        # image 1, lesion C (0,0,10,10)
        [(5, 0, 15, 10, 0.7), (0, 0, 10, 8, 0.6)],
        # image 2, lesion D (0,0,4,4), never found
        [(50, 50, 60, 60, 0.95)],
    ]
    gts = [[(0, 0, 10, 10), (20, 20, 30, 30)], [(0, 0, 10, 10)], [(0, 0, 4, 4)]]
    # 0.9 -> A (IoU 1); 0.8 overlaps A (IoU 0.81) but A is taken: FP; 0.3 -> B (IoU 0.9);
    # 0.7 has IoU 50/150 = 1/3 with C: FP; 0.6 -> C (IoU 0.8); 0.95: FP.
    # by score: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 FP, 0.6 TP, 0.3 TP; 3 images, 4 lesions
    result = froc(dets, gts, fp_rates=(0.25, 0.5, 1, 2, 4))
    np.testing.assert_allclose(result["curve_fps"], [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(result["curve_sensitivity"], [0, 0, 0.25, 0.25, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(result["curve_thresholds"], [np.inf, 0.95, 0.9, 0.8, 0.7, 0.6, 0.3])
    # 0.25 FP/image allows 0.75 FP in all: none -> 0; 0.5 allows 1 FP -> 0.25; 1 allows 3 -> 0.75
    assert result["sensitivity"] == {0.25: 0.0, 0.5: 0.25, 1.0: 0.75, 2.0: 0.75, 4.0: 0.75}
    assert result["average_sensitivity"] == pytest.approx((0.25 + 0.75 + 0.75 + 0.75) / 4)
    assert (result["num_images"], result["num_lesions"]) == (3, 4)


def test_froc_greedy_takes_best_unmatched_box():
    # G1 = x[0,10], G2 = x[3,13] (all boxes y in [0,10]).
    # det1 x[3,12]: IoU G1 7/12 = 0.58, G2 9/10 -> takes G2; det2 x[0,8]: IoU G1 0.8 -> TP.
    # (matching det1 to the first box above 0.5, G1, would leave det2 with IoU 5/13 against G2: a FP)
    result = froc([[(3, 0, 12, 10, 0.9), (0, 0, 8, 10, 0.8)]], [[(0, 0, 10, 10), (3, 0, 13, 10)]], fp_rates=(0.5,))
    assert result["sensitivity"] == {0.5: 1.0}


def test_froc_ties_enter_together():
    # a TP and a FP with the same score cannot be separated by a threshold
    result = froc([[(50, 50, 60, 60, 0.5), (0, 0, 10, 10, 0.5)]], [[(0, 0, 10, 10)]], fp_rates=(0.5, 1))
    assert result["sensitivity"] == {0.5: 0.0, 1.0: 1.0}
    np.testing.assert_allclose(result["curve_fps"], [0, 1])


def test_froc_iou_threshold_inclusive_and_input_forms():
    # IoU exactly 0.5: (0,0,10,10) vs (0,0,10,5) -> 50/100
    gts = [np.array([[0, 0, 10, 10]])]
    assert froc([[(0, 0, 10, 5, 1.0)]], gts, fp_rates=(1,))["sensitivity"] == {1.0: 1.0}
    assert froc([[(0, 0, 10, 5, 1.0)]], gts, fp_rates=(1,), iou_threshold=0.6)["sensitivity"] == {1.0: 0.0}
    # torchvision-style dicts and tensors; an image with no detection and one with no lesion
    dets = [
        {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)},
        {"boxes": torch.tensor([[0.0, 0, 1, 1]]), "scores": torch.tensor([0.5])},
    ]
    truths = [{"boxes": torch.tensor([[0.0, 0, 10, 10]])}, {"boxes": torch.tensor([[0.0, 0, 5, 5]])}, []]
    result = froc(dets, truths, fp_rates=(0.25, 0.5))
    # by score: 0.9 TP, 0.5 FP (image 2 has no lesion); 3 images, 2 lesions
    assert result["sensitivity"] == {0.25: 0.5, 0.5: 0.5}
    np.testing.assert_allclose(result["curve_fps"], [0, 0, 1 / 3])
    # no detection at all
    empty = froc([[], []], [[(0, 0, 1, 1)], []])
    assert set(empty["sensitivity"].values()) == {0.0} and empty["average_sensitivity"] == 0.0


def test_froc_errors():
    with pytest.raises(ValueError, match="no box"):
        froc([[(0, 0, 1, 1, 0.5)]], [[]])
    with pytest.raises(ValueError, match="2 images but ground_truths 1"):
        froc([[], []], [[(0, 0, 1, 1)]])
    with pytest.raises(ValueError, match=r"ground_truths\[0\] has a box with x2 < x1"):
        froc([[]], [[(5, 0, 1, 1)]])
    with pytest.raises(ValueError, match=r"detections\[0\] must be a sequence of 5-tuples"):
        froc([[(0, 0, 1, 1)]], [[(0, 0, 1, 1)]])


def test_docstring_examples_run():
    result = doctest.testmod(metrics_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
