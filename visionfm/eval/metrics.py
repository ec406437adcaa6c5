"""Metrics, exact and streaming: accumulate per batch, combine across processes, compute at the end."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class SegmentationMetric:
    """Semantic segmentation scores from a streaming confusion matrix (mmseg's definitions).

    ``update(pred, target)`` adds pixels; pixels whose target is ``ignore_index`` are skipped. ``compute()`` gives
    ``mIoU`` (mean over classes present in the target or the prediction), ``aAcc`` (pixel accuracy), ``mAcc``
    (mean per-class recall) and per-class IoU. Confusion matrices of several workers add up (``merge``).

    Args:
        num_classes: number of classes; labels are ``0..num_classes-1``.
        ignore_index: target value to skip (255 by convention).
    """

    num_classes: int
    ignore_index: int = 255
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add one prediction / target pair of integer label maps of the same shape (any shape)."""
        p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64).ravel()
        t = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target).astype(np.int64).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction and target differ in size: {p.shape} vs {t.shape}")
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        bad = (t < 0) | (t >= self.num_classes) | (p < 0) | (p >= self.num_classes)
        if bad.any():
            raise ValueError(f"labels outside 0..{self.num_classes - 1}: {np.unique(np.r_[t[bad], p[bad]])[:10]}")
        self.confusion += np.bincount(t * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: SegmentationMetric) -> None:
        """Add another metric's counts (from another shard or process)."""
        self.confusion += other.confusion

    def compute(self) -> dict[str, float | list[float]]:
        """``{"mIoU", "aAcc", "mAcc", "IoU": [per class, nan where the class never occurs], "pixels"}``."""
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        gt, pr = c.sum(1), c.sum(0)
        union = gt + pr - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            rec = np.where(gt > 0, tp / gt, np.nan)
        total = c.sum()
        return {
            "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "aAcc": float(tp.sum() / total) if total else float("nan"),
            "mAcc": float(np.nanmean(rec)) if np.isfinite(rec).any() else float("nan"),
            "IoU": [float(v) for v in iou],
            "pixels": int(total),
        }


# ----------------------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------------------


def _check_logits_targets(logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``[N, K]`` (finite or inf, never nan) and ``targets`` is ``[N]``."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be [N] with N={logits.shape[0]}, got shape {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got {targets.dtype}")
    k = logits.shape[1] if num_classes is None else num_classes
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} classes, expected {num_classes}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k):
        raise ValueError(f"targets outside 0..{k - 1}: min {int(targets.min())}, max {int(targets.max())}")
    if logits.dtype.is_floating_point and torch.isnan(logits).any():
        raise ValueError("logits contain nan")


