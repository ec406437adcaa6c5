"""Suite tasks: each turns a runner's (cached, gathered) per-sample rows into metrics.

Every task returns ``{"task", "dataset", "metrics": {...}, "samples", "skipped", "protocol", ...}``; classification
tasks add ``per_class`` (names, recall) and ``confusion`` (rows = true class); segmentation adds per-class IoU.
A task whose data has no readable sample raises :class:`UnusableDataError`, which the runner records as the
task's ``"error"`` while the other tasks still run.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .keys import task_key as _task_key
from .registry import get_task, register_task

logger = logging.getLogger(__name__)


class UnusableDataError(ValueError):
    """A task's dataset has nothing to score (no samples, or none readable). The message names task and dataset.

    Attributes:
        dataset: the suite name of the unusable dataset.
        skipped: how many of its samples were unreadable.
    """

    def __init__(self, message: str, dataset: str, skipped: int = 0) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.skipped = skipped


def _readable(runner: Any, task: dict[str, Any], dataset: str, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """``rows["valid"]``; raises :class:`UnusableDataError` when not one sample of ``dataset`` could be read."""
    valid = rows.get("valid")
    if valid is not None and bool(valid.any()):
        return valid
    n = 0 if valid is None else len(valid)
    detail = "has no samples"
    if n:
        detail = f"has no readable sample (all {n} failed to load"
        try:
            first = runner.dataset(dataset)[0]["error"]
            detail += f"; the first: {first})" if first else ")"
        except Exception:  # noqa: BLE001 - the hint is optional
            detail += ")"
    raise UnusableDataError(f"task {task['name']!r} ({task['task']}): dataset {dataset!r} {detail}", dataset, n)


def run_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """Dispatch ``task["task"]`` to its registered implementation (:mod:`visionfm.eval.registry`)."""
    return get_task(task["task"]).fn(runner, task)


def _classification_result(
    task: dict[str, Any],
    dataset: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    n: int,
    skipped: int,
) -> dict[str, Any]:
    from .metrics import ClassificationMetric

    bad = (labels < 0) | (labels >= len(names))
    if bad.any():
        raise ValueError(f"task {task['name']}: {int(bad.sum())} labels outside 0..{len(names) - 1} ({names[:5]}...)")
    m = ClassificationMetric(len(names))
    m.update(logits, labels)
    metrics = m.compute()
    samples = int(metrics.pop("samples", len(labels)))
    return {
        "task": task["task"],
        "dataset": dataset,
        "metrics": metrics,
        "samples": samples,
        "skipped": skipped,
        "per_class": {"names": names, "recall": [None if np.isnan(r) else float(r) for r in m.per_class_recall]},
        "confusion": m.confusion.tolist(),
    }


def _names(runner: Any, task: dict[str, Any], dataset: str) -> list[str]:
    names = task.get("classnames") or runner.dataset(dataset).classnames
    if not names:
        raise ValueError(f"task {task['name']}: dataset {dataset!r} has no class names; give 'classnames'")
    return list(names)


@register_task("zero_shot_classification", datasets=("dataset",), description="prompt-ensemble zero-shot accuracy")
def zero_shot_classification(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{dataset, templates (set name, list or {label: prompts}; default: the dataset's ``templates``, else
    "imagenet80"), classnames}``:
    acc1, acc5, mean per-class recall of the prompt-ensemble classifier."""
    from ..foundation.zero_shot import class_logits, text_classifier

    name = task["dataset"]
    names = _names(runner, task, name)
    feats = runner.features(name)
    valid = _readable(runner, task, name, feats)
    templates = task.get("templates", runner.suite.datasets[name].get("templates", "imagenet80"))
    with torch.inference_mode():
        weights = text_classifier(runner.encoder, names, templates)
        logits = class_logits(runner.encoder, feats["pooled"][valid].to(runner.encoder.device), weights).cpu()
    res = _classification_result(task, name, logits, feats["label"][valid], names, len(valid), int((~valid).sum()))
    res["protocol"] = {"templates": templates if isinstance(templates, str) else list(templates) if not isinstance(
        templates, dict) else templates, "logit_scale": float(getattr(runner.encoder, "logit_scale", 100.0))}  # fmt: skip
    return res


