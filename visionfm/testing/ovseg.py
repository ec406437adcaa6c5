"""Tiny fake copies of the 8 open-vocabulary segmentation benchmarks, each in its real on-disk layout.

The layouts are written out literally here (not derived from :mod:`visionfm.data.ovseg`), so a test that reads these
files through the ``ovseg`` source checks the reader against an independent statement of each layout. Besides the
files the reader must pick, each layout holds the neighbours a real copy has (other splits, VOC images outside the
split file, COCO-Stuff's raw ``<id>.png`` next to ``<id>_labelTrainIds.png``, Cityscapes' ``*_gtFine_labelIds.png``),
which hold out-of-range values so that reading the wrong file shows.

This module defines no tiny checkpoint writer; :func:`visionfm.testing.tiny_checkpoint`'s discovery imports it
harmlessly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: benchmark -> (largest raw class value in the label PNG, whether 255 = ignore occurs in real files)
_RAW = {
    "voc21": (20, True),  # SegmentationClass: 0 = background, 255 = object boundaries / difficult
    "voc20": (20, True),
    "context60": (59, False),  # mmseg's converter writes 0..59
    "context59": (59, False),
    "coco_object": (80, False),  # SCLIP's cvt_coco_object.py maps stuff and unlabeled (255) to 0
    "coco_stuff": (170, True),
    "cityscapes": (18, True),
    "ade20k": (150, False),  # 0 = other
}
_CITIES = ("munster", "frankfurt", "lindau")  # written in this order; the reader sorts


def fake_benchmark_names() -> list[str]:
    """The benchmarks :func:`write_fake_benchmark` writes."""
    return list(_RAW)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (``VOCdevkit``'s ``labelcolormap``) as a flat 768-long PIL palette."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _labels(rng: np.random.Generator, h: int, w: int, top: int, ignore: bool) -> np.ndarray:
    """uint8 ``[h, w]`` with values in ``0..top`` (all of 0, 1 and ``top`` present) and 255 where ``ignore``."""
    lab = rng.integers(0, top + 1, size=(h, w), dtype=np.uint8)
    lab.flat[:3] = (0, 1, top)
    if ignore:
        lab.flat[3] = 255
        lab[rng.random((h, w)) < 0.1] = 255
    return lab


def _image(rng: np.random.Generator, h: int, w: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, quality=90)


def _png(lab: np.ndarray, path: Path, palette: list[int] | None = None) -> None:
    """Save uint8 ``[H, W]`` as a grayscale PNG, or a palette PNG whose indices are ``lab`` (VOC's format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(lab, dtype=np.uint8))
    if palette is not None:
        im.putpalette(palette)  # "L" -> "P", the pixel values become palette indices
    im.save(path)


def write_fake_benchmark(benchmark: str, root: str | Path, num: int = 3, seed: int = 0) -> Path:
    """Write a tiny random copy of ``benchmark`` in its real layout under ``root``.

    ========================  ==============================================================================
    benchmark                 written under ``root``
    ========================  ==============================================================================
    voc21, voc20              ``VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png (palette PNG,
                              0..20 + 255), ImageSets/Segmentation/{val,train}.txt}``
    context60, context59      ``VOCdevkit/VOC2010/{JPEGImages/*.jpg, SegmentationClassContext/*.png (0..59),
                              ImageSets/SegmentationContext/{val,train}.txt}``
    coco_stuff                ``images/{val,train}2017/<id>.jpg``, ``annotations/val2017/<id>_labelTrainIds.png``
                              (0..170 + 255) and the raw ``<id>.png``
    coco_object               as coco_stuff plus ``annotations/val2017/<id>_instanceTrainIds.png`` (0..80)
    cityscapes                ``leftImg8bit/{val,train}/<city>/<city>_000000_<frame>_leftImg8bit.png``,
                              ``gtFine/val/<city>/..._gtFine_{labelTrainIds,labelIds,color}.png`` (+ polygons json)
    ade20k                    ``ADEChallengeData2016/{images,annotations}/{validation,training}/ADE_*`` (0..150)
    ========================  ==============================================================================

    Sample ``i`` is ``16 + 2 i`` pixels high and ``24 + 3 i`` wide (images and labels alike). VOC and Context
    ``val.txt`` list the samples in an order that is not sorted (the split file's order is the benchmark's).

    Args:
        benchmark: one of :func:`fake_benchmark_names`.
        root: directory to write into (created).
        num: number of ``val`` samples.
        seed: seed of the random pixels and labels.

    Returns:
        The dataset root in mmseg's sense (``data_root``): ``root/VOCdevkit/VOC2012`` for VOC,
        ``root/VOCdevkit/VOC2010`` for Context, ``root/ADEChallengeData2016`` for ADE20K, else ``root``.

    Raises:
        ValueError: unknown ``benchmark``.
    """
    if benchmark not in _RAW:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {fake_benchmark_names()}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    top, ignore = _RAW[benchmark]
    sizes = [(16 + 2 * i, 24 + 3 * i) for i in range(num)]
    if benchmark in ("voc21", "voc20", "context60", "context59"):
        voc = benchmark.startswith("voc")
        base = root / "VOCdevkit" / ("VOC2012" if voc else "VOC2010")
        ann_dir = base / ("SegmentationClass" if voc else "SegmentationClassContext")
        sets = base / "ImageSets" / ("Segmentation" if voc else "SegmentationContext")
        val = [f"2008_{900 - 7 * i:06d}" for i in range(num)]  # descending: not the sorted order
        train = [f"2007_{i + 1:06d}" for i in range(2)]
        for names, split_sizes in ((val, sizes), (train, [(20, 20)] * len(train))):
            for name, (h, w) in zip(names, split_sizes):
                _image(rng, h, w, base / "JPEGImages" / f"{name}.jpg")
                _png(_labels(rng, h, w, top, ignore), ann_dir / f"{name}.png", voc_palette() if voc else None)
        _image(rng, 12, 12, base / "JPEGImages" / "2009_000001.jpg")  # in no split (VOC has 17k images, 1449 in val)
        sets.mkdir(parents=True, exist_ok=True)
        (sets / "val.txt").write_text("".join(f"{n}\n" for n in val))
        (sets / "train.txt").write_text("".join(f"{n}\n" for n in train))
        return base
    if benchmark in ("coco_stuff", "coco_object"):
        ids = [f"{139 + 1000 * (num - i):012d}" for i in range(num)]  # written in descending order
        for name, (h, w) in zip(ids, sizes):
            _image(rng, h, w, root / "images" / "val2017" / f"{name}.jpg")
            ann = root / "annotations" / "val2017"
            _png(np.full((h, w), 181, np.uint8), ann / f"{name}.png")  # raw stuffthingmaps ids (0..181, 255)
            if benchmark == "coco_object":
                _png(np.full((h, w), 170, np.uint8), ann / f"{name}_labelTrainIds.png")
                _png(_labels(rng, h, w, top, ignore), ann / f"{name}_instanceTrainIds.png")
            else:
                _png(_labels(rng, h, w, top, ignore), ann / f"{name}_labelTrainIds.png")
        _image(rng, 12, 12, root / "images" / "train2017" / f"{1:012d}.jpg")
        return root
    if benchmark == "cityscapes":
        for i, (h, w) in enumerate(sizes):
            city = _CITIES[i % len(_CITIES)]
            stem = f"{city}_000000_{19 * (num - i):06d}"
            _image(rng, h, w, root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
            gt = root / "gtFine" / "val" / city
            _png(_labels(rng, h, w, top, ignore), gt / f"{stem}_gtFine_labelTrainIds.png")
            _png(np.full((h, w), 33, np.uint8), gt / f"{stem}_gtFine_labelIds.png")
            _image(rng, h, w, gt / f"{stem}_gtFine_color.png")
            (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": h, "imgWidth": w, "objects": []}))
        _image(rng, 12, 12, root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
        return root
    base = root / "ADEChallengeData2016"  # ade20k
    for i, (h, w) in enumerate(sizes):
        name = f"ADE_val_{num - i:08d}"
        _image(rng, h, w, base / "images" / "validation" / f"{name}.jpg")
        _png(_labels(rng, h, w, top, ignore), base / "annotations" / "validation" / f"{name}.png")
    _image(rng, 12, 12, base / "images" / "training" / "ADE_train_00000001.jpg")
    _png(np.zeros((12, 12), np.uint8), base / "annotations" / "training" / "ADE_train_00000001.png")
    return base


__all__ = ["fake_benchmark_names", "voc_palette", "write_fake_benchmark"]