def target_rank(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its row's scores, ties broken towards the lowest class index.

    The rank is ``#{j: s_j > s_t} + #{j < t: s_j == s_t}``: the position the target would take in a descending sort
    that is stable in class index (a class with a lower index goes first among equal scores). ``target in top-k`` is
    ``rank < k``; rank 0 is exactly ``scores.argmax(1) == targets`` (argmax returns the first maximum).

    Args:
        scores: ``[N, K]`` scores (any real dtype, no nan).
        targets: ``[N]`` integer class indices in ``0..K-1``.

    Returns:
        ``[N]`` int64 ranks in ``0..K-1``.
    """
    t = targets.long().view(-1, 1)
    s_t = scores.gather(1, t)
    above = (scores > s_t).sum(1)
    before = ((scores == s_t) & (torch.arange(scores.shape[1], device=scores.device).view(1, -1) < t)).sum(1)
    return above + before


@dataclass
class ClassificationMetric:
    """Streaming top-k accuracy and per-class recall from counts only (no logits are kept).

    ``update(logits, targets)`` adds a batch; ``merge(other)`` adds another shard's counts; ``compute()`` gives
    ``{"acc1", "acc5", ..., "mean_per_class_recall", "samples"}`` with ``acc{k}`` only for ``k <= num_classes``.
    Top-k ties are broken towards the lowest class index (see :func:`target_rank`), so results do not depend on
    ``torch.topk``'s unspecified order; the top-1 prediction is ``logits.argmax(1)`` (first maximum).

    Args:
        num_classes: number of classes ``K``; targets are ``0..K-1``.
        topk: the ``k`` of the top-k accuracies; values larger than ``K`` are skipped.

    Attributes:
        confusion: ``[K, K]`` int64, rows are targets and columns top-1 predictions.
        correct: ``{k: number of samples whose target is in the top k}`` for each kept ``k``.

    Example:
        >>> m = ClassificationMetric(3, topk=(1, 2))
        >>> m.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([1, 0]))
        >>> m.compute()
        {'acc1': 0.0, 'acc2': 1.0, 'mean_per_class_recall': 0.0, 'samples': 2}
    """

    num_classes: int
    topk: tuple[int, ...] = (1, 5)
    confusion: np.ndarray = field(init=False)
    correct: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if any(int(k) < 1 for k in self.topk):
            raise ValueError(f"topk values must be >= 1, got {self.topk}")
        self.topk = tuple(sorted({int(k) for k in self.topk if int(k) <= self.num_classes}))
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.correct = dict.fromkeys(self.topk, 0)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``logits`` ``[N, K]`` scores (logits, probabilities, any monotone score) and ``targets`` ``[N]``."""
        logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
        _check_logits_targets(logits, targets, self.num_classes)
        logits, targets = logits.detach().cpu(), targets.detach().cpu().long()
        if targets.numel() == 0:
            return
        rank = target_rank(logits, targets)
        for k in self.topk:
            self.correct[k] += int((rank < k).sum())
        pred = logits.argmax(1)
        k = self.num_classes
        self.confusion += np.bincount((targets * k + pred).numpy(), minlength=k * k).reshape(k, k)

    def merge(self, other: ClassificationMetric) -> None:
        """Add another metric's counts (another shard or process); ``num_classes`` and ``topk`` must match."""
        if other.num_classes != self.num_classes or other.topk != self.topk:
            raise ValueError(
                f"cannot merge metric with K={other.num_classes}, topk={other.topk} into K={self.num_classes}, "
                f"topk={self.topk}"
            )
        self.confusion += other.confusion
        for k in self.topk:
            self.correct[k] += other.correct[k]

    @property
    def samples(self) -> int:
        """Number of samples seen."""
        return int(self.confusion.sum())

    @property
    def per_class_recall(self) -> list[float]:
        """Recall of each class, ``K`` floats in ``[0, 1]``; nan for a class that never occurs in the targets."""
        gt = self.confusion.sum(1)
        tp = np.diag(self.confusion)
        with np.errstate(invalid="ignore", divide="ignore"):
            rec = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
        return [float(v) for v in rec]

    def compute(self) -> dict[str, float | int]:
        """``{"acc1", "acc5", ..., "mean_per_class_recall", "samples"}``; accuracies in ``[0, 1]``, nan if empty.

        ``mean_per_class_recall`` (balanced accuracy) averages over the classes that occur in the targets.
        """
        n = self.samples
        out: dict[str, float | int] = {f"acc{k}": (self.correct[k] / n if n else float("nan")) for k in self.topk}
        rec = np.asarray(self.per_class_recall)
        out["mean_per_class_recall"] = float(np.nanmean(rec)) if np.isfinite(rec).any() else float("nan")
        out["samples"] = n
        return out


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, *, topk: tuple[int, ...] = (1, 5)
) -> dict[str, float | int]:
    """Top-k accuracies and mean per-class recall of one set of predictions.

    Ties: a target counts as in the top ``k`` when its rank, with equal scores ordered by lowest class index first,
    is below ``k`` (:func:`target_rank`); top-1 is therefore ``logits.argmax(1) == targets``.

    Args:
        logits: ``[N, K]`` class scores.
        targets: ``[N]`` integer class indices in ``0..K-1``.
        topk: the ``k`` of the accuracies reported; ``k > K`` is skipped.

    Returns:
        ``{"acc1": float, "acc5": float (if K >= 5), "mean_per_class_recall": float, "samples": N}``, accuracies
        in ``[0, 1]``; ``mean_per_class_recall`` averages the recall over classes present in ``targets``.
    """
    logits = torch.as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {tuple(logits.shape)}")
    m = ClassificationMetric(logits.shape[1], topk=tuple(topk))
    m.update(logits, torch.as_tensor(targets))
    return m.compute()


