"""Metrics against sklearn and torchmetrics on random cases."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
import pytest
import torch

from visionfm.eval.metrics import (
    ClassificationMetric,
    SegmentationMetric,
    classification_metrics,
    coco_detection_ap,
    knn_classify,
    retrieval_metrics,
)

pytestmark = pytest.mark.usefixtures("one_thread")


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


# ----------------------------------------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------------------------------------


def _random_case(seed: int, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``[N, K]`` logits and ``[N]`` targets; some classes absent from the targets; integer logits when ``ties``."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 13))
    n = int(rng.integers(20, 200))
    present = rng.choice(k, size=max(1, k - int(rng.integers(0, 3))), replace=False)
    targets = rng.choice(present, size=n)
    logits = rng.integers(-2, 3, (n, k)).astype(np.float32) if ties else rng.normal(size=(n, k)).astype(np.float32)
    return torch.from_numpy(logits), torch.from_numpy(targets).long(), k


def _stable_topk_hits(logits: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Reference tie rule: descending sort, stable in class index (lowest index first among equal scores)."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (order == targets[:, None]).any(1)


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_match_sklearn_and_torchmetrics(seed):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, top_k_accuracy_score
    from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

    logits, targets, k = _random_case(seed)
    got = classification_metrics(logits, targets)
    assert got["samples"] == len(targets)
    assert ("acc5" in got) == (k >= 5)
    y, s = targets.numpy(), logits.numpy()
    assert got["acc1"] == pytest.approx(accuracy_score(y, s.argmax(1)), abs=1e-12)
    acc1_tm = MulticlassAccuracy(num_classes=k, top_k=1, average="micro")(logits, targets)
    assert got["acc1"] == pytest.approx(float(acc1_tm), abs=1e-6)
    if k > 5:
        assert got["acc5"] == pytest.approx(top_k_accuracy_score(y, s, k=5, labels=range(k)), abs=1e-12)
        acc5_tm = MulticlassAccuracy(num_classes=k, top_k=5, average="micro")(logits, targets)
        assert got["acc5"] == pytest.approx(float(acc5_tm), abs=1e-6)
    elif k == 5:
        assert got["acc5"] == 1.0
    present = np.unique(y)
    pred = s.argmax(1)
    with pytest.warns(UserWarning) if len(present) < k and set(pred) - set(present) else contextlib.nullcontext():
        balanced = balanced_accuracy_score(y, pred)
    assert got["mean_per_class_recall"] == pytest.approx(balanced, abs=1e-12)
    assert got["mean_per_class_recall"] == pytest.approx(
        recall_score(y, pred, labels=present, average="macro", zero_division=0), abs=1e-12
    )
    per_class_tm = MulticlassRecall(num_classes=k, average="none")(logits, targets).numpy()
    assert got["mean_per_class_recall"] == pytest.approx(float(per_class_tm[present].mean()), abs=1e-6)
    m = ClassificationMetric(k)
    m.update(logits, targets)
    rec = np.asarray(m.per_class_recall)
    assert np.isnan(rec[np.setdiff1d(np.arange(k), present)]).all()
    np.testing.assert_allclose(rec[present], per_class_tm[present], atol=1e-6)
    from sklearn.metrics import confusion_matrix

    np.testing.assert_array_equal(m.confusion, confusion_matrix(y, pred, labels=range(k)))


@pytest.mark.parametrize("seed", range(4))
def test_topk_ties_lowest_class_index_first(seed):
    from sklearn.metrics import top_k_accuracy_score
    from torchmetrics.classification import MulticlassAccuracy

    logits, targets, k = _random_case(seed, ties=True)
    s, y = logits.numpy(), targets.numpy()
    ks = tuple(range(1, k + 1))
    got = classification_metrics(logits, targets, topk=ks)
    for kk in ks:
        want = _stable_topk_hits(s, y, kk).mean()
        assert got[f"acc{kk}"] == pytest.approx(want, abs=1e-12), kk
        if 1 < kk < k and k > 2:  # sklearn puts the *highest* index first among ties: mirror the classes
            mirrored = top_k_accuracy_score(k - 1 - y, s[:, ::-1], k=kk, labels=range(k))
            assert got[f"acc{kk}"] == pytest.approx(mirrored, abs=1e-12), kk
    # top-1 is argmax (first maximum), as in torchmetrics (which uses argmax for top_k=1)
    assert got["acc1"] == pytest.approx(float(MulticlassAccuracy(num_classes=k, average="micro")(logits, targets)))
    assert got[f"acc{k}"] == 1.0


def test_tie_rule_is_not_topk_order():
    logits = torch.zeros(4, 6)
    targets = torch.tensor([0, 1, 4, 5])
    got = classification_metrics(logits, targets, topk=(1, 2, 5))
    assert got == {"acc1": 0.25, "acc2": 0.5, "acc5": 0.75, "mean_per_class_recall": 0.25, "samples": 4}


@pytest.mark.parametrize("seed", range(3))
def test_classification_streaming_merge_equals_one_pass(seed):
    logits, targets, k = _random_case(seed + 10, ties=seed == 2)
    one = ClassificationMetric(k, topk=(1, 3, 5))
    one.update(logits, targets)
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(targets)), 2, replace=False))
    shards = []
    for lo, hi in zip([0, *cuts], [*cuts, len(targets)]):
        m = ClassificationMetric(k, topk=(1, 3, 5))
        m.update(logits[lo:hi], targets[lo:hi])
        shards.append(m)
    shards[0].merge(shards[1])
    shards[0].merge(shards[2])
    assert shards[0].compute() == one.compute()
    assert np.array_equal(shards[0].confusion, one.confusion)
    assert shards[0].compute() == classification_metrics(logits, targets, topk=(1, 3, 5))
    assert one.correct[1] == int(np.trace(one.confusion))


def test_classification_errors_and_empty():
    m = ClassificationMetric(3)
    assert m.topk == (1,)
    out = m.compute()
    assert out["samples"] == 0 and np.isnan(out["acc1"]) and np.isnan(out["mean_per_class_recall"])
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="classes"):
        m.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="nan"):
        m.update(torch.tensor([[float("nan"), 0.0, 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="merge"):
        m.merge(ClassificationMetric(3, topk=(1, 2)))


# ----------------------------------------------------------------------------------------------------------------------
# k-NN
# ----------------------------------------------------------------------------------------------------------------------


def _knn_reference(train, labels, queries, num_classes, k, t):
    """DINO's eval_knn.py, one query at a time: cosine top-k (lowest index first on ties), votes exp(sim / T)."""
    train = np.asarray(train, dtype=np.float64)
    queries = np.asarray(queries, dtype=np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = np.zeros((len(queries), num_classes))
    for i, q in enumerate(queries):
        sim = train @ (q / np.linalg.norm(q))
        for j in np.argsort(-sim, kind="stable")[:k]:
            out[i, labels[j]] += np.exp(sim[j] / t)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_knn_matches_dino_reference(seed):
    rng = np.random.default_rng(seed)
    n, m, d, c = int(rng.integers(50, 300)), int(rng.integers(1, 60)), int(rng.integers(2, 33)), int(rng.integers(2, 9))
    k, t = int(rng.integers(1, 30)), float(rng.choice([0.07, 0.1, 0.5]))
    train = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))  # scale must not matter
    labels = rng.integers(0, c, n)
    queries = rng.normal(size=(m, d))
    want = _knn_reference(train, labels, queries, c, k, t)
    args = (torch.from_numpy(labels), torch.from_numpy(queries))
    got = knn_classify(torch.from_numpy(train), *args, num_classes=c, k=k, temperature=t, batch_size=7)
    assert got.shape == (m, c) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    again = knn_classify(torch.from_numpy(train), *args, num_classes=c, k=k, temperature=t, batch_size=7)
    assert torch.equal(got, again)
    got32 = knn_classify(torch.from_numpy(train).float(), *args, num_classes=c, k=k, temperature=t)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=1e-4)


