"""zero-shot-seg presets: each method's released configuration for each of the 8 standard benchmarks.

``pipeline("zero-shot-seg", model=..., preset="naclip-voc21")`` sets the dense mode, the protocol (rescale, window,
stride, whole-image inference, padding), the logit scale, the probability / area thresholds, PAMR and the proxy
exactly as that method's ``configs/cfg_<benchmark>.py`` and segmentor defaults do, and takes the benchmark's class
names and background words from the method's ``configs/cls_<benchmark>.txt`` (``seg_classnames.json``). Options passed
to the pipeline override the preset; ``out.protocol`` records the preset and the reference commit.

The reference repositories and commits (each preset's ``reference``):

- SCLIP: github.com/wangf3014/SCLIP @ b56bd3014b9e8a3ee3450bcfc53700a67d627b7a
- ClearCLIP: github.com/mc-lan/ClearCLIP @ ad68a404d55d48d27330b93554eb64a234ff717f
- NACLIP: github.com/sinahmr/NACLIP @ 0cac3a651f753b11315ea799cfbfabf79da1bd76
- ProxyCLIP: github.com/mc-lan/ProxyCLIP @ e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1
- Trident: github.com/YuHengsss/Trident @ a93b346d1b1dc55bc6f547da5b7d361ad449ae44 (Cityscapes is not exact: Trident
  runs SAM on the image's two halves there, visionfm on the whole image)
- CorrCLIP: github.com/zdk258/CorrCLIP @ 6c1fd2c02ff90f071ed744a5998be0cda7ad75b4 (region masks are the caller's:
  ``seg(image, region_masks=[...])``; the paper's are SAM2's, pre-generated)

What the presets cannot reproduce here: the references run in fp16 on CUDA (their ``clip.load`` rounds the weights
to fp16); visionfm runs in the encoder's dtype (``dtype="float16"`` gets close). See ``docs/zero_shot_seg.md``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The benchmarks, in the order of the papers' tables.
BENCHMARKS = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff")
#: Benchmarks whose class 0 is a background class (the threshold writes label 0).
WITH_BACKGROUND = ("voc21", "context60", "coco_object")

REFERENCES = {
    "sclip": "github.com/wangf3014/SCLIP@b56bd3014b9e8a3ee3450bcfc53700a67d627b7a",
    "clearclip": "github.com/mc-lan/ClearCLIP@ad68a404d55d48d27330b93554eb64a234ff717f",
    "naclip": "github.com/sinahmr/NACLIP@0cac3a651f753b11315ea799cfbfabf79da1bd76",
    "proxyclip": "github.com/mc-lan/ProxyCLIP@e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1",
    "corrclip": "github.com/zdk258/CorrCLIP@6c1fd2c02ff90f071ed744a5998be0cda7ad75b4",
    "trident": "github.com/YuHengsss/Trident@a93b346d1b1dc55bc6f547da5b7d361ad449ae44",
}

_CONFIG_NAMES = {"cityscapes": "city_scapes", "coco_stuff": "coco_stuff164k"}


@dataclass(frozen=True)
class Preset:
    """One method's configuration for one benchmark.

    Attributes:
        name: ``"<method>-<benchmark>"``.
        method: ``"sclip"``, ``"clearclip"``, ``"naclip"`` or ``"proxyclip"``.
        benchmark: one of :data:`BENCHMARKS`.
        options: ``ZeroShotSegPipeline`` keyword arguments.
        labels: the benchmark's classes (background excluded), ``"name; synonym; ..."`` strings in label order.
        background: the background texts (class 0) for benchmarks with a background class, else ``False``.
        reference: ``"repo@commit configs/cfg_<benchmark>.py"``.
        published: the method's published mIoU (%) on the benchmark with a ViT-B/16 CLIP, or ``None``.
    """

    name: str
    method: str
    benchmark: str
    options: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    background: tuple[str, ...] | bool = False
    reference: str = ""
    published: float | None = None


@functools.cache
def _classnames() -> dict[str, Any]:
    return json.loads((Path(__file__).with_name("seg_classnames.json")).read_text())


def class_entries(method: str, benchmark: str) -> list[list[str]]:
    """The texts of each class of ``benchmark`` as ``method``'s name file lists them (class 0 first)."""
    data = _classnames()
    if method not in data["use"]:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(data['use'])}")
    if benchmark not in data["use"][method]:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")
    return [list(e) for e in data["lists"][data["use"][method][benchmark]]]