# ----------------------------------------------------------------------------------------------------------------------
# k-NN classification (DINO)
# ----------------------------------------------------------------------------------------------------------------------


def _topk_lowest_index(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k]`` of each row's ``k`` largest values; equal values are taken lowest index first.

    The set is exact and order-free: every value above the k-th largest, then as many of those equal to it as fit,
    lowest index first. Indices come back in increasing order.
    """
    thresh = sim.topk(k, dim=1, largest=True, sorted=True).values[:, -1:]
    above = sim > thresh
    equal = sim == thresh
    need = k - above.sum(1, keepdim=True)
    selected = above | equal
    crowded = (equal.sum(1, keepdim=True) > need).view(-1)  # rows where the boundary tie must be cut
    if crowded.any():
        rows = crowded.nonzero().view(-1)
        eq = equal[rows]
        selected[rows] = above[rows] | (eq & (eq.cumsum(1) <= need[rows]))
    return selected.nonzero()[:, 1].view(sim.shape[0], k)


@torch.no_grad()
def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    query_feats: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN class scores, DINO's ``eval_knn.py`` formula.

    Features are L2-normalised; for each query the ``k`` training samples of highest cosine similarity ``s`` are
    its neighbours, each votes ``exp(s / temperature)`` for its label, and a class's score is the sum of its votes
    (zero for classes with no neighbour). Ties at the k-th similarity take the lowest training index first, so
    the result does not depend on ``torch.topk``'s order. Queries are processed ``batch_size`` at a time (memory
    ``batch_size x N`` floats). ``k`` larger than ``N`` is clamped to ``N``.

    Args:
        train_feats: ``[N, D]`` training features (any scale; normalised here).
        train_labels: ``[N]`` integer labels in ``0..num_classes-1``.
        query_feats: ``[M, D]`` query features.
        num_classes: number of classes ``C``.
        k: number of neighbours.
        temperature: ``T`` of the vote weight ``exp(s / T)``.
        batch_size: queries per chunk.

    Returns:
        ``[M, C]`` float scores (at least float32); ``scores.argmax(1)`` is the k-NN prediction.

    Example:
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_classify(train, torch.tensor([0, 0, 1]), torch.tensor([[1.0, 0.05]]), num_classes=2, k=2).argmax(1)
        tensor([0])
    """
    if train_feats.ndim != 2 or query_feats.ndim != 2 or train_feats.shape[1] != query_feats.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D], got {tuple(train_feats.shape)}, {tuple(query_feats.shape)}"
        )
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(f"train_labels must be [{train_feats.shape[0]}], got {tuple(train_labels.shape)}")
    if train_feats.shape[0] == 0:
        raise ValueError("no training features")
    if k < 1 or batch_size < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1, batch_size >= 1, temperature > 0; got {k}, {batch_size}, {temperature}")
    labels = train_labels.long().to(train_feats.device)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"train_labels outside 0..{num_classes - 1}")
    dtype = torch.promote_types(train_feats.dtype, torch.float32)
    train = torch.nn.functional.normalize(train_feats.to(dtype), dim=1, p=2)
    k = min(k, train.shape[0])
    out = torch.zeros(query_feats.shape[0], num_classes, dtype=dtype, device=train.device)
    for start in range(0, query_feats.shape[0], batch_size):
        q = torch.nn.functional.normalize(query_feats[start : start + batch_size].to(train), dim=1, p=2)
        sim = q @ train.T
        idx = _topk_lowest_index(sim, k)
        weights = sim.gather(1, idx).div_(temperature).exp_()
        votes = labels[idx]
        scores = out[start : start + batch_size]
        for j in range(k):  # one vote per row per call: no colliding adds, deterministic on any device
            scores.scatter_add_(1, votes[:, j : j + 1], weights[:, j : j + 1])
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Image-text retrieval
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    batch_size: int = 1024,
) -> dict[str, float | int]:
    """Recall@k of image-to-text and text-to-image retrieval by cosine similarity.

    Text-to-image: a text is a hit at ``k`` when its image is among its ``k`` most similar images. Image-to-text:
    an image is a hit when any of its texts is among its ``k`` most similar texts (an image without texts is a
    miss, with a warning). Ties are ranked lowest index first (:func:`target_rank`), so equal similarities never
    make the result depend on ``torch.topk``'s order. Rows are processed ``batch_size`` at a time.

    Args:
        image_emb: ``[N, D]`` image embeddings (any scale; normalised here).
        text_emb: ``[M, D]`` text embeddings.
        text_to_image: ``[M]`` long, the index in ``0..N-1`` of each text's image (several texts per image allowed,
            in any order).
        ks: the ``k`` of the recalls.
        batch_size: rows of the similarity matrix computed at once.

    Returns:
        ``{"image_to_text_R@1", ..., "text_to_image_R@1", ..., "images": N, "texts": M}``, recalls in ``[0, 1]``.
    """
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"embeddings must be [N, D] and [M, D], got {tuple(image_emb.shape)}, {tuple(text_emb.shape)}")
    n, m = image_emb.shape[0], text_emb.shape[0]
    if text_to_image.shape != (m,):
        raise ValueError(f"text_to_image must be [{m}], got {tuple(text_to_image.shape)}")
    if n == 0 or m == 0:
        raise ValueError("need at least one image and one text")
    t2i = text_to_image.long().to(image_emb.device)
    if int(t2i.min()) < 0 or int(t2i.max()) >= n:
        raise ValueError(f"text_to_image outside 0..{n - 1}")
    if any(int(k) < 1 for k in ks) or batch_size < 1:
        raise ValueError(f"ks and batch_size must be >= 1, got {ks}, {batch_size}")
    dtype = torch.promote_types(torch.promote_types(image_emb.dtype, text_emb.dtype), torch.float32)
    img = torch.nn.functional.normalize(image_emb.to(dtype), dim=1, p=2)
    txt = torch.nn.functional.normalize(text_emb.to(img), dim=1, p=2)

    # text -> image: rank of the text's own image
    t2i_rank = torch.cat(
        [target_rank(txt[s : s + batch_size] @ img.T, t2i[s : s + batch_size]) for s in range(0, m, batch_size)]
    )

    # image -> text: rank of the image's best text (highest similarity, lowest text index among equals)
    has_text = torch.zeros(n, dtype=torch.bool, device=img.device)
    has_text[t2i] = True
    if not bool(has_text.all()):
        logger.warning("%d of %d images have no text; they count as image-to-text misses", int((~has_text).sum()), n)
    i2t_rank = []
    for s in range(0, n, batch_size):
        sim = img[s : s + batch_size] @ txt.T
        own = t2i.view(1, -1) == torch.arange(s, s + sim.shape[0], device=img.device).view(-1, 1)
        best = sim.masked_fill(~own, float("-inf")).argmax(1)  # first maximum among the image's texts
        rank = target_rank(sim, best)
        i2t_rank.append(torch.where(has_text[s : s + sim.shape[0]], rank, torch.full_like(rank, m)))
    i2t = torch.cat(i2t_rank)

    out: dict[str, float | int] = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((i2t < k).double().mean())
    for k in ks:
        out[f"text_to_image_R@{k}"] = float((t2i_rank < k).double().mean())
    out["images"], out["texts"] = n, m
    return out


