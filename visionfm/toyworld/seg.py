"""Zero-shot segmentation on toyworld: mIoU of each dense-CLIP mode with the toy CLIP trained from scratch.

``visionfm eval toyworld-seg --model toyworld-clip --out runs/toyworld_seg`` (the ``toyworld_seg`` eval task; suite
defaults: every mode, colour and shape labels, 200 test + 200 held-out scenes, threshold tuned on 60 validation
scenes). The targets are
toyworld's exact visible-pixel masks: class 0 is background, classes ``1..K`` the object's colour (or shape).

Background: the toy CLIP never read a caption about the background, so background pixels are the ones whose best
cosine similarity to any label is below ``cos_thresh``; the threshold is chosen per mode on the validation split
(never on the scenes reported) and recorded with the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..foundation.encoder import Encoder
from ..foundation.loading import load_encoder
from ..pipelines.base import pipeline
from ..training.metrics import SegmentationMetric
from .world import COLOURS, SHAPES, Scene, ToyWorld

logger = logging.getLogger(__name__)

TEMPLATES = {
    "colour": ("something {}", "a {} object", "a {} shape"),
    "shape": ("a {}", "a photo of a {}", "a medium {}"),
}
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(13))  # 0.0 .. 0.6


def class_names(kind: str) -> list[str]:
    """Label names for ``kind`` (``"colour"`` or ``"shape"``), in class order 1..K."""
    if kind not in TEMPLATES:
        raise ValueError(f"kind must be 'colour' or 'shape', got {kind!r}")
    return list(COLOURS) if kind == "colour" else list(SHAPES)


def target_map(scene: Scene, kind: str) -> np.ndarray:
    """int64 ``[H, W]``: 0 background, ``1 + index`` of the visible object's colour/shape."""
    names = class_names(kind)
    out = np.zeros(scene.image.shape[:2], dtype=np.int64)
    for k, o in enumerate(scene.objects):
        out[scene.masks[k]] = 1 + names.index(o.colour if kind == "colour" else o.shape)
    return out


def tune_cos_thresh(seg: Any, scenes: Sequence[Scene], kind: str, grid: Sequence[float] = THRESHOLDS) -> float:
    """The background cosine threshold with the best mIoU on ``scenes`` (dense scores computed once per scene)."""
    names = class_names(kind)
    weights, _ = seg.text_weights([[n] for n in names])
    metrics = {t: SegmentationMetric(len(names) + 1) for t in grid}
    for sc in scenes:
        pixels = torch.from_numpy(sc.image).permute(2, 0, 1)
        best, lab = seg.scores(pixels, weights).max(0)  # cosine maps at the scene's size
        tgt = target_map(sc, kind)
        for t in grid:
            metrics[t].update(torch.where(best < t, 0, lab + 1), tgt)
    scores = {t: m.compute()["mIoU"] for t, m in metrics.items()}
    return max(scores, key=scores.get)


def evaluate(seg: Any, scenes: Sequence[Scene], kind: str, cos_thresh: float) -> dict[str, Any]:
    """mIoU / pixel accuracy of the pipeline ``seg`` on ``scenes`` with background below ``cos_thresh``."""
    names = class_names(kind)
    m = SegmentationMetric(len(names) + 1)
    for sc in scenes:
        r = seg(sc.image, labels=names, background=True, cos_thresh=cos_thresh)
        m.update(r.label_map, target_map(sc, kind))
    out = m.compute()
    out["classes"] = ["background", *names]
    out["images"] = len(scenes)
    return out


