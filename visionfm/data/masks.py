"""Binary-mask utilities shared by datasets, pipelines and evaluation: COCO RLE and mask boxes."""

from __future__ import annotations

from typing import Any

import numpy as np


def mask_to_rle(mask: Any) -> dict[str, Any]:
    """Encode a mask as COCO *uncompressed* RLE.

    Args:
        mask: ``[H, W]`` array; non-zero means foreground.

    Returns:
        ``{"size": [H, W], "counts": [...]}`` with run lengths over the column-major (Fortran-order) flattening,
        starting with a (possibly zero) run of background. Readable by ``pycocotools.mask.frPyObjects``.

    >>> mask_to_rle(np.array([[0, 1], [0, 1]]))
    {'size': [2, 2], 'counts': [2, 2]}
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {m.shape}")
    flat = m.ravel(order="F").astype(bool)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed COCO RLE (as written by :func:`mask_to_rle`) to a bool ``[H, W]`` mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h}*{w}={h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def masks_to_boxes(masks: Any) -> np.ndarray:
    """Tight xyxy boxes of bool masks, vectorised.

    Args:
        masks: ``[N, H, W]`` array (numpy or anything ``np.asarray`` takes); non-zero is foreground.

    Returns:
        float32 ``[N, 4]``: ``x1, y1`` the first foreground column/row, ``x2, y2`` the last plus one; all zeros
        for an empty mask.

    >>> masks_to_boxes(np.array([[[0, 0, 0], [0, 1, 1]]])).tolist()
    [[1.0, 1.0, 3.0, 2.0]]
    """
    m = np.asarray(masks).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got shape {m.shape}")
    n, h, w = m.shape
    rows, cols = m.any(axis=2), m.any(axis=1)  # [N, H], [N, W]
    boxes = np.stack(
        [cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], axis=1
    ).astype(np.float32)
    boxes[~rows.any(1)] = 0.0
    return boxes
