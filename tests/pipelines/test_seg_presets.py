"""zero-shot-seg presets: one per method x benchmark, each the method's released config (seg_presets.py)."""

from __future__ import annotations

import pytest
import torch

import visionfm as vfm
from visionfm.data.ovseg import BENCHMARKS as DATASETS
from visionfm.pipelines.seg_presets import (
    BENCHMARKS,
    REFERENCES,
    WITH_BACKGROUND,
    class_entries,
    get_preset,
    preset_names,
)
from visionfm.testing import tiny_checkpoint

METHODS = ("sclip", "clearclip", "naclip", "proxyclip", "corrclip", "trident")

# The configs as the reference repositories ship them (configs/cfg_<benchmark>.py over the segmentor's defaults), read
# at the commits in REFERENCES: (logit_scale, prob_thresh, area_thresh, short_side, window, stride, inference, pamr).
EXPECTED = {
    "sclip": {
        "voc21": (65, 0.1, 0.1, 336, 224, 112, "slide", False),
        "context60": (50, 0.1, None, 336, 224, 112, "slide", False),
        "coco_object": (50, 0.1, None, 336, 224, 112, "slide", False),
        "voc20": (40, 0.0, None, 336, 224, 112, "slide", False),
        "cityscapes": (40, 0.0, None, 560, 224, 112, "slide", False),
        "context59": (40, 0.0, None, 336, 224, 112, "slide", False),
        "ade20k": (40, 0.0, None, 336, 224, 112, "slide", False),
        "coco_stuff": (40, 0.0, None, 448, 224, 112, "slide", False),
    },
    "clearclip": {
        "voc21": (50, 0.5, None, 448, 448, 224, "slide", False),
        "context60": (50, 0.15, None, 448, 448, 224, "slide", False),
        "coco_object": (50, 0.4, None, 448, 448, 224, "slide", False),
        "voc20": (50, 0.0, None, 448, 448, 224, "slide", False),
        "cityscapes": (50, 0.0, None, 448, 224, 224, "slide", False),
        "context59": (50, 0.0, None, 448, 448, 224, "slide", False),
        "ade20k": (50, 0.0, None, 448, 448, 224, "slide", False),
        "coco_stuff": (50, 0.0, None, 448, 448, 224, "slide", False),
    },
    "naclip": {
        "voc21": (40, 0.1, None, 336, 224, 112, "whole", True),
        "context60": (40, 0.1, None, 336, 224, 112, "slide", True),
        "coco_object": (40, 0.1, None, 336, 224, 112, "slide", True),
        "voc20": (40, 0.0, None, 336, 224, 112, "whole", True),
        "cityscapes": (40, 0.0, None, 560, 224, 112, "slide", True),
        "context59": (40, 0.0, None, 336, 224, 112, "slide", True),
        "ade20k": (40, 0.0, None, 336, 224, 112, "slide", True),
        "coco_stuff": (40, 0.0, None, 336, 224, 112, "slide", True),
    },
    "proxyclip": {
        "voc21": (40, 0.2, None, 336, 336, 112, "slide", False),
        "context60": (40, 0.15, None, 336, 336, 112, "slide", False),
        "coco_object": (40, 0.25, None, 336, 336, 112, "slide", False),
        "voc20": (40, 0.0, None, 336, 336, 112, "slide", False),
        "cityscapes": (40, 0.0, None, 448, 224, 112, "slide", False),
        "context59": (40, 0.0, None, 336, 336, 112, "slide", False),
        "ade20k": (40, 0.0, None, 448, 336, 112, "slide", False),
        "coco_stuff": (40, 0.0, None, 336, 336, 112, "slide", False),
    },
    "corrclip": {
        "voc21": (40, 0.2, None, 336, 336, 112, "slide", False),
        "context60": (40, 0.15, None, 336, 336, 112, "slide", False),
        "coco_object": (40, 0.25, None, 336, 336, 112, "slide", False),
        "voc20": (40, 0.0, None, 336, 336, 112, "slide", False),
        "cityscapes": (40, 0.0, None, 448, 224, 112, "slide", False),
        "context59": (40, 0.0, None, 336, 336, 112, "slide", False),
        "ade20k": (40, 0.0, None, 448, 336, 112, "slide", False),
        "coco_stuff": (40, 0.0, None, 336, 336, 112, "slide", False),
    },
    "trident": {  # the pipeline's window / stride are unused by Trident (its own crop 336 / stride 224 options)
        "voc21": (40, 0.2, None, 448, 224, 112, "slide", False),
        "context60": (40, 0.15, None, 576, 224, 112, "slide", False),
        "coco_object": (40, 0.25, None, 448, 224, 112, "slide", False),
        "voc20": (40, 0.0, None, 336, 224, 112, "slide", False),
        "cityscapes": (40, 0.0, None, 688, 224, 112, "slide", False),
        "context59": (40, 0.0, None, 576, 224, 112, "slide", False),
        "ade20k": (40, 0.0, None, 576, 224, 112, "slide", False),
        "coco_stuff": (40, 0.0, None, 448, 224, 112, "slide", False),
    },
}
TRIDENT_COARSE = {"voc21": 0.2, "voc20": 0.2, "context60": 0.15, "context59": 0.15, "coco_object": 0.25,
                  "coco_stuff": 0.05, "cityscapes": 0.10, "ade20k": 0.05}  # fmt: skip