def run(
    model: str | Encoder = "toyworld-clip",
    *,
    modes: Sequence[str] = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "proxy"),
    kinds: Sequence[str] = ("colour", "shape"),
    splits: Sequence[str] = ("test", "heldout"),
    num: int = 200,
    num_val: int = 60,
    short_side: int = 192,
    window: int | None = None,
    stride: int = 16,
    proxy: str | None = None,
    pamr: bool = True,
    sam: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate every mode (and the best mode with PAMR refinement) on toyworld scenes.

    Args:
        model: a CLIP encoder, or a name the loader accepts (default: the toy CLIP the demo trains).
        modes: dense modes to compare.
        kinds: label sets, ``"colour"`` and/or ``"shape"``.
        splits: toyworld splits to report (``"heldout"`` uses only never-seen colour-shape pairs).
        num: scenes per reported split; ``num_val``: validation scenes for the threshold.
        short_side, window, stride: the sliding-window protocol (window default: the model's input size).
        proxy: proxy encoder for ``mode="proxy"`` (default: ``toyworld-ssl``, the toy self-supervised encoder the
            demo trains; ``toyworld-random-dinov2``, a tiny random DINOv2, is the untrained baseline).
        pamr: also report the best mode with PAMR refinement.
        sam: a SAM model (e.g. ``toyworld-sam``): also report the best mode refined by its automatic masks.
        seed: toyworld seed.

    Returns:
        ``{"protocol": ..., "results": [{mode, kind, split, refine, cos_thresh, mIoU, aAcc, IoU, ...}]}``.
    """
    enc = model if isinstance(model, Encoder) else load_encoder(model, device="cpu")
    if "proxy" in modes and proxy is None:
        proxy = "toyworld-ssl"
    mk = dict(min_objects=1, max_objects=2, seed=seed, image_size=64)
    val = [ToyWorld("val", num_val, **mk)[i] for i in range(num_val)]
    data = {s: [ToyWorld(s, num, **mk)[i] for i in range(num)] for s in splits}
    results = []
    for kind in kinds:
        best: tuple[float, str, float] | None = None
        for mode in modes:
            seg = pipeline(
                "zero-shot-seg", model=enc, mode=mode, proxy=proxy if mode == "proxy" else None,
                templates=list(TEMPLATES[kind]), short_side=short_side, window=window, stride=stride,
            )  # fmt: skip
            t0 = time.perf_counter()
            th = tune_cos_thresh(seg, val, kind)
            for split in splits:
                r = evaluate(seg, data[split], kind, th)
                results.append(dict(mode=mode, kind=kind, split=split, refine=None, cos_thresh=th, **r))
                logger.info("%s %s %s: mIoU %.3f (cos_thresh %.2f)", kind, mode, split, r["mIoU"], th)
                if split == splits[0] and (best is None or r["mIoU"] > best[0]):
                    best = (r["mIoU"], mode, th)
            results[-1]["seconds"] = round(time.perf_counter() - t0, 1)
        refiners = (["pamr"] if pamr else []) + ([sam] if sam else [])
        for refine in refiners if best is not None else []:
            _, mode, th = best
            seg = pipeline(
                "zero-shot-seg", model=enc, mode=mode, proxy=proxy if mode == "proxy" else None, refine=refine,
                templates=list(TEMPLATES[kind]), short_side=short_side, window=window, stride=stride,
            )  # fmt: skip
            name = "pamr" if refine == "pamr" else "sam"
            for split in splits:
                r = evaluate(seg, data[split], kind, th)
                results.append(dict(mode=mode, kind=kind, split=split, refine=name, cos_thresh=th, **r))
    protocol = dict(
        model=model if isinstance(model, str) else enc.info.name, short_side=short_side, window=window or enc.info.image_size[0], stride=stride,
        logit_scale=40.0, templates={k: list(TEMPLATES[k]) for k in kinds}, num=num, num_val=num_val,
        proxy=proxy, sam=sam, seed=seed, thresholds=list(THRESHOLDS),
    )  # fmt: skip
    return {"protocol": protocol, "results": results}


def _order(mode: str) -> int:
    order = ("vanilla", "maskclip", "sclip", "clearclip", "naclip", "proxy")
    return order.index(mode) if mode in order else len(order)


def seg_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """The ``toyworld_seg`` eval task on the runner's CLIP: :func:`run` with the task's options.

    Task keys (all optional): ``modes``, ``kinds``, ``splits``, ``num``, ``num_val``, ``short_side``, ``window``,
    ``stride``, ``proxy``, ``pamr``, ``sam``, ``seed``. Metrics are ``"mIoU <kind> <split> <mode>[+pamr|+sam]"`` in
    [0, 1]; the per-class IoU, thresholds and timings are in ``rows``.
    """
    keys = ("modes", "kinds", "splits", "num", "num_val", "short_side", "window", "stride", "proxy", "pamr", "sam",
            "seed")  # fmt: skip
    opts = {k: task[k] for k in keys if k in task}
    report = run(runner.encoder, **opts)
    rows = sorted(
        report["results"], key=lambda r: (r["kind"], r["split"] != "test", r["refine"] or "", _order(r["mode"]))
    )
    metrics = {f"mIoU {r['kind']} {r['split']} {r['mode']}{'+' + r['refine'] if r['refine'] else ''}": r["mIoU"]
               for r in rows}  # fmt: skip
    samples = sum({(r["kind"], r["split"]): r["images"] for r in rows}.values())
    protocol = dict(report["protocol"], model=runner.model_name)
    return {"task": task["task"], "dataset": "toyworld", "metrics": metrics, "samples": samples, "skipped": 0,
            "protocol": protocol, "rows": rows}  # fmt: skip
