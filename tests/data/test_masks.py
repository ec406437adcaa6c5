"""Shared mask utilities against the reference implementations (torchvision, pycocotools)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import masks_to_boxes as tv_masks_to_boxes

from visionfm.data.masks import mask_to_rle, masks_to_boxes, rle_to_mask


def _random_masks(n=12, h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        masks[i, y0 : rng.integers(y0 + 1, h + 1), x0 : rng.integers(x0 + 1, w + 1)] = True
        masks[i] &= rng.random((h, w)) > 0.3  # holes, so the box is not just the drawn rectangle
        masks[i, y0, x0] = True
    return masks


def test_boxes_match_torchvision():
    masks = _random_masks()
    ref = tv_masks_to_boxes(torch.from_numpy(masks)).numpy() + np.array([0, 0, 1, 1], np.float32)  # tv: inclusive max
    np.testing.assert_array_equal(masks_to_boxes(masks), ref)


def test_empty_mask_box_is_zero_and_shape_checked():
    masks = np.zeros((2, 5, 6), bool)
    masks[1, 4, 5] = True
    assert masks_to_boxes(masks).tolist() == [[0, 0, 0, 0], [5, 4, 6, 5]]
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        masks_to_boxes(np.zeros((5, 6)))


def test_rle_matches_pycocotools_and_roundtrips():
    for m in _random_masks(n=5, seed=1):
        rle = mask_to_rle(m)
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))
        np.testing.assert_array_equal(decoded.astype(bool), m)
        np.testing.assert_array_equal(rle_to_mask(rle), m)
