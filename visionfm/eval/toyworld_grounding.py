"""Grounding on toyworld: COCO box AP and mask AP (pycocotools) of the training-free backend with the toy CLIP.

``python -m visionfm.eval.toyworld_grounding --out runs/toyworld_grounding``. Each scene is queried with every
colour phrase; each visible object is a ground-truth instance of its colour (exact visible-pixel mask, tight box).
The background cosine threshold is tuned per mode on validation scenes, as in :mod:`visionfm.eval.toyworld_seg`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.toyworld import ToyWorld
from .toyworld_seg import TEMPLATES, class_names, tune_cos_thresh

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

    from .metrics import coco_detection_ap

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
    model: str = "toyworld-clip",
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
    import visionfm as vfm

    enc = vfm.load_encoder(model, device="cpu")
    names = class_names("colour")
    mk = dict(min_objects=1, max_objects=2, seed=seed, image_size=64)
    val = [ToyWorld("val", num_val, **mk)[i] for i in range(num_val)]
    data = {s: [ToyWorld(s, num, **mk)[i] for i in range(num)] for s in splits}
    results = []
    for name in modes:
        mode, _, refine = name.partition("+")
        opts = dict(mode=mode, templates=list(TEMPLATES["colour"]), short_side=short_side, stride=stride)
        gr = vfm.pipeline("grounding", model=enc, refine=refine or None, **opts)
        th = tune_cos_thresh(gr.seg, val, "colour")
        for split in splits:
            t0 = time.perf_counter()
            preds = [gr(sc.image, phrases=names, threshold=0.0, cos_thresh=th) for sc in data[split]]
            r = coco_ap(data[split], preds, names)
            results.append(dict(mode=name, split=split, cos_thresh=th, seconds=round(time.perf_counter() - t0, 1), **r))
            logger.info("%s %s: box AP %.3f mask AP %.3f", name, split, r["box_AP"], r["mask_AP"])
    protocol = dict(model=model, short_side=short_side, stride=stride, templates=list(TEMPLATES["colour"]),
                    phrases=names, num=num, num_val=num_val, seed=seed)  # fmt: skip
    return {"protocol": protocol, "results": results}


def markdown(report: dict[str, Any]) -> str:
    """Markdown table: box/mask AP and AP50 per mode and split (percent)."""
    lines = ["| mode | split | box AP | box AP50 | mask AP | mask AP50 |", "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(
            f"| {r['mode']} | {r['split']} | {100 * r['box_AP']:.1f} | {100 * r['box_AP50']:.1f} | "
            f"{100 * r['mask_AP']:.1f} | {100 * r['mask_AP50']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the evaluation, write JSON and a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toyworld-clip")
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--num-val", type=int, default=60)
    p.add_argument("--modes", default="vanilla,maskclip,naclip,maskclip+pamr", help="modes, '+pamr' to refine")
    p.add_argument("--out", default="runs/toyworld_grounding")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.model, modes=args.modes.split(","), num=args.num, num_val=args.num_val)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "toyworld_grounding.json").write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (out / "toyworld_grounding.md").write_text(table + "\n")
    print(table)  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
