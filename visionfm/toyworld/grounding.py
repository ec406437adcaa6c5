"""Grounding on toyworld: COCO box AP and mask AP (pycocotools) of the training-free backend with the toy CLIP.

``visionfm eval toyworld-grounding --model toyworld-clip --out runs/toyworld_grounding`` (the ``toyworld_grounding``
eval task). Each scene is queried with every
colour phrase; each visible object is a ground-truth instance of its colour (exact visible-pixel mask, tight box).
The background cosine threshold is tuned per mode on validation scenes, as in :mod:`visionfm.toyworld.seg`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..eval.metrics import coco_detection_ap
from ..foundation.encoder import Encoder
from ..foundation.loading import load_encoder
from ..pipelines.base import pipeline
from .seg import TEMPLATES, class_names, tune_cos_thresh
from .world import ToyWorld

logger = logging.getLogger(__name__)


def coco_ap(gt_scenes: Sequence[Any], predictions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
    """COCO box and mask AP of grounding results against toyworld scenes (category = the object's colour).

    Args:
        gt_scenes: toyworld scenes.
        predictions: one :class:`~visionfm.pipelines.grounding.GroundingResult` per scene, phrases in ``names``
            order.
        names: category names (colours).

    Returns:
        ``{"box_AP", "box_AP50", "mask_AP", "mask_AP50"}`` in [0, 1].
    """
    from pycocotools import mask as mask_utils

    images, anns, dets = [], [], []
    for i, (sc, pred) in enumerate(zip(gt_scenes, predictions)):
        h, w = sc.image.shape[:2]
        images.append({"id": i, "height": h, "width": w})
        for k, o in enumerate(sc.objects):
            rle = mask_utils.encode(np.asfortranarray(sc.masks[k].astype(np.uint8)))
            x0, y0, x1, y1 = (float(v) for v in sc.boxes[k])
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": 1 + list(names).index(o.colour),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(sc.masks[k].sum()), "iscrowd": 0,
                 "segmentation": rle}
            )  # fmt: skip
        for j in range(len(pred)):
            x0, y0, x1, y1 = (float(v) for v in pred.boxes[j])
            rle = mask_utils.encode(np.asfortranarray(pred.masks[j].numpy().astype(np.uint8)))
            dets.append(
                {"image_id": i, "category_id": 1 + int(pred.labels[j]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "score": float(pred.scores[j]), "segmentation": rle}
            )  # fmt: skip
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    ap = coco_detection_ap(images, anns, cats, dets, iou_types=("bbox", "segm"))
    return {k: ap[k] for k in ("box_AP", "box_AP50", "mask_AP", "mask_AP50")}


def run(
    model: str | Encoder = "toyworld-clip",
    *,
    modes: Sequence[str] = ("vanilla", "maskclip", "naclip", "maskclip+pamr"),
    splits: Sequence[str] = ("test", "heldout"),
    num: int = 200,
    num_val: int = 60,
    short_side: int = 192,
    stride: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Box/mask AP per dense mode on toyworld colour phrases (see the module docstring)."""
    enc = model if isinstance(model, Encoder) else load_encoder(model, device="cpu")
    names = class_names("colour")
    mk = dict(min_objects=1, max_objects=2, seed=seed, image_size=64)
    val = [ToyWorld("val", num_val, **mk)[i] for i in range(num_val)]
    data = {s: [ToyWorld(s, num, **mk)[i] for i in range(num)] for s in splits}
    results = []
    for name in modes:
        mode, _, refine = name.partition("+")
        opts = dict(mode=mode, templates=list(TEMPLATES["colour"]), short_side=short_side, stride=stride)
        gr = pipeline("grounding", model=enc, refine=refine or None, **opts)
        th = tune_cos_thresh(gr.seg, val, "colour")
        for split in splits:
            t0 = time.perf_counter()
            preds = [gr(sc.image, phrases=names, threshold=0.0, cos_thresh=th) for sc in data[split]]
            r = coco_ap(data[split], preds, names)
            results.append(dict(mode=name, split=split, cos_thresh=th, seconds=round(time.perf_counter() - t0, 1), **r))
            logger.info("%s %s: box AP %.3f mask AP %.3f", name, split, r["box_AP"], r["mask_AP"])
    protocol = dict(model=model if isinstance(model, str) else enc.info.name, short_side=short_side, stride=stride, templates=list(TEMPLATES["colour"]),
                    phrases=names, num=num, num_val=num_val, seed=seed)  # fmt: skip
    return {"protocol": protocol, "results": results}


def grounding_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """The ``toyworld_grounding`` eval task on the runner's CLIP: :func:`run` with the task's options.

    Task keys (all optional): ``modes`` (``"maskclip+pamr"`` refines), ``splits``, ``num``, ``num_val``,
    ``short_side``, ``stride``, ``seed``. Metrics are ``"<box|mask>_AP[50] <split> <mode>"`` in [0, 1].
    """
    keys = ("modes", "splits", "num", "num_val", "short_side", "stride", "seed")
    report = run(runner.encoder, **{k: task[k] for k in keys if k in task})
    metrics = {f"{m} {r['split']} {r['mode']}": r[m] for r in report["results"]
               for m in ("box_AP", "box_AP50", "mask_AP", "mask_AP50")}  # fmt: skip
    samples = report["protocol"]["num"] * len({r["split"] for r in report["results"]})
    protocol = dict(report["protocol"], model=runner.model_name)
    return {"task": task["task"], "dataset": "toyworld", "metrics": metrics, "samples": samples, "skipped": 0,
            "protocol": protocol, "rows": report["results"]}  # fmt: skip
