"""Streaming classification and segmentation metrics: accumulate per batch, combine across processes, compute at
the end. Training validates with them; the eval suites (:mod:`visionfm.eval.metrics`) report them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ClassificationMetric", "SegmentationMetric", "classification_metrics", "target_rank"]


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
