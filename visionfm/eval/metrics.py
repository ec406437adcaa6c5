"""Metrics, exact and streaming: accumulate per batch, combine across processes, compute at the end."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any

import torch

from ..training.metrics import (  # noqa: F401  (re-exported: the eval suites report them)
    ClassificationMetric,
    SegmentationMetric,
    _check_logits_targets,
    classification_metrics,
    target_rank,
)

logger = logging.getLogger(__name__)


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
    miss at every ``k``, also ``k > M``, with a warning). Ties are ranked lowest index first (:func:`target_rank`),
    so equal similarities never make the result depend on ``torch.topk``'s order. Rows are processed
    ``batch_size`` at a time.

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
        i2t_rank.append(target_rank(sim, best))  # meaningless for an image without text: masked below
    i2t = torch.cat(i2t_rank)

    out: dict[str, float | int] = {}
    for k in ks:  # an image without text is a miss at every k, even k > M (no rank sentinel can guarantee that)
        out[f"image_to_text_R@{k}"] = float(((i2t < k) & has_text).double().mean())
    for k in ks:
        out[f"text_to_image_R@{k}"] = float((t2i_rank < k).double().mean())
    out["images"], out["texts"] = n, m
    return out


# ----------------------------------------------------------------------------------------------------------------------
# COCO detection / instance segmentation
# ----------------------------------------------------------------------------------------------------------------------

_COCO_PREFIX = {"bbox": "box", "segm": "mask"}


def _compressed_rle(seg: list[list[float]] | dict[str, Any], h: int | None, w: int | None) -> dict[str, Any]:
    """A COCO segmentation as compressed RLE, converted exactly as pycocotools' ``COCO.annToRLE`` does.

    Args:
        seg: polygon parts ``[[x0, y0, x1, y1, ...], ...]`` (pixels; merged into one mask), or RLE
            ``{"size": [h, w], "counts"}`` with ``counts`` a list (uncompressed) or a ``str`` / ``bytes`` (compressed).
        h: image height in pixels (needed for polygons and uncompressed RLE).
        w: image width in pixels.

    Returns:
        ``{"size": [h, w], "counts": bytes | str}``; compressed RLE input is returned as is.
    """
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygon parts, merged into one mask as pycocotools does
        if h is None or w is None:
            raise ValueError("polygon segmentations need the image's height and width in `images`")
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):  # uncompressed RLE: its own size is used, h and w are ignored
        return mask_utils.frPyObjects(seg, *seg["size"])
    return seg


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
    area (detectron2's convention; areas only matter for the small/medium/large breakdown, not the values returned),
    and their polygon or uncompressed-RLE masks are converted to compressed RLE the way pycocotools converts them
    (``COCO.annToRLE``), so every accepted format scores exactly as pycocotools scores it. pycocotools' console output
    is silenced. Undefined values (no ground truth) are nan where pycocotools says -1.

    Args:
        images: ``[{"id", "height", "width", ...}]``.
        annotations: ``[{"image_id", "category_id", "bbox", "segmentation"?, "iscrowd"?, "area"?}]``.
        categories: ``[{"id", "name"?, ...}]``.
        detections: ``[{"image_id", "category_id", "score", "bbox"?, "segmentation"?}]``, segmentations in any of
            the formats above (polygons need the image's ``height`` and ``width``).
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
                a["area"] = float(mask_utils.area(_compressed_rle(seg, *img_hw[a["image_id"]])))
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
            if t == "segm":  # loadRes takes the mask branch only without a bbox, and that branch needs compressed RLE
                for d in dets:
                    d.pop("bbox", None)
                    h, w = img_hw.get(d["image_id"], (None, None))
                    d["segmentation"] = _compressed_rle(d["segmentation"], h, w)
            ev = COCOeval(gt, gt.loadRes(dets), iouType=t)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, v in zip(("AP", "AP50", "AP75"), ev.stats[:3]):
                out[f"{_COCO_PREFIX[t]}_{name}"] = float(v) if v > -1 else float("nan")
    return out