@pytest.fixture(scope="module")
def clip(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("clip-b16", root=tiny_root), device="cpu")


@pytest.fixture(scope="module")
def dino(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("dino", root=tiny_root), device="cpu")


def test_there_is_a_preset_for_every_method_and_benchmark():
    names = preset_names()
    assert len(names) == len(METHODS) * len(BENCHMARKS) == 48
    assert {f"{m}-{b}" for m in METHODS for b in BENCHMARKS} == set(names)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_preset_settings_are_the_reference_configs(clip, dino, method, benchmark):
    p = get_preset(f"{method}-{benchmark}")
    extra = {"proxy": dino} if method == "proxyclip" else {}
    if method == "corrclip":
        extra = {"method_options": {"dino": dino}}
    if method == "trident":  # the preset's own options, with a tiny DINO for the hub name
        extra = {"method_options": {**p.options["method_options"], "dino": dino}}
        assert p.options["method_options"]["coarse_thresh"] == TRIDENT_COARSE[benchmark]
        assert p.options["method_options"]["sam"] == "sam-vit-base"
    seg = vfm.pipeline("zero-shot-seg", model=clip, preset=p.name, **extra)
    scale, prob, area, short, window, stride, inference, pamr = EXPECTED[method][benchmark]
    got = (seg.logit_scale, seg.prob_thresh, seg.area_thresh, seg.short_side, seg.window, seg.stride, seg.inference,
           seg.use_pamr)  # fmt: skip
    assert got == (scale, prob, area, short, window, stride, inference, pamr)
    assert seg.mode == {"sclip": "sclip", "clearclip": "clearclip", "naclip": "naclip", "proxyclip": "proxy",
                        "corrclip": "corrclip", "trident": "trident"}[method]  # fmt: skip
    assert seg.resize == "cv2" and seg.pos_interp == "dino" and seg.max_long_side == 2048
    assert seg.pad_multiple == {"clearclip": 16, "proxyclip": 56, "corrclip": 56}.get(method)
    assert seg.templates == "imagenet80"
    if pamr:
        assert (seg.pamr_steps, seg.pamr_dilations) == (10, (8, 16))
    assert p.reference.startswith(REFERENCES[method]) and p.reference.endswith(".py")
    assert seg.protocol["preset"] == p.name and seg.protocol["reference"] == p.reference


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_preset_classes_match_the_benchmark(method, benchmark):
    """As many classes as the dataset has labels, in label order (class 0 is the background where there is one)."""
    p = get_preset(f"{method}-{benchmark}")
    spec = DATASETS[benchmark]
    has_bg = benchmark in WITH_BACKGROUND
    assert has_bg == spec.has_background
    assert len(p.labels) + int(has_bg) == len(spec.classes)
    assert bool(p.background) == has_bg
    entries = class_entries(method, benchmark)
    assert len(entries) == len(spec.classes)
    if benchmark == "cityscapes":  # the references write "trafficlight"; the dataset "traffic light"
        assert [e[0] for e in entries][:3] == ["road", "sidewalk", "building"]


def test_published_numbers_are_recorded_where_the_repositories_state_them():
    assert get_preset("naclip-voc21").published == 64.07 and get_preset("sclip-ade20k").published == 16.45
    assert get_preset("clearclip-voc20").published == 80.9
    assert get_preset("proxyclip-voc21").published is None  # the README has no table (docs/zero_shot_seg.md)


def test_a_preset_runs_with_its_own_classes_and_options_override_it(clip, photos):
    seg = vfm.pipeline("zero-shot-seg", model=clip, preset="sclip-voc21", templates="single")
    out = seg(photos[1])  # no labels: the benchmark's classes, background words included
    assert out.labels[0] == "background" and len(out.labels) == 21 and out.label_map.shape == photos[1].shape[:2]
    assert out.protocol["background"][:2] == ["sky", "wall"] and out.protocol["area_thresh"] == 0.1
    mine = vfm.pipeline("zero-shot-seg", model=clip, preset="sclip-voc21", logit_scale=10.0, area_thresh=0.0)
    assert mine.logit_scale == 10.0 and mine.area_thresh == 0.0 and mine.prob_thresh == 0.1
    assert vfm.pipeline("zero-shot-seg", model=clip, preset="naclip-voc21", refine=False).use_pamr is False
    other = seg(photos[1], labels=["cat", "sofa"])  # labels of the call replace the preset's, with no background
    assert other.labels == ["background", "cat", "sofa"]  # the preset's prob_thresh still sends pixels to background


def test_coco_object_keeps_a_background_word_that_is_also_a_class(clip, photos):
    """SCLIP's and ProxyCLIP's COCO-Object lists have "bed" among the background words and as a class; the references
    embed both, so the preset takes the list as it is (user labels with a shared text are refused)."""
    seg = vfm.pipeline("zero-shot-seg", model=clip, preset="sclip-coco_object", templates="single", short_side=224)
    out = seg(photos[0])
    assert len(out.labels) == 81 and "bed" in out.labels and "bed" in out.protocol["background"]
    with pytest.raises(ValueError, match="names more than one class"):
        seg(photos[0], labels=["bed", "cat"], background=["bed", "sky"])
    torch.testing.assert_close(out.probs.shape, torch.Size([81, *photos[0].shape[:2]]))
