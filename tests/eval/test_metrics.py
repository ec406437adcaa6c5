"""Metrics against sklearn and torchmetrics on random cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionfm.eval.metrics import SegmentationMetric


@pytest.mark.parametrize("seed", range(5))
def test_segmentation_metric_matches_sklearn_and_torchmetrics(seed):
    from sklearn.metrics import confusion_matrix, jaccard_score
    from torchmetrics.functional.segmentation import mean_iou

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    preds = [rng.integers(0, k, (int(rng.integers(5, 30)), 17)) for _ in range(4)]
    targets = [rng.integers(0, k, p.shape) for p in preds]
    for t in targets:  # some ignored pixels
        t[rng.random(t.shape) < 0.1] = 255
    m = SegmentationMetric(k)
    for p, t in zip(preds, targets):
        m.update(torch.from_numpy(p), t)
    got = m.compute()
    p_all = np.concatenate([p.ravel() for p in preds])
    t_all = np.concatenate([t.ravel() for t in targets])
    keep = t_all != 255
    np.testing.assert_array_equal(m.confusion, confusion_matrix(t_all[keep], p_all[keep], labels=range(k)))
    want_iou = jaccard_score(t_all[keep], p_all[keep], labels=range(k), average=None, zero_division=0)
    present = np.isfinite(got["IoU"])  # sklearn says 0 where a class occurs nowhere; we say nan
    np.testing.assert_allclose(np.asarray(got["IoU"])[present], want_iou[present], atol=1e-12)
    assert got["aAcc"] == pytest.approx(float((p_all[keep] == t_all[keep]).mean()))
    # torchmetrics on one stacked batch (no ignore index there: compare on the kept pixels as one "image")
    tm = mean_iou(
        torch.from_numpy(p_all[keep])[None, None],
        torch.from_numpy(t_all[keep])[None, None],
        num_classes=k,
        include_background=True,
        per_class=True,
        input_format="index",
    )
    np.testing.assert_allclose(np.asarray(got["IoU"])[present], tm[0].numpy()[present], atol=1e-6)
    assert got["mIoU"] == pytest.approx(float(want_iou[present].mean()))


def test_merge_equals_one_pass_and_errors():
    rng = np.random.default_rng(0)
    p, t = rng.integers(0, 3, (2, 50, 50)), rng.integers(0, 3, (2, 50, 50))
    a, b, both = SegmentationMetric(3), SegmentationMetric(3), SegmentationMetric(3)
    a.update(p[0], t[0])
    b.update(p[1], t[1])
    both.update(p, t)
    a.merge(b)
    assert np.array_equal(a.confusion, both.confusion)
    with pytest.raises(ValueError, match="outside"):
        a.update(np.array([5]), np.array([1]))
    with pytest.raises(ValueError, match="differ in size"):
        a.update(np.zeros(3), np.zeros(4))