@register_task(
    "linear_probe",
    datasets=("train", "val", "test"),
    optional=("val",),
    description="logistic regression on frozen features",
)
def linear_probe(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{train, val (optional), test, weight_decays, epochs, seed (0)}``: logistic regression on frozen pooled
    features (cached), regularisation chosen on val, retrained on train+val, scored on test.

    Without ``val``, validation is a stratified, seeded split of train (:func:`visionfm.eval.probe.train_val_split`):
    20% of each class's readable samples, chosen by ``seed``, so val holds every class the fit sees whatever the
    dataset order (an imagefolder is sorted by class), and the same split every run."""
    from . import probe as _probe

    tr = runner.features(task["train"])
    tr_valid = _readable(runner, task, task["train"], tr)
    te = runner.features(task["test"])
    te_valid = _readable(runner, task, task["test"], te)
    names = _names(runner, task, task["test"])
    trx, try_ = tr["pooled"][tr_valid], tr["label"][tr_valid]
    seed = int(task.get("seed", 0))
    if task.get("val"):
        va = runner.features(task["val"])
        va_valid = _readable(runner, task, task["val"], va)
        vax, vay = va["pooled"][va_valid], va["label"][va_valid]
        val_desc = task["val"]
    else:
        fit_idx, val_idx = _probe.train_val_split(try_, 0.2, seed=seed)
        if not len(val_idx):
            raise UnusableDataError(f"task {task['name']!r} (linear_probe): dataset {task['train']!r} has no class "
                                    "with 2 readable samples to hold out for validation; give 'val'", task["train"])  # fmt: skip
        trx, vax, try_, vay = trx[fit_idx], trx[val_idx], try_[fit_idx], try_[val_idx]
        val_desc = f"stratified 20% of train per class (seed {seed})"
    kw = {k: task[k] for k in ("weight_decays", "epochs", "seed") if k in task}
    if "weight_decays" in kw:
        kw["weight_decays"] = tuple(float(w) for w in kw["weight_decays"])
    tex, tey = te["pooled"][te_valid], te["label"][te_valid]
    out = _probe.linear_probe(trx, try_, vax, vay, tex, tey, num_classes=len(names), **kw)
    metrics = {k: out[k] for k in ("acc1", "acc5", "mean_per_class_recall") if k in out}
    return {
        "task": "linear_probe",
        "dataset": task["test"],
        "metrics": metrics,
        "samples": int(out.get("test_samples", int(te["valid"].sum()))),
        "skipped": int((~te["valid"]).sum() + (~tr["valid"]).sum()),
        "protocol": {"train": task["train"], "val": val_desc,
                     "chosen_weight_decay": out.get("chosen_weight_decay"), "val_acc1": out.get("val_acc1")},
    }  # fmt: skip


@register_task("knn", datasets=("train", "test"), description="weighted kNN on frozen features")
def knn(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{train, test, k (20), temperature (0.07)}``: DINO's weighted kNN on L2-normalised pooled features."""
    from .metrics import knn_classify

    tr = runner.features(task["train"])
    _readable(runner, task, task["train"], tr)
    te = runner.features(task["test"])
    _readable(runner, task, task["test"], te)
    names = _names(runner, task, task["test"])
    k, temp = int(task.get("k", 20)), float(task.get("temperature", 0.07))
    scores = knn_classify(tr["pooled"][tr["valid"]], tr["label"][tr["valid"]], te["pooled"][te["valid"]],
                          num_classes=len(names), k=k, temperature=temp)  # fmt: skip
    res = _classification_result(task, task["test"], scores, te["label"][te["valid"]], names, len(te["valid"]),
                                 int((~te["valid"]).sum()))  # fmt: skip
    res["protocol"] = {"train": task["train"], "k": k, "temperature": temp}
    return res


@register_task("retrieval", datasets=("dataset",), description="image-text retrieval R@k")
def retrieval(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{dataset, captions_per_image (5)}``: image→text and text→image recall@1/5/10 over the dataset's
    captions (the first ``captions_per_image`` of each image)."""
    from .metrics import retrieval_metrics

    name = task["dataset"]
    cpi = int(task.get("captions_per_image", 5))
    enc = runner.encoder
    if not enc.info.has_text:
        raise TypeError(f"task {task['name']}: retrieval needs a text-capable model, {enc.info.name!r} has none")

    def fn(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        img = enc.encode([s["image"] for s in samples], batch_size=runner.batch_size, progress=False).pooled.float()
        texts, mask = [], torch.zeros(len(samples), cpi, dtype=torch.bool)
        for i, s in enumerate(samples):
            caps = list(s["captions"])[:cpi]
            mask[i, : len(caps)] = True
            texts += caps + [""] * (cpi - len(caps))
        txt = enc.encode_text(texts).float().reshape(len(samples), cpi, -1)
        return {"image": img.cpu(), "text": txt.cpu(), "text_mask": mask}

    rows = runner.map_chunks(f"retrieval/{runner.fingerprint[:16]}/{runner._dataset_key(name)}-{cpi}",
                             runner.dataset(name), fn, f"retrieval {name}")  # fmt: skip
    valid = _readable(runner, task, name, rows)
    img, txt, mask = rows["image"][valid], rows["text"][valid], rows["text_mask"][valid]
    owner = torch.arange(len(img))[:, None].expand_as(mask)[mask]
    metrics = retrieval_metrics(img, txt[mask], owner)
    return {
        "task": "retrieval",
        "dataset": name,
        "metrics": {k: v for k, v in metrics.items() if "@" in k},
        "samples": int(valid.sum()),
        "texts": int(mask.sum()),
        "skipped": int((~valid).sum()),
        "protocol": {"captions_per_image": cpi},
    }


#: zero-shot-seg options a segmentation task may set (each passed to the pipeline as is)
SEG_OPTIONS = ("mode", "templates", "short_side", "max_long_side", "resize", "inference", "window", "stride",
               "pad_multiple", "pos_interp", "logit_scale", "prob_thresh", "cos_thresh", "area_thresh", "refine",
               "pamr_steps", "pamr_dilations", "proxy", "proxy_grid")  # fmt: skip


@register_task("segmentation", datasets=("dataset",), description="zero-shot segmentation mIoU")
def segmentation(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{dataset, method | preset, and any zero-shot-seg option (mode, templates, short_side, window, stride,
    logit_scale, prob_thresh, cos_thresh, area_thresh, refine, ...)}``: zero-shot-seg mIoU / aAcc / mAcc.

    On a benchmark of the ``ovseg`` source, ``method: naclip`` runs the preset ``naclip-<benchmark>`` (or ``preset:``
    names one) with that method's class names and background words; without a preset the dataset's class names are
    the labels, and on benchmarks whose class 0 is the background (VOC21, Context60, COCO-Object) class 0 is predicted
    as background. Targets' 255 is ignored. On other datasets targets are label maps with 0 = background and the
    task's (or dataset's) class names for 1..K.
    """
    from ..pipelines.seg_methods import seg_backends
    from ..pipelines.zero_shot_seg import ZeroShotSegPipeline
    from .metrics import SegmentationMetric

    name = task["dataset"]
    ds = runner.dataset(name)
    bench = getattr(ds, "benchmark", None)
    preset = task.get("preset")
    if task.get("method") is not None:
        if bench is None:
            raise ValueError(f"task {task['name']}: 'method' needs an ovseg benchmark dataset, {name!r} is not one")
        if preset is not None:
            raise ValueError(f"task {task['name']}: give 'method' or 'preset', not both")
        preset = f"{task['method']}-{bench.name}"
    opts = {k: task[k] for k in SEG_OPTIONS if k in task}
    # a model family with its own zero-shot-seg backend (SAM 3) takes the same labels, presets and background
    factory = seg_backends().get(runner.encoder.info.family, ZeroShotSegPipeline)
    if factory is not ZeroShotSegPipeline:
        clip_only = sorted(set(opts) - {"prob_thresh"})
        if clip_only:
            raise ValueError(f"task {task['name']}: options {clip_only} are CLIP zero-shot-seg options; the "
                             f"{runner.encoder.info.family} backend takes labels, presets and prob_thresh only")  # fmt: skip
    seg = factory(runner.encoder, batch_size=runner.batch_size, preset=preset, **opts)
    if bench is not None and preset is not None:
        if seg.preset.benchmark != bench.name:
            raise ValueError(f"task {task['name']}: preset {preset!r} is for {seg.preset.benchmark}, "
                             f"dataset {name!r} is {bench.name}")  # fmt: skip
        call: dict[str, Any] = {}  # the preset's classes and background words, in the benchmark's label order
        k, names = len(bench.classes), list(bench.classes)
    elif bench is not None:
        names = list(task.get("classnames") or bench.classes)
        k = len(names)
        call = {"labels": names[1:], "background": True} if bench.has_background else {"labels": names}
    else:
        names = ["background", *_names(runner, task, name)]
        k = len(names)
        call = {"labels": names[1:], "background": True}

    def fn(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = torch.zeros(len(samples), k, k, dtype=torch.long)
        for i, s in enumerate(samples):
            if s["target"] is None:
                raise ValueError(f"task {task['name']}: sample {s['id']} has no segmentation target")
            pred = seg._run([s["image"]], **call)[0].label_map
            m = SegmentationMetric(k)
            m.update(pred, np.asarray(s["target"]))
            out[i] = torch.from_numpy(m.confusion)
        return {"confusion": out}

    rows = runner.map_chunks(f"segmentation/{runner.fingerprint[:16]}/{runner._dataset_key(name)}-{_task_key(task)}",
                             ds, fn, f"segmentation {name}")  # fmt: skip
    valid = _readable(runner, task, name, rows)
    metric = SegmentationMetric(k)
    metric.confusion = rows["confusion"][valid].sum(0).numpy().astype(np.int64)
    out = metric.compute()
    iou = out.pop("IoU")
    pixels = out.pop("pixels")
    result = {
        "task": "segmentation",
        "dataset": name,
        "metrics": out,
        "samples": int(valid.sum()),
        "pixels": pixels,
        "skipped": int((~valid).sum()),
        "per_class": {"names": names, "iou": [None if np.isnan(v) else v for v in iou]},
        "protocol": seg.protocol,
    }
    if bench is not None:
        result["benchmark"] = bench.name
        own_backend = factory is not ZeroShotSegPipeline  # SAM 3: the preset gave only its labels
        result["method"] = seg.mode if own_backend or seg.preset is None else seg.preset.method
    return result


@register_task("detection", datasets=("dataset",), description="grounding COCO box / mask AP")
def detection(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """``{dataset (COCO source), phrases (default: the category names), threshold, max_detections (100), and
    grounding options (mode, templates, cos_thresh, refine, ...)}``: COCO box AP of ``pipeline("grounding")``."""
    from ..pipelines.grounding import GroundingPipeline
    from .metrics import coco_detection_ap

    name = task["dataset"]
    ds = runner.dataset(name)
    if not hasattr(ds, "coco"):
        raise ValueError(f"task {task['name']}: detection needs a COCO dataset (source: coco), {name!r} is not")
    phrases = list(task.get("phrases") or ds.classnames)
    max_det = int(task.get("max_detections", 100))
    opts = {k: task[k] for k in ("mode", "templates", "short_side", "window", "stride", "refine", "nms_thresh",
                                 "min_area") if k in task}  # fmt: skip
    gr = GroundingPipeline(runner.encoder, batch_size=runner.batch_size, **opts)
    thr, cos = float(task.get("threshold", 0.0)), task.get("cos_thresh")

    def fn(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        boxes = torch.zeros(len(samples), max_det, 4)
        scores = torch.full((len(samples), max_det), -1.0)
        labels = torch.zeros(len(samples), max_det, dtype=torch.long)
        for i, s in enumerate(samples):
            r = gr._run([s["image"]], phrases, threshold=thr, cos_thresh=cos)[0]
            n = min(len(r), max_det)
            boxes[i, :n], scores[i, :n], labels[i, :n] = r.boxes[:n], r.scores[:n], r.labels[:n]
        return {"boxes": boxes, "scores": scores, "labels": labels}

    rows = runner.map_chunks(f"detection/{runner.fingerprint[:16]}/{runner._dataset_key(name)}-{_task_key(task)}",
                             ds, fn, f"detection {name}")  # fmt: skip
    valid = _readable(runner, task, name, rows)
    cat_ids = [c["id"] for c in ds.categories]
    images = [ds.coco["images"][i] for i in rows["index"][valid].tolist()]
    keep_ids = {im["id"] for im in images}
    anns = [a for a in ds.coco["annotations"] if a["image_id"] in keep_ids]
    dets = []
    for row, im in zip(torch.nonzero(valid)[:, 0].tolist(), images):
        for b, s, lab in zip(rows["boxes"][row], rows["scores"][row], rows["labels"][row]):
            if s >= 0:
                x0, y0, x1, y1 = (float(v) for v in b)
                dets.append({"image_id": im["id"], "category_id": cat_ids[int(lab)], "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "score": float(s)})  # fmt: skip
    metrics = coco_detection_ap(images, anns, ds.categories, dets, iou_types=("bbox",))
    return {"task": "detection", "dataset": name, "metrics": metrics, "samples": int(valid.sum()),
            "skipped": int((~valid).sum()), "protocol": dict(gr.protocol, phrases=phrases, threshold=thr)}  # fmt: skip