# ----------------------------------------------------------------------------------------------------------------------
# COCO detection / instance segmentation
# ----------------------------------------------------------------------------------------------------------------------

_COCO_PREFIX = {"bbox": "box", "segm": "mask"}


def coco_detection_ap(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    detections: list[dict[str, Any]],
    *,
    iou_types: tuple[str, ...] = ("bbox", "segm"),
) -> dict[str, float]:
    """COCO AP, AP50 and AP75 by pycocotools' ``COCOeval`` (default parameters: 100 detections per image).

    Inputs are COCO-format dicts and are not modified. Boxes are XYWH in pixels; segmentations are polygons or RLE
    (``counts`` a list, or a compressed ``str`` or ``bytes``). Ground-truth annotations get ``iscrowd=0`` and an
    ``area`` (mask area if segmented, else box area) when missing, and are renumbered ``1..n`` (pycocotools treats
    annotation id 0 as unmatched). For ``"segm"`` the detections' ``bbox`` is dropped so that their area is the mask
    area (detectron2's convention; areas only matter for the small/medium/large breakdown, not the values returned). pycocotools' console output is silenced. Undefined values (no ground truth)
    are nan where pycocotools says -1.

    Args:
        images: ``[{"id", "height", "width", ...}]``.
        annotations: ``[{"image_id", "category_id", "bbox", "segmentation"?, "iscrowd"?, "area"?}]``.
        categories: ``[{"id", "name"?, ...}]``.
        detections: ``[{"image_id", "category_id", "score", "bbox"?, "segmentation"?}]``.
        iou_types: any of ``"bbox"`` and ``"segm"``.

    Returns:
        ``{"box_AP", "box_AP50", "box_AP75"}`` for ``"bbox"`` and ``{"mask_AP", "mask_AP50", "mask_AP75"}`` for
        ``"segm"``, in ``[0, 1]``; all 0.0 when there are no detections.

    Raises:
        ImportError: pycocotools is not installed.
    """
    bad = [t for t in iou_types if t not in _COCO_PREFIX]
    if bad or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of ('bbox', 'segm'), got {iou_types}")
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("coco_detection_ap needs pycocotools: pip install pycocotools") from e

    keys = [f"{_COCO_PREFIX[t]}_{s}" for t in iou_types for s in ("AP", "AP50", "AP75")]
    if not detections:
        return dict.fromkeys(keys, 0.0)
    for t in iou_types:
        need = "bbox" if t == "bbox" else "segmentation"
        missing = sum(need not in d for d in detections)
        if missing:
            raise ValueError(f"iou_type {t!r} needs {need!r} in every detection; {missing} lack it")

    img_hw = {im["id"]: (im.get("height"), im.get("width")) for im in images}
    gt_anns = []
    for i, a in enumerate(copy.deepcopy(annotations)):
        a["id"] = i + 1
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            seg = a.get("segmentation")
            if seg:
                h, w = img_hw[a["image_id"]]
                if isinstance(seg, list):  # polygon parts, merged into one mask as pycocotools does
                    seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg["counts"], list):  # uncompressed RLE
                    seg = mask_utils.frPyObjects(seg, h, w)
                a["area"] = float(mask_utils.area(seg))
            else:
                a["area"] = float(a["bbox"][2] * a["bbox"][3])
        gt_anns.append(a)

    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": copy.deepcopy(images), "annotations": gt_anns, "categories": copy.deepcopy(categories)}
        gt.createIndex()
        for t in iou_types:
            dets = copy.deepcopy(detections)
            if t == "segm":
                for d in dets:
                    d.pop("bbox", None)
            ev = COCOeval(gt, gt.loadRes(dets), iouType=t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, v in zip(("AP", "AP50", "AP75"), ev.stats[:3]):
                out[f"{_COCO_PREFIX[t]}_{name}"] = float(v) if v > -1 else float("nan")
    return out
