"""Evaluation metrics of the ACS and A3D papers: Dice (global and per case), IoU / mIoU, AUC, feature mAUC, FROC.

Every function is pure and typed, takes numpy arrays or torch tensors (any device; they are moved to the CPU
and read as numpy), and returns numpy values. Segmentation metrics take *label maps* (integer class ids, not
one-hot and not probabilities: ``argmax`` or threshold first).

Cases: ``preds`` and ``labels`` are either one array whose first axis indexes cases (``(N, ...)``, e.g. a
batch ``(B, 1, D, H, W)`` from a MONAI evaluator) or a sequence of per-case arrays, which may differ in shape
from case to case (whole LiTS volumes). Within a case, ``preds`` and ``labels`` must have the same shape.

Conventions for undefined values: a class that is empty in both the prediction and the label has no Dice and
no IoU (0/0). Such values are ``nan`` and are skipped by the means taken here (``dice_per_case`` over cases,
``miou`` over classes); a result is ``nan`` only when nothing was left to average.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "FROCResult",
    "auc",
    "dice_global",
    "dice_per_case",
    "feature_mauc",
    "froc",
    "iou",
    "miou",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_cases(x: Any, name: str) -> list[np.ndarray]:
    """Split ``x`` into per-case arrays: the first axis of one array, or the items of a list/tuple."""
    if isinstance(x, (list, tuple)):
        return [_to_numpy(item) for item in x]
    arr = _to_numpy(x)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a leading case axis or be a sequence of cases, got a scalar")
    return list(arr)


def _as_label_map(arr: np.ndarray, name: str, num_classes: int | None) -> np.ndarray:
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"{name} must hold integer class ids, got non-integer values of dtype {arr.dtype}; "
                "take the argmax (multi-class) or threshold (binary) of probabilities first"
            )
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer, bool or float label map, got dtype {arr.dtype}")
    else:
        arr = arr.astype(np.int64, copy=False)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ValueError(f"{name} holds negative class id {lo}")
        if num_classes is not None and hi >= num_classes:
            raise ValueError(
                f"{name} holds class ids in [{lo}, {hi}], outside [0, {num_classes - 1}] "
                f"declared by num_classes={num_classes}"
            )
    return arr


def _confusion_per_case(preds: ArrayLike, labels: ArrayLike, num_classes: int) -> np.ndarray:
    """Confusion matrices ``(N, C, C)``: ``[n, label, pred]`` voxel counts of case ``n``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one class), got {num_classes}")
    pred_cases = _as_cases(preds, "preds")
    label_cases = _as_cases(labels, "labels")
    if len(pred_cases) != len(label_cases):
        raise ValueError(f"preds has {len(pred_cases)} cases but labels has {len(label_cases)}")
    if not pred_cases:
        raise ValueError("preds and labels hold no cases")
    out = np.zeros((len(pred_cases), num_classes, num_classes), dtype=np.int64)
    for n, (p, lab) in enumerate(zip(pred_cases, label_cases)):
        if p.shape != lab.shape:
            raise ValueError(f"case {n}: preds shape {tuple(p.shape)} differs from labels shape {tuple(lab.shape)}")
        p = _as_label_map(p, f"preds[{n}]", num_classes)
        lab = _as_label_map(lab, f"labels[{n}]", num_classes)
        flat = (lab * num_classes + p).ravel()
        out[n] = np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return out


def _dice_from_confusion(conf: np.ndarray) -> np.ndarray:
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)
    denom = conf.sum(axis=-1) + conf.sum(axis=-2)  # |label| + |pred| per class
    return np.divide(2.0 * tp, denom, out=np.full(tp.shape, np.nan), where=denom > 0)


def _iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)
    union = conf.sum(axis=-1) + conf.sum(axis=-2) - tp
    return np.divide(tp, union, out=np.full(tp.shape, np.nan), where=union > 0)


def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-nan slices give nan, by design
        return np.nanmean(x, axis=axis)