def test_knn_boundary_ties_take_lowest_index():
    rng = np.random.default_rng(0)
    d, copies = 6, 10
    train = np.tile(np.eye(d), (copies, 1))  # every basis vector 10 times: equal similarities, exactly
    labels = rng.integers(0, 4, len(train))
    queries = np.abs(rng.normal(size=(40, d)))
    sims = queries @ train.T
    srt = -np.sort(-sims, axis=1)
    k = 15
    assert (srt[:, k - 1] == srt[:, k]).all()  # the k-th neighbour is always cut out of a tie
    want = _knn_reference(train, labels, queries, 4, k, 0.07)
    got = knn_classify(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(queries), num_classes=4, k=k)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    highest_first = _knn_reference(train[::-1], labels[::-1], queries, 4, k, 0.07)
    assert not np.allclose(highest_first, want)  # the rule matters on this case


def test_knn_agrees_with_sklearn_weighted_neighbours():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(3)
    train, labels, queries = rng.normal(size=(200, 8)), rng.integers(0, 5, 200), rng.normal(size=(30, 8))
    t, k = 0.1, 12
    sk = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda dist: np.exp((1 - dist) / t)
    )
    proba = sk.fit(train, labels).predict_proba(queries)
    got = knn_classify(
        torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(queries), num_classes=5, k=k, temperature=t
    )
    np.testing.assert_allclose((got / got.sum(1, keepdim=True)).numpy(), proba, rtol=1e-8, atol=1e-12)


