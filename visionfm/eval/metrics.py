"""Metrics, exact and streaming: accumulate per batch, combine across processes, compute at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


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