def dice_global(preds: ArrayLike, labels: ArrayLike, num_classes: int = 2) -> np.ndarray:
    """Global Dice per class: all voxels of the data set pooled before the ratio is taken.

    For class ``c``: ``2 * sum_n |P_n^c & L_n^c| / (sum_n |P_n^c| + sum_n |L_n^c|)``, the sums running over all
    cases ``n``. This is the "Dice global" of the ACS paper (LIDC-IDRI, Table V): large objects weigh more
    than small ones, and a case with an empty label contributes its false positives only.

    Args:
        preds: predicted label maps, ``(N, ...)`` or a sequence of per-case arrays (numpy or torch).
        labels: ground-truth label maps, same layout and per-case shapes as ``preds``.
        num_classes: number of classes including background (class ids ``0 .. num_classes - 1``). Default 2.

    Returns:
        float64 array of shape ``(num_classes,)``; entry ``c`` is the Dice of class ``c`` (entry 0 is the
        background). ``nan`` for a class that is absent from every prediction and every label.
        The foreground mean is ``np.nanmean(result[1:])``.

    Raises:
        ValueError: mismatched case counts or shapes, class ids outside ``[0, num_classes)``, non-integer
            float values, or ``num_classes < 2``.
        TypeError: label maps of a non-numeric dtype.

    Examples:
        >>> import numpy as np
        >>> pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
        >>> label = np.array([[1, 0, 0, 0], [0, 0, 1, 1]])
        >>> dice_global(pred, label)[1]  # 2 * 1 / (2 + 3)
        np.float64(0.4)
    """
    return _dice_from_confusion(_confusion_per_case(preds, labels, num_classes).sum(axis=0))


def dice_per_case(preds: ArrayLike, labels: ArrayLike, num_classes: int = 2) -> np.ndarray:
    """Mean over cases of the per-case Dice, per class.

    For each case and class the Dice ``2 |P & L| / (|P| + |L|)`` is computed; a case in which class ``c`` is
    empty in both the prediction and the label (0/0) is **skipped** for that class, i.e. left out of the mean
    (it is neither counted as 1 nor as 0). A case with an empty label but a non-empty prediction scores 0.

    Args:
        preds: predicted label maps, ``(N, ...)`` or a sequence of per-case arrays (numpy or torch).
        labels: ground-truth label maps, same layout and per-case shapes as ``preds``.
        num_classes: number of classes including background. Default 2.

    Returns:
        float64 array ``(num_classes,)``: mean per-case Dice of each class, ``nan`` when every case was skipped
        for that class.

    Raises:
        ValueError: as :func:`dice_global`.
        TypeError: as :func:`dice_global`.

    Examples:
        >>> import numpy as np
        >>> pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
        >>> label = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
        >>> dice_per_case(pred, label)[1]  # (2/3 + 0) / 2, the third case (both empty) is skipped
        np.float64(0.3333333333333333)
    """
    return _nanmean(_dice_from_confusion(_confusion_per_case(preds, labels, num_classes)), axis=0)


def iou(preds: ArrayLike, labels: ArrayLike, num_classes: int = 2, per_case: bool = False) -> np.ndarray:
    """Intersection over union (Jaccard index) per class, global (pooled) by default.

    Global: ``sum_n |P_n & L_n| / sum_n |P_n | L_n|``. With ``per_case=True``: the mean over cases of the
    per-case IoU, skipping a case where the class is empty in both prediction and label (as
    :func:`dice_per_case`).

    Args:
        preds: predicted label maps, ``(N, ...)`` or a sequence of per-case arrays (numpy or torch).
        labels: ground-truth label maps, same layout and per-case shapes as ``preds``.
        num_classes: number of classes including background. Default 2.
        per_case: average per-case values instead of pooling voxels. Default False.

    Returns:
        float64 array ``(num_classes,)``; ``nan`` for a class with nothing to measure (see above).

    Raises:
        ValueError: as :func:`dice_global`.
        TypeError: as :func:`dice_global`.

    Examples:
        >>> import numpy as np
        >>> pred = np.array([[1, 1, 0, 0]])
        >>> label = np.array([[1, 0, 0, 0]])
        >>> iou(pred, label).tolist()  # background 2/3, class 1: 1/2
        [0.6666666666666666, 0.5]
    """
    conf = _confusion_per_case(preds, labels, num_classes)
    if per_case:
        return _nanmean(_iou_from_confusion(conf), axis=0)
    return _iou_from_confusion(conf.sum(axis=0))