def _method_options(method: str, benchmark: str) -> dict[str, Any]:
    """The pipeline options of ``method``'s config for ``benchmark`` (see docs/zero_shot_seg.md for the sources)."""
    bg = benchmark in WITH_BACKGROUND
    common: dict[str, Any] = {"resize": "cv2", "max_long_side": 2048, "pos_interp": "dino", "templates": "imagenet80"}
    if method == "sclip":  # clip_segmentor.py defaults + configs/cfg_*.py (PAMR is off in every config)
        scale = {"voc21": 65.0, "context60": 50.0, "coco_object": 50.0}
        return {
            **common, "mode": "sclip", "logit_scale": scale.get(benchmark, 40.0), "window": 224, "stride": 112,
            "short_side": {"coco_stuff": 448, "cityscapes": 560}.get(benchmark, 336),
            "prob_thresh": 0.1 if bg else 0.0, "area_thresh": 0.1 if benchmark == "voc21" else None,
        }  # fmt: skip
    if method == "clearclip":  # clearclip_segmentor.py defaults + configs/cfg_*.py, model_type='ClearCLIP'
        thresholds = {"voc21": 0.5, "context60": 0.15, "coco_object": 0.4}
        return {
            **common, "mode": "clearclip", "logit_scale": 50.0, "short_side": 448,
            "window": 224 if benchmark == "cityscapes" else 448, "stride": 224, "pad_multiple": 16,
            "prob_thresh": thresholds.get(benchmark, 0.0),
        }  # fmt: skip
    if method == "naclip":  # naclip.py defaults + configs/cfg_*.py
        return {
            **common, "mode": "naclip", "logit_scale": 40.0, "window": 224, "stride": 112,
            "short_side": 560 if benchmark == "cityscapes" else 336,
            "inference": "whole" if benchmark in ("voc21", "voc20") else "slide",
            "prob_thresh": 0.1 if bg else 0.0, "refine": "pamr", "pamr_steps": 10, "pamr_dilations": (8, 16),
        }  # fmt: skip
    if method == "proxyclip":  # proxyclip_segmentor.py defaults + configs/cfg_*.py
        thresholds = {"voc21": 0.2, "context60": 0.15, "coco_object": 0.25}
        return {
            **common, "mode": "proxy", "proxy": "facebook/dino-vitb8", "proxy_grid": True, "logit_scale": 40.0,
            "window": 224 if benchmark == "cityscapes" else 336, "stride": 112,
            "short_side": 448 if benchmark in ("cityscapes", "ade20k") else 336, "pad_multiple": 56,
            "prob_thresh": thresholds.get(benchmark, 0.0),
        }  # fmt: skip
    if method == "corrclip":  # corrclip_segmentor.py defaults + configs/cfg_*.py (CLIP: MetaCLIP ViT-B/16 fullcc)
        thresholds = {"voc21": 0.2, "context60": 0.15, "coco_object": 0.25}
        return {
            **common, "mode": "corrclip", "method_options": {"dino": "dino-vitb8"}, "logit_scale": 40.0,
            "window": 224 if benchmark == "cityscapes" else 336, "stride": 112,
            "short_side": 448 if benchmark in ("cityscapes", "ade20k") else 336, "pad_multiple": 56,
            "prob_thresh": thresholds.get(benchmark, 0.0),
        }  # fmt: skip
    if method == "trident":  # configs/base_config.py + cfg_*.py, --sam_refine as in every evaluation script
        short = {"voc20": 336, "context60": 576, "context59": 576, "cityscapes": 688, "ade20k": 576}.get(benchmark, 448)
        thresholds = {"voc21": 0.2, "context60": 0.15, "coco_object": 0.25}
        coarse = {"voc21": 0.2, "voc20": 0.2, "context60": 0.15, "context59": 0.15, "coco_object": 0.25,
                  "coco_stuff": 0.05, "cityscapes": 0.10, "ade20k": 0.05}  # fmt: skip
        options: dict[str, Any] = {"dino": "dino-vitb16", "sam": "sam-vit-base", "coarse_thresh": coarse[benchmark]}
        if benchmark == "voc20":
            options.update(stride=112, cos_fac=0.0)
        if benchmark == "cityscapes":
            options.update(cos_fac=3.0, refine_neg_cos=False)
        if benchmark == "ade20k":
            options.update(refine_neg_cos=False)
        return {
            **common, "mode": "trident", "method_options": options, "logit_scale": 40.0, "short_side": short,
            "prob_thresh": thresholds.get(benchmark, 0.0),
        }  # fmt: skip
    raise ValueError(f"no presets for method {method!r} yet")