def test_knn_k_larger_than_train_and_errors():
    train, labels, queries = torch.randn(5, 3), torch.tensor([0, 1, 1, 2, 2]), torch.randn(4, 3)
    got = knn_classify(train, labels, queries, num_classes=3, k=50, temperature=1.0)  # k clamped to 5
    want = _knn_reference(train.numpy(), labels.numpy(), queries.numpy(), 3, 5, 1.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        knn_classify(train, labels, torch.randn(4, 3), num_classes=2)
    with pytest.raises(ValueError, match="features"):
        knn_classify(train, labels, torch.randn(4, 2), num_classes=3)


# ----------------------------------------------------------------------------------------------------------------------
# retrieval
# ----------------------------------------------------------------------------------------------------------------------


def _retrieval_reference(img, txt, t2i, ks):
    """Brute force: sort each row (stable, lowest index first on ties) and look at the first k entries."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = img @ txt.T
    out = {}
    for k in ks:
        hits = [any(t2i[j] == i for j in np.argsort(-sim[i], kind="stable")[:k]) for i in range(len(img))]
        out[f"image_to_text_R@{k}"] = float(np.mean(hits))
    for k in ks:
        hits = [t2i[j] in np.argsort(-sim[:, j], kind="stable")[:k] for j in range(len(txt))]
        out[f"text_to_image_R@{k}"] = float(np.mean(hits))
    out["images"], out["texts"] = len(img), len(txt)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, per = int(rng.integers(10, 60)), int(rng.integers(4, 32)), 5
    img = rng.normal(size=(n, d))
    t2i = rng.permutation(np.repeat(np.arange(n), per))  # 5 captions per image, shuffled
    txt = img[t2i] + rng.normal(scale=float(rng.uniform(0.5, 3)), size=(n * per, d))
    ks = (1, 5, 10)
    got = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(t2i), ks=ks, batch_size=9)
    want = _retrieval_reference(img, txt, t2i, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert 0 < got["text_to_image_R@1"] < 1  # a non-trivial case
    got32 = retrieval_metrics(torch.from_numpy(img).float(), torch.from_numpy(txt).half(), torch.from_numpy(t2i))
    assert got32["images"] == n and got32["texts"] == n * per


def test_retrieval_ties_and_images_without_text(caplog):
    img = np.eye(4)[[0, 0, 1, 2]]  # images 0 and 1 identical: exact ties
    txt = np.eye(4)[[0, 1, 0, 2]]
    t2i = np.array([1, 2, 0, 3])  # image 3 has text 3 only; no image is left out yet
    got = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(t2i), ks=(1, 2))
    want = _retrieval_reference(img, txt, t2i, (1, 2))
    assert got == pytest.approx(want)
    assert got["text_to_image_R@1"] == 0.75  # text 0 ties images 0 and 1, its image (1) loses; text 2's (0) wins
    t2i = np.array([1, 2, 1, 3])  # image 0 has no text: a miss
    with caplog.at_level(logging.WARNING, logger="visionfm.eval.metrics"):
        got = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(t2i), ks=(1, 4))
    assert "no text" in caplog.text
    assert got == pytest.approx(_retrieval_reference(img, txt, t2i, (1, 4)))
    assert got["image_to_text_R@4"] == 0.75
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.tensor([0, 1, 2, 4]))


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_k_beyond_the_texts_with_captionless_images_matches_brute_force(seed):
    """An image without captions is a miss at every k, also when k exceeds the number of texts."""
    rng = np.random.default_rng(100 + seed)
    n, d = int(rng.integers(2, 15)), int(rng.integers(3, 12))
    owners = rng.choice(n, size=int(rng.integers(1, n)), replace=False)  # at least one image has no caption
    m = int(rng.integers(1, 2 * n))
    t2i = rng.choice(owners, size=m)
    img = rng.normal(size=(n, d))
    txt = img[t2i] + rng.normal(scale=float(rng.uniform(0.3, 2)), size=(m, d))
    ks = tuple(sorted({1, 2, m, m + 1, n, n + 3, 3 * (m + n)}))  # several k > m (and > n)
    got = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(t2i), ks=ks, batch_size=4)
    want = _retrieval_reference(img, txt, t2i, ks)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got[f"image_to_text_R@{3 * (m + n)}"] == len(set(t2i.tolist())) / n  # exactly the captioned images
    assert got[f"text_to_image_R@{3 * (m + n)}"] == 1.0


def test_retrieval_two_images_one_text():
    img, txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.1]])
    got = retrieval_metrics(img, txt, torch.tensor([0]), ks=(1, 5))
    assert got["image_to_text_R@5"] == 0.5 and got["image_to_text_R@1"] == 0.5  # image 1 has no text: a miss
    assert got["text_to_image_R@1"] == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------------------------------


def _rle(mask: np.ndarray, as_str: bool) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode() if as_str else rle["counts"]}


def _coco_case(seed: int, as_str: bool = False):
    """Random images, ellipse-ish masks with their boxes as ground truth, and jittered plus spurious detections."""
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    images = [{"id": i + 1, "height": h, "width": w} for i in range(6)]
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5)]
    yy, xx = np.mgrid[:h, :w]

    def blob(cx, cy, rx, ry):
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        ys, xs = np.nonzero(m)
        return m, [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]

    anns, dets = [], []
    for im in images:
        for _ in range(int(rng.integers(1, 5))):
            cat = int(rng.choice([1, 2, 5]))
            cx, cy = rng.uniform(10, w - 10), rng.uniform(10, h - 10)
            rx, ry = rng.uniform(3, 12), rng.uniform(3, 10)
            m, box = blob(cx, cy, rx, ry)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cat, "bbox": box,
                         "segmentation": _rle(m, as_str), "area": float(m.sum()), "iscrowd": 0})  # fmt: skip
            if rng.random() < 0.8:
                dm, dbox = blob(
                    cx + rng.normal(0, 2), cy + rng.normal(0, 2), rx * rng.uniform(0.7, 1.3), ry * rng.uniform(0.7, 1.3)
                )
                dets.append({"image_id": im["id"], "category_id": cat, "bbox": dbox, "segmentation": _rle(dm, as_str),
                             "score": float(rng.uniform(0.2, 1))})  # fmt: skip
        for _ in range(int(rng.integers(0, 3))):  # false positives
            dm, dbox = blob(rng.uniform(8, w - 8), rng.uniform(8, h - 8), rng.uniform(3, 8), rng.uniform(3, 8))
            dets.append({"image_id": im["id"], "category_id": int(rng.choice([1, 2, 5])), "bbox": dbox,
                         "segmentation": _rle(dm, as_str), "score": float(rng.uniform(0, 0.9))})  # fmt: skip
    return images, anns, categories, dets


def _pycocotools_direct(images, anns, categories, dets, iou_type, drop_bbox=True):
    """pycocotools' COCO and COCOeval used directly; ``drop_bbox=False`` keeps the detections' boxes for ``"segm"``
    (loadRes then takes its box branch, and COCOeval converts polygon and uncompressed-RLE masks itself)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy({"images": images, "annotations": anns, "categories": categories})
        gt.createIndex()
        dets = copy.deepcopy(dets)
        if iou_type == "segm" and drop_bbox:
            for d in dets:
                d.pop("bbox")
        ev = COCOeval(gt, gt.loadRes(dets), iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:3]


@pytest.mark.parametrize("seed", range(3))
def test_coco_ap_matches_pycocotools(seed, capsys):
    images, anns, cats, dets = _coco_case(seed, as_str=seed == 1)
    before = copy.deepcopy((images, anns, cats, dets))
    got = coco_detection_ap(images, anns, cats, dets)
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    assert (images, anns, cats, dets) == before  # inputs untouched
    box = _pycocotools_direct(images, anns, cats, dets, "bbox")
    mask = _pycocotools_direct(images, anns, cats, dets, "segm")
    assert [got["box_AP"], got["box_AP50"], got["box_AP75"]] == [float(v) for v in box]
    assert [got["mask_AP"], got["mask_AP50"], got["mask_AP75"]] == [float(v) for v in mask]
    assert 0 < got["box_AP"] < 1 and 0 < got["mask_AP"] < 1
    # missing iscrowd / area / ids are filled in exactly as COCO defines them
    bare = [{k: v for k, v in a.items() if k not in ("id", "area", "iscrowd")} for a in anns]
    assert coco_detection_ap(images, bare, cats, dets) == got
    # str and bytes RLE counts give the same numbers
    _, anns_s, _, dets_s = _coco_case(seed, as_str=seed != 1)
    assert coco_detection_ap(images, anns_s, cats, dets_s) == got
    assert coco_detection_ap(images, anns, cats, dets, iou_types=("bbox",)).keys() == {"box_AP", "box_AP50", "box_AP75"}


def test_coco_ap_perfect_and_empty():
    images, anns, cats, _ = _coco_case(7)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 1.0} for a in anns]  # fmt: skip
    got = coco_detection_ap(images, anns, cats, perfect)
    assert got == dict.fromkeys(["box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"], 1.0)
    assert coco_detection_ap(images, anns, cats, []) == dict.fromkeys(got, 0.0)
    assert coco_detection_ap(images, anns, cats, [], iou_types=("segm",)) == {
        "mask_AP": 0.0,
        "mask_AP50": 0.0,
        "mask_AP75": 0.0,
    }
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in perfect]
    with pytest.raises(ValueError, match="segmentation"):
        coco_detection_ap(images, anns, cats, boxes_only)
    with pytest.raises(ValueError, match="iou_types"):
        coco_detection_ap(images, anns, cats, perfect, iou_types=("keypoints",))


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a binary ``[H, W]`` mask: run lengths of the column-major flattening, zeros first."""
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def _ellipse_polygon(box: list[float], parts: int) -> list[list[float]]:
    """A COCO polygon segmentation: the ellipse inscribed in an XYWH box, as ``parts`` polygons (halves if 2)."""
    x, y, w, h = box
    out = []
    for p in range(parts):
        t = np.linspace(2 * np.pi * p / parts, 2 * np.pi * (p + 1) / parts, 14)
        ring = np.stack([x + w / 2 * (1 + np.cos(t)), y + h / 2 * (1 + np.sin(t))], 1)
        if parts > 1:
            ring = np.concatenate([[[x + w / 2, y + h / 2]], ring])  # a pie slice
        out.append([float(v) for v in ring.ravel()])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_coco_mask_ap_polygon_and_uncompressed_rle_detections_match_pycocotools(seed):
    from pycocotools import mask as mask_utils

    images, anns, cats, dets = _coco_case(seed)
    h, w = images[0]["height"], images[0]["width"]
    mixed = copy.deepcopy(dets)
    for i, d in enumerate(mixed):  # polygons (1 or 2 parts), uncompressed RLE, and compressed RLE, interleaved
        kind = (i + seed) % 4
        if kind == 0:
            d["segmentation"] = _ellipse_polygon(d["bbox"], 1 + i % 2)
        elif kind in (1, 2):
            mask = mask_utils.decode(d["segmentation"])
            d["segmentation"] = _uncompressed_rle(mask)
            assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(d["segmentation"], h, w)), mask)
    polygons = [dict(d, segmentation=_ellipse_polygon(d["bbox"], 1)) for d in dets]
    for case in (mixed, polygons):
        before = copy.deepcopy(case)
        got = coco_detection_ap(images, anns, cats, case)
        assert case == before  # inputs untouched
        want = _pycocotools_direct(images, anns, cats, case, "segm", drop_bbox=False)
        assert [got["mask_AP"], got["mask_AP50"], got["mask_AP75"]] == [float(v) for v in want]
        assert 0 < got["mask_AP"] < 1
        box = _pycocotools_direct(images, anns, cats, case, "bbox")
        assert [got["box_AP"], got["box_AP50"], got["box_AP75"]] == [float(v) for v in box]
        # the same masks as compressed RLE, pycocotools' own conversion: the same numbers
        compressed = []
        for d in case:
            seg = d["segmentation"]
            if isinstance(seg, list):
                seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):
                seg = mask_utils.frPyObjects(seg, h, w)
            compressed.append(dict(d, segmentation=seg))
        assert coco_detection_ap(images, anns, cats, compressed) == got
        assert [got["mask_AP"], got["mask_AP50"], got["mask_AP75"]] == [
            float(v) for v in _pycocotools_direct(images, anns, cats, compressed, "segm")
        ]
    with pytest.raises(ValueError, match="height and width"):  # polygons need the image size
        coco_detection_ap([{"id": im["id"]} for im in images], anns, cats, polygons, iou_types=("segm",))