def miou(preds: ArrayLike, labels: ArrayLike, num_classes: int = 2, per_case: bool = False) -> float:
    """Mean IoU over the foreground classes ``1 .. num_classes - 1`` (background excluded).

    The mIoU of the ACS paper's proof-of-concept (Table IV: averaged over the 5 foreground classes). Classes
    whose IoU is ``nan`` (absent from all predictions and labels) are left out of the mean.

    Args:
        preds: predicted label maps, ``(N, ...)`` or a sequence of per-case arrays (numpy or torch).
        labels: ground-truth label maps, same layout and per-case shapes as ``preds``.
        num_classes: number of classes including background. Default 2.
        per_case: per-case IoU averaged over cases instead of pooled voxels (see :func:`iou`). Default False.

    Returns:
        The mean foreground IoU as a Python float (``nan`` if no foreground class could be measured).

    Raises:
        ValueError: as :func:`dice_global`.
        TypeError: as :func:`dice_global`.

    Examples:
        >>> import numpy as np
        >>> pred = np.array([[1, 2, 2, 0]])
        >>> label = np.array([[1, 1, 2, 0]])
        >>> miou(pred, label, num_classes=3)  # class 1: 1/2, class 2: 1/2
        0.5
    """
    return float(_nanmean(iou(preds, labels, num_classes, per_case=per_case)[1:]))


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties counted as one half.

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos * n_neg)`` where ``R_pos`` is the sum of the ranks of the
    positive scores among all scores, tied scores receiving their average rank. This equals the probability
    that a random positive scores higher than a random negative, plus half the probability of a tie, and the
    trapezoidal area under the empirical ROC curve. Used for the LIDC-IDRI classification (ACS paper Table V).

    Args:
        scores: real-valued scores of any shape (flattened), higher meaning "more positive".
        labels: binary labels of the same number of elements (bool, or 0/1 integers or floats).

    Returns:
        The AUC in ``[0, 1]`` as a Python float.

    Raises:
        ValueError: different sizes, non-finite scores, labels other than 0/1, or only one class present.

    Examples:
        >>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
        >>> auc([0.5, 0.5], [0, 1])  # a tie counts one half
        0.5
    """
    s = _to_numpy(scores).astype(np.float64).ravel()
    y = _to_numpy(labels).ravel()
    if s.size != y.size:
        raise ValueError(f"scores has {s.size} elements but labels has {y.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain nan or inf")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be binary 0/1, got values {np.unique(y)[:10].tolist()}")
    pos = y.astype(bool)
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _auc_rows(pos: np.ndarray, neg_sorted: np.ndarray) -> np.ndarray:
    """AUC of each row: ``pos (K, P)`` positives vs ``neg_sorted (K, Q)`` negatives sorted per row.

    Mann-Whitney by counting: each positive wins against the negatives below it and ties with those equal to it
    (one half each), found by binary search in the sorted negatives.
    """
    out = np.empty(pos.shape[0])
    pos = np.sort(pos, axis=1)  # sorted needles make the binary searches cache friendly
    n_neg = neg_sorted.shape[1]
    for k in range(pos.shape[0]):
        below = np.searchsorted(neg_sorted[k], pos[k], side="left")
        # second search only for positives equal to some negative (ReLU zeros, quantised values)
        tied = neg_sorted[k][np.minimum(below, n_neg - 1)] == pos[k]
        ties = np.searchsorted(neg_sorted[k], pos[k][tied], side="right") - below[tied]
        out[k] = (below.sum() + 0.5 * ties.sum()) / (pos.shape[1] * n_neg)
    return out


def feature_mauc(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    num_classes: int | None = None,
    channel_reduction: str = "mean",
    max_voxels_per_class: int | None = 10000,
    seed: int = 0,
) -> float:
    """Feature mAUC: how well feature channels separate each foreground class from the background.

    The ACS paper (Sec. IV-A, Table IV) scores the final-layer features of a converted network on the 3D
    proof-of-concept data *before any 3D training* with a mean AUC. The paper does not spell the formula out;
    this package defines it as follows. For each foreground class ``c`` present in ``labels`` and each feature
    channel ``k``:

    1. ``AUC[c, k]`` is the ROC AUC (:func:`auc`, ties one half) of channel ``k``'s activation at the voxels of
       class ``c`` (positives) against the voxels of class 0 (negatives), all cases pooled.
    2. ``S[c, k] = max(AUC[c, k], 1 - AUC[c, k])``: the sign of an untrained feature is arbitrary (a later
       layer can flip it), so a channel that is low on the class is as separating as one that is high.
       ``S`` lies in ``[0.5, 1]``; 0.5 means no separation.
    3. ``channel_reduction="mean"`` (default) averages ``S[c, :]`` over channels: the fraction of the feature
       bank aligned with the class, which is what pretraining changes. ``"max"`` takes the best single
       channel, a linear-probe-free upper bound that saturates easily on noisy-but-bright shapes.
    4. The mAUC is the mean over the foreground classes present.

    Voxels are subsampled for speed: at most ``max_voxels_per_class`` voxels of each class (background
    included) are drawn without replacement by ``numpy.random.default_rng(seed)``, so the value is
    deterministic for a seed.

    Args:
        features: ``(N, K, *spatial)`` activations (numpy or torch, any device), e.g. the input of the final
            1x1 convolution of a UNet, at the resolution of ``labels``.
        labels: ``(N, *spatial)`` or ``(N, 1, *spatial)`` integer label map, 0 = background.
        num_classes: if given, class ids must lie in ``[0, num_classes)``; foreground classes absent from
            ``labels`` are skipped either way. Default None (no range check).
        channel_reduction: ``"mean"`` or ``"max"`` over channels, see above. Default ``"mean"``.
        max_voxels_per_class: subsample size per class; None uses every voxel. Default 10000 (the standard
            error of each AUC is then below 0.005).
        seed: seed of the subsampling generator. Default 0.

    Returns:
        The feature mAUC in ``[0.5, 1]`` as a Python float.

    Raises:
        ValueError: shape mismatch between features and labels, unknown ``channel_reduction``, class ids out of
            range, no background voxel or no foreground voxel, or non-finite features at sampled voxels.

    Examples:
        >>> import numpy as np
        >>> labels = np.zeros((1, 4, 4, 4), dtype=np.int64)
        >>> labels[0, :2] = 1
        >>> good = labels[:, None].astype(np.float32)  # one channel equal to the mask
        >>> feats = np.concatenate([good, -good, np.zeros_like(good)], axis=1)
        >>> feature_mauc(feats, labels)  # channels score 1, 1 (sign-free) and 0.5 (constant)
        0.8333333333333334
        >>> feature_mauc(feats, labels, channel_reduction="max")
        1.0
    """
    if channel_reduction not in ("mean", "max"):
        raise ValueError(f"channel_reduction must be 'mean' or 'max', got {channel_reduction!r}")
    feats = _to_numpy(features)
    labs = _to_numpy(labels)
    if feats.ndim < 3:
        raise ValueError(f"features must be (N, K, *spatial), got shape {tuple(feats.shape)}")
    if labs.ndim == feats.ndim and labs.shape[1] == 1:
        labs = labs[:, 0]
    n, k = feats.shape[:2]
    if labs.shape != (n, *feats.shape[2:]):
        raise ValueError(
            f"labels shape {tuple(labs.shape)} does not match features shape {tuple(feats.shape)}: expected "
            f"{(n, *feats.shape[2:])} or {(n, 1, *feats.shape[2:])}; resample features to the label grid first"
        )
    labs = _as_label_map(labs, "labels", num_classes)
    flat_labels = labs.ravel()
    n_vox = int(np.prod(feats.shape[2:]))
    flat_feats = feats.reshape(n, k, n_vox)
    rng = np.random.default_rng(seed)

    def sample(cls: int) -> np.ndarray:
        idx = np.flatnonzero(flat_labels == cls)
        if max_voxels_per_class is not None and idx.size > max_voxels_per_class:
            idx = np.sort(rng.choice(idx, size=max_voxels_per_class, replace=False))
        case_of, voxel = np.divmod(idx, n_vox)  # idx is sorted, so each case's voxels form one run
        bounds = np.searchsorted(case_of, np.arange(n + 1))
        values = np.concatenate(
            [flat_feats[i][:, voxel[bounds[i] : bounds[i + 1]]] for i in range(n)], axis=1
        )  # (K, m), read row by row
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"features contain nan or inf at voxels of class {cls}")
        return values

    classes = [int(c) for c in np.unique(flat_labels) if c != 0]
    if not np.any(flat_labels == 0):
        raise ValueError("labels contain no background (class 0) voxel")
    if not classes:
        raise ValueError("labels contain no foreground voxel")
    background = np.sort(sample(0), axis=1)
    scores = []
    for c in classes:
        a = _auc_rows(sample(c), background)
        s = np.maximum(a, 1.0 - a)
        scores.append(s.mean() if channel_reduction == "mean" else s.max())
    return float(np.mean(scores))


class FROCResult(TypedDict):
    """Result of :func:`froc`.

    Attributes:
        sensitivity: FP rate (false positives per image) -> sensitivity at that rate.
        average_sensitivity: mean sensitivity over the ``average_over`` rates.
        curve_fps: false positives per image at each operating point (starts at 0), for plotting.
        curve_sensitivity: sensitivity at each operating point (starts at 0).
        curve_thresholds: score threshold of each point (a detection is kept when ``score >= threshold``;
            the first point, ``inf``, keeps nothing).
        num_images: number of images.
        num_lesions: number of ground-truth boxes.
    """

    sensitivity: dict[float, float]
    average_sensitivity: float
    curve_fps: np.ndarray
    curve_sensitivity: np.ndarray
    curve_thresholds: np.ndarray
    num_images: int
    num_lesions: int


def _boxes(item: Any, width: int, name: str, image: int) -> np.ndarray:
    if isinstance(item, Mapping):
        boxes = _to_numpy(item["boxes"]).astype(np.float64).reshape(-1, 4)
        if width == 5:
            scores = _to_numpy(item["scores"]).astype(np.float64).reshape(-1, 1)
            if scores.shape[0] != boxes.shape[0]:
                raise ValueError(f"{name}[{image}]: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
            boxes = np.concatenate([boxes, scores], axis=1)
    else:
        if isinstance(item, (list, tuple)):
            rows = [_to_numpy(b).astype(np.float64).ravel() for b in item]
            if any(r.size != width for r in rows):
                sizes = [r.size for r in rows]
                raise ValueError(f"{name}[{image}] must be a sequence of {width}-tuples, got sizes {sizes}")
            arr = np.stack(rows) if rows else np.zeros((0, width))
        else:
            arr = _to_numpy(item).astype(np.float64)
            if arr.size == 0:
                arr = arr.reshape(0, width)
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ValueError(f"{name}[{image}] must be an (M, {width}) array, got shape {tuple(arr.shape)}")
        boxes = arr
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name}[{image}] contains nan or inf")
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError(f"{name}[{image}] has a box with x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2)")
    return boxes


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` box with ``(G, 4)`` boxes, continuous coordinates; 0 where the union is empty."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def froc(
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    fp_rates: Sequence[float] = (0.5, 1, 2, 4, 8, 16),
    iou_threshold: float = 0.5,
    average_over: Sequence[float] = (0.5, 1, 2, 4),
) -> FROCResult:
    """Free-response ROC: lesion sensitivity at given numbers of false positives per image.

    The detection metric of both papers on DeepLesion (ACS Table VII, A3D Tables 2 and 3): sensitivity at
    0.5, 1, 2, 4, 8 and 16 FPs per image and the average over 0.5, 1, 2, 4.

    Matching rule (per image, once, independent of the threshold): detections are visited in order of
    descending score (stable for equal scores); a detection is a true positive when its IoU with some
    not-yet-matched ground-truth box is ``>= iou_threshold``, and it then matches the unmatched box of highest
    IoU, which is no longer available. Every other detection is a false positive, including a second
    detection of an already-found lesion. Boxes are ``(x1, y1, x2, y2)`` in continuous coordinates (area
    ``(x2 - x1) * (y2 - y1)``, no +1).

    Curve: all detections of all images are sorted by score and a threshold sweeps down through the distinct
    scores (detections with equal scores enter together). At each threshold, sensitivity = TP / number of
    ground-truth boxes and FPs per image = FP / number of images (images without lesions count). The
    sensitivity at rate ``r`` is that of the lowest threshold whose FPs per image are ``<= r`` (no
    interpolation); if all detections together stay below ``r`` FPs per image, it is the sensitivity of all
    detections.

    Args:
        detections: per image, the detections as a sequence of ``(x1, y1, x2, y2, score)``, an ``(M, 5)``
            array/tensor, or a mapping with ``"boxes"`` ``(M, 4)`` and ``"scores"`` ``(M,)`` (torchvision
            detection output).
        ground_truths: per image, the lesion boxes as a sequence of ``(x1, y1, x2, y2)``, a ``(G, 4)``
            array/tensor, or a mapping with ``"boxes"``. Same number of images as ``detections``.
        fp_rates: FPs-per-image levels to report. Default ``(0.5, 1, 2, 4, 8, 16)``.
        iou_threshold: minimum IoU for a match. Default 0.5.
        average_over: levels whose sensitivities are averaged. Default ``(0.5, 1, 2, 4)``.

    Returns:
        A :class:`FROCResult` dict: ``sensitivity`` per level, ``average_sensitivity``, the curve
        (``curve_fps``, ``curve_sensitivity``, ``curve_thresholds``), ``num_images`` and ``num_lesions``.

    Raises:
        ValueError: different numbers of images, malformed boxes, or no ground-truth box at all.

    Examples:
        >>> dets = [[(0, 0, 10, 10, 0.9), (20, 20, 30, 30, 0.8)], [(0, 0, 5, 5, 0.7)]]
        >>> gts = [[(0, 0, 10, 10)], [(0, 0, 10, 10)]]
        >>> result = froc(dets, gts, fp_rates=(0.5, 1), average_over=(0.5, 1))
        >>> # 0.9 finds lesion 1; 0.8 is a false positive; 0.7 has IoU 0.25 < 0.5 with lesion 2: false positive
        >>> result["sensitivity"]
        {0.5: 0.5, 1.0: 0.5}
        >>> result["curve_fps"].tolist(), result["curve_sensitivity"].tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 0.5, 0.5])
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"detections cover {len(detections)} images but ground_truths {len(ground_truths)}")
    n_images = len(detections)
    all_scores: list[np.ndarray] = []
    all_tp: list[np.ndarray] = []
    n_lesions = 0
    for i, (det_item, gt_item) in enumerate(zip(detections, ground_truths)):
        dets = _boxes(det_item, 5, "detections", i)
        gts = _boxes(gt_item, 4, "ground_truths", i)
        n_lesions += gts.shape[0]
        order = np.argsort(-dets[:, 4], kind="stable")
        dets = dets[order]
        matched = np.zeros(gts.shape[0], dtype=bool)
        is_tp = np.zeros(dets.shape[0], dtype=bool)
        for j in range(dets.shape[0]):
            if not gts.shape[0]:
                break
            overlaps = np.where(matched, -1.0, _box_iou(dets[j, :4], gts))
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold:
                matched[best] = True
                is_tp[j] = True
        all_scores.append(dets[:, 4])
        all_tp.append(is_tp)
    if n_lesions == 0:
        raise ValueError("ground_truths hold no box: sensitivity is undefined")

    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(~tp)
    last_of_group = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if scores.size else np.zeros(0, int)
    curve_fp_counts = np.concatenate([[0], cum_fp[last_of_group]])
    curve_sens = np.concatenate([[0.0], cum_tp[last_of_group] / n_lesions])
    curve_thr = np.concatenate([[np.inf], scores[last_of_group]])

    def sens_at(rate: float) -> float:
        # FP counts are integers: compare counts with rate * n_images to avoid rounding in the division.
        point = int(np.searchsorted(curve_fp_counts, rate * n_images + 1e-9, side="right")) - 1
        return float(curve_sens[max(point, 0)])

    sensitivity = {float(r): sens_at(float(r)) for r in fp_rates}
    average = float(np.mean([sens_at(float(r)) for r in average_over])) if len(average_over) else float("nan")
    return FROCResult(
        sensitivity=sensitivity,
        average_sensitivity=average,
        curve_fps=curve_fp_counts / max(n_images, 1),
        curve_sensitivity=curve_sens,
        curve_thresholds=curve_thr,
        num_images=n_images,
        num_lesions=n_lesions,
    )