_PUBLISHED = {  # mIoU (%) with OpenAI ViT-B/16, from each repository's README at the commit above
    "sclip": {"voc21": 59.63, "context60": 31.74, "coco_object": 33.52, "voc20": 81.54, "cityscapes": 32.34,
              "context59": 34.46, "ade20k": 16.45, "coco_stuff": 22.77},
    "clearclip": {"voc20": 80.9, "context59": 35.9, "coco_stuff": 23.9, "cityscapes": 30.0, "ade20k": 16.7},
    "corrclip": {"voc21": 74.8, "context60": 44.2, "coco_object": 43.7, "voc20": 88.8, "cityscapes": 49.4,
                 "context59": 48.8, "ade20k": 26.9, "coco_stuff": 31.6},  # MetaCLIP B/16 + SAM2 (32 points) masks
    "trident": {"voc21": 70.8, "voc20": 88.7, "context59": 44.3, "coco_stuff": 28.6, "cityscapes": 47.6,
                "ade20k": 26.7},  # the paper (CLIP B/16, DINO B/16, SAM B); its Context60 / COCO-Object split is unread
    "naclip": {"voc21": 64.07, "context60": 34.99, "coco_object": 36.19, "voc20": 83.03, "cityscapes": 38.27,
               "context59": 38.35, "ade20k": 19.05, "coco_stuff": 25.69},  # with PAMR (the repo's default)
}  # fmt: skip


def get_preset(name: str) -> Preset:
    """The preset ``"<method>-<benchmark>"`` (e.g. ``"naclip-voc21"``); a ValueError lists the valid names."""
    if not isinstance(name, str) or name not in preset_names():
        raise ValueError(f"unknown zero-shot-seg preset {name!r}; choose from {', '.join(preset_names())}")
    method, benchmark = name.split("-", 1)
    entries = class_entries(method, benchmark)
    background: tuple[str, ...] | bool = False
    if benchmark in WITH_BACKGROUND:
        background, entries = tuple(entries[0]), entries[1:]
    labels = tuple("; ".join(e) for e in entries)
    ref = f"{REFERENCES[method]} configs/cfg_{_CONFIG_NAMES.get(benchmark, benchmark)}.py"
    return Preset(name, method, benchmark, _method_options(method, benchmark), labels, background, ref,
                  _PUBLISHED.get(method, {}).get(benchmark))  # fmt: skip


@functools.cache
def preset_names() -> tuple[str, ...]:
    """All preset names, ``"<method>-<benchmark>"``, methods in :data:`REFERENCES` order."""
    out = []
    for method in REFERENCES:
        try:
            _method_options(method, BENCHMARKS[0])
        except ValueError:
            continue
        out += [f"{method}-{b}" for b in BENCHMARKS]
    return tuple(out)
