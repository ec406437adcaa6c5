"""The 8 standard open-vocabulary semantic segmentation benchmarks, read in their own on-disk layouts.

Registers the dataset source ``ovseg``: ``{source: ovseg, benchmark: voc21, root: data/VOCdevkit/VOC2012}`` in a
suite or recipe (keys ``benchmark``, ``root``, ``split``; see :func:`ovseg_source`). Each sample's ``target`` is an
int64 label map ``[H, W]`` (the image's size) with classes ``0..K-1`` and ``255`` = ignore; ``classnames`` are the
benchmark's ``K`` class names in label order.

=============  ===  ==========  =====================================================================================
benchmark      K    background  layout under the dataset root (mmseg's ``data_root``)
=============  ===  ==========  =====================================================================================
voc21          21   index 0     ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``, ``ImageSets/Segmentation/val.txt``
context60      60   index 0     ``JPEGImages/*.jpg``, ``SegmentationClassContext/*.png``,
                                ``ImageSets/SegmentationContext/val.txt`` (VOC2010, as mmseg's converter writes it)
coco_object    81   index 0     ``images/val2017/*.jpg``, ``annotations/val2017/*_instanceTrainIds.png`` (SCLIP's
                                ``datasets/cvt_coco_object.py``)
voc20          20   none        the voc21 files; background becomes ignore (reduce_zero_label)
context59      59   none        the context60 files, reduce_zero_label
coco_stuff     171  none        ``images/val2017/*.jpg``, ``annotations/val2017/*_labelTrainIds.png`` (164k)
cityscapes     19   none        ``leftImg8bit/val/<city>/*_leftImg8bit.png``,
                                ``gtFine/val/<city>/*_gtFine_labelTrainIds.png``
ade20k         150  none        ``images/validation/*.jpg``, ``annotations/validation/*.png``, reduce_zero_label
=============  ===  ==========  =====================================================================================

Sample order is the split file's order where the layout has one (VOC, Context), else the image paths relative to
the image directory, sorted (mmseg's ``BaseSegDataset.load_data_list``: recursive scan, sorted by path).
``reduce_zero_label`` is mmseg's ``LoadAnnotations``: raw 0 -> 255, raw ``v`` -> ``v - 1``, raw 255 stays 255.

References (layouts, split files, suffixes, class names in ``METAINFO``, ``reduce_zero_label``):

- mmsegmentation 1.2.2, the PyPI wheel ``mmsegmentation-1.2.2-py3-none-any.whl`` (sha256
  dadf62bba00a65947d71b08471bc1fe2fee8e2d6eb740381eecd03991e204b47; github.com/open-mmlab/mmsegmentation tag
  v1.2.2): ``mmseg/datasets/voc.py`` (``PascalVOCDataset``), ``mmseg/datasets/pascal_context.py``
  (``PascalContextDataset``, ``PascalContextDataset59``), ``mmseg/datasets/coco_stuff.py`` (``COCOStuffDataset``),
  ``mmseg/datasets/cityscapes.py`` (``CityscapesDataset``), ``mmseg/datasets/ade.py`` (``ADE20KDataset``; its
  ``'bed '`` has a trailing space, stripped here), ``mmseg/datasets/basesegdataset.py`` (``load_data_list``),
  ``mmseg/datasets/transforms/loading.py`` (``LoadAnnotations._load_seg_map``),
  ``configs/_base_/datasets/{pascal_voc12,pascal_context,pascal_context_59,coco-stuff164k,cityscapes,ade20k}.py``
  (``data_root``, ``data_prefix``, ``ann_file``), ``tools/dataset_converters/{pascal_context,coco_stuff164k,
  cityscapes}.py`` (file naming).
- SCLIP, github.com/wangf3014/SCLIP @ b56bd3014b9e8a3ee3450bcfc53700a67d627b7a: ``custom_datasets.py``
  (``PascalVOC20Dataset``: the voc21 files with ``reduce_zero_label=True``; ``COCOObjectDataset``: background + the
  80 COCO thing classes, ``seg_map_suffix='_instanceTrainIds.png'``), ``datasets/cvt_coco_object.py`` (writes
  ``annotations/{train,val}2017/<id>_instanceTrainIds.png``: things 1..80, stuff and unlabeled -> 0),
  ``configs/cfg_{voc21,voc20,context60,context59,coco_object,coco_stuff164k,city_scapes,ade20k}.py``. ClearCLIP,
  NACLIP and ProxyCLIP ship the same dataset classes and configs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .datasets import EvalDataset, limit, register_source, resolve_path
from .images import open_image

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255

_VOC21 = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
_CONTEXT60 = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk",
    "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window",
    "wood",
)  # fmt: skip
_COCO_STUFF = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "banner", "blanket",
    "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff",
    "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)  # fmt: skip
_CITYSCAPES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_ADE20K = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: its classes, label convention and on-disk layout.

    Paths are relative to the dataset root (mmseg's ``data_root``); ``{split}`` in ``img_dir``/``ann_dir`` is the
    split's directory name (:meth:`split_dir`), in ``split_file`` the split's name itself.
    """

    name: str  # the ``benchmark`` key
    classes: tuple[str, ...]  # class names; label value i names classes[i]
    has_background: bool  # classes[0] is "background" (voc21, context60, coco_object)
    reduce_zero_label: bool  # raw 0 -> ignore, raw v -> v - 1 (voc20, context59, ade20k), as mmseg's LoadAnnotations
    layout: str  # the expected layout, in words (error messages, docs)
    img_dir: str  # image directory; searched recursively when there is no split file
    ann_dir: str  # annotation directory, mirroring img_dir
    img_suffix: str  # image file = <name> + img_suffix
    ann_suffix: str  # annotation file = <name> + ann_suffix
    split_file: str | None  # one image name per line (its order is the sample order); None: sorted scan of img_dir
    reference: str  # the reference dataset class (mmseg or SCLIP) whose behaviour this reproduces
    split_dirs: tuple[tuple[str, str], ...] = ()  # split name -> directory name ("val" -> "val2017"); others verbatim
    root_subdirs: tuple[str, ...] = ("",)  # where the dataset root may sit below a given ``root`` (tried in order)
    ignore_index: int = IGNORE_INDEX  # label value of pixels no class is scored on

    @property
    def num_classes(self) -> int:
        """``K``: target values are ``0..K-1`` or :attr:`ignore_index`."""
        return len(self.classes)

    def split_dir(self, split: str) -> str:
        """The directory name of ``split`` (``"val"`` -> ``"val2017"`` for COCO, ``"validation"`` for ADE20K)."""
        return dict(self.split_dirs).get(split, split)


_VOC = dict(
    layout="VOCdevkit/VOC2012/{JPEGImages/<name>.jpg, SegmentationClass/<name>.png (palette PNG, 0 = background, "
    "255 = ignore), ImageSets/Segmentation/<split>.txt}",
    img_dir="JPEGImages",
    ann_dir="SegmentationClass",
    img_suffix=".jpg",
    ann_suffix=".png",
    split_file="ImageSets/Segmentation/{split}.txt",
    root_subdirs=("", "VOC2012", "VOCdevkit/VOC2012"),
)
_CONTEXT = dict(
    layout="VOCdevkit/VOC2010/{JPEGImages/<name>.jpg, SegmentationClassContext/<name>.png (0 = background, "
    "1..59 = classes; mmseg's tools/dataset_converters/pascal_context.py), ImageSets/SegmentationContext/<split>.txt}",
    img_dir="JPEGImages",
    ann_dir="SegmentationClassContext",
    img_suffix=".jpg",
    ann_suffix=".png",
    split_file="ImageSets/SegmentationContext/{split}.txt",
    root_subdirs=("", "VOC2010", "VOCdevkit/VOC2010"),
)
_COCO = dict(
    img_dir="images/{split}",
    ann_dir="annotations/{split}",
    img_suffix=".jpg",
    split_file=None,
    split_dirs=(("train", "train2017"), ("val", "val2017")),
)

#: The 8 benchmarks, in the column order of the SCLIP / ClearCLIP / NACLIP / ProxyCLIP tables.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec(
            name="voc21",
            classes=_VOC21,
            has_background=True,
            reduce_zero_label=False,
            reference="mmseg PascalVOCDataset",
            **_VOC,
        ),
        BenchmarkSpec(
            name="context60",
            classes=_CONTEXT60,
            has_background=True,
            reduce_zero_label=False,
            reference="mmseg PascalContextDataset",
            **_CONTEXT,
        ),
        BenchmarkSpec(
            name="coco_object",
            classes=("background", *_COCO_STUFF[:80]),
            has_background=True,
            reduce_zero_label=False,
            layout="{images/val2017/<id>.jpg, annotations/val2017/<id>_instanceTrainIds.png (0 = background, "
            "1..80 = things; SCLIP's datasets/cvt_coco_object.py)}",
            ann_suffix="_instanceTrainIds.png",
            reference="SCLIP COCOObjectDataset",
            **_COCO,
        ),
        BenchmarkSpec(
            name="voc20",
            classes=_VOC21[1:],
            has_background=False,
            reduce_zero_label=True,
            reference="SCLIP PascalVOC20Dataset",
            **_VOC,
        ),
        BenchmarkSpec(
            name="context59",
            classes=_CONTEXT60[1:],
            has_background=False,
            reduce_zero_label=True,
            reference="mmseg PascalContextDataset59",
            **_CONTEXT,
        ),
        BenchmarkSpec(
            name="coco_stuff",
            classes=_COCO_STUFF,
            has_background=False,
            reduce_zero_label=False,
            layout="{images/val2017/<id>.jpg, annotations/val2017/<id>_labelTrainIds.png (0..170, 255 = ignore; "
            "mmseg's tools/dataset_converters/coco_stuff164k.py)}",
            ann_suffix="_labelTrainIds.png",
            reference="mmseg COCOStuffDataset",
            **_COCO,
        ),
        BenchmarkSpec(
            name="cityscapes",
            classes=_CITYSCAPES,
            has_background=False,
            reduce_zero_label=False,
            layout="{leftImg8bit/val/<city>/<name>_leftImg8bit.png, "
            "gtFine/val/<city>/<name>_gtFine_labelTrainIds.png (0..18, 255 = ignore; "
            "mmseg's tools/dataset_converters/cityscapes.py)}",
            img_dir="leftImg8bit/{split}",
            ann_dir="gtFine/{split}",
            img_suffix="_leftImg8bit.png",
            ann_suffix="_gtFine_labelTrainIds.png",
            split_file=None,
            reference="mmseg CityscapesDataset",
        ),
        BenchmarkSpec(
            name="ade20k",
            classes=_ADE20K,
            has_background=False,
            reduce_zero_label=True,
            layout="ADEChallengeData2016/{images/validation/<name>.jpg, annotations/validation/<name>.png "
            "(0 = other, 1..150 = classes)}",
            img_dir="images/{split}",
            ann_dir="annotations/{split}",
            img_suffix=".jpg",
            ann_suffix=".png",
            split_file=None,
            reference="mmseg ADE20KDataset",
            split_dirs=(("train", "training"), ("val", "validation")),
            root_subdirs=("", "ADEChallengeData2016", "ade/ADEChallengeData2016"),
        ),
    )
}


def benchmark_names() -> list[str]:
    """The benchmark names, in the paper-table order: ``voc21, context60, coco_object, voc20, context59, coco_stuff,
    cityscapes, ade20k`` (with a background class first, then without).

    Example:
        >>> [(b, BENCHMARKS[b].num_classes) for b in benchmark_names()][:3]
        [('voc21', 21), ('context60', 60), ('coco_object', 81)]
    """
    return list(BENCHMARKS)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` of ``name``.

    Raises:
        ValueError: ``name`` is not one of :func:`benchmark_names`.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown ovseg benchmark {name!r}; choose from {benchmark_names()}")
    return BENCHMARKS[name]


def remap_labels(raw: np.ndarray, spec: BenchmarkSpec, *, where: str = "annotation") -> np.ndarray:
    """Turn a raw annotation into the benchmark's target.

    Args:
        raw: integer label map ``[H, W]`` as stored on disk (palette indices for VOC).
        spec: the benchmark; with ``reduce_zero_label``, raw 0 -> 255, raw ``v`` -> ``v - 1``, raw 255 stays 255.
        where: how the annotation is named in errors.

    Returns:
        int64 ``[H, W]``, values in ``0..K-1`` or ``spec.ignore_index``.

    Raises:
        ValueError: ``raw`` is not a 2-D integer map, or holds values that are neither a class nor ignore (e.g.
            Cityscapes ``labelIds`` instead of ``labelTrainIds``, raw COCO ids instead of ``TrainIds``).

    Example:
        >>> remap_labels(np.array([[0, 1, 20, 255]], np.uint8), BENCHMARKS["voc20"]).tolist()
        [[255, 0, 19, 255]]
    """
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{where}: expected a single-channel integer label map [H, W], got {raw.dtype} "
                         f"{tuple(raw.shape)} (an RGB colour rendering rather than the label PNG?)")  # fmt: skip
    lab = raw.astype(np.int64)
    ignore = spec.ignore_index
    if spec.reduce_zero_label:
        lab = np.where((lab == 0) | (lab == ignore), ignore, lab - 1)
    bad = (lab != ignore) & ((lab < 0) | (lab >= spec.num_classes))
    if bad.any():
        shift = 1 if spec.reduce_zero_label else 0
        values = sorted({int(v) + shift for v in np.unique(lab[bad])})
        raise ValueError(f"{where}: raw values {values[:8]}{' ...' if len(values) > 8 else ''} are neither classes "
                         f"{shift}..{spec.num_classes - 1 + shift} nor {ignore} (ignore) of {spec.name}; expected "
                         f"{spec.layout}")  # fmt: skip
    return lab


def read_label_map(path: str | Path, spec: BenchmarkSpec) -> np.ndarray:
    """Read one annotation PNG of ``spec`` and remap it (:func:`remap_labels`).

    Args:
        path: a palette or grayscale label PNG (``P`` / ``L`` mode; VOC's palette PNGs give their indices, not colours).
        spec: the benchmark.

    Returns:
        int64 ``[H, W]``, values in ``0..K-1`` or 255.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded, is not a single-channel label map, or holds values out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation {path} does not exist (the {spec.name} layout: {spec.layout})")
    try:
        with Image.open(path) as im:
            im.load()
            raw = np.array(im)
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... on corrupt data
        raise ValueError(f"annotation {path} is unreadable ({type(e).__name__}: {e})") from e
    return remap_labels(raw, spec, where=f"annotation {path}")


def load_sample(
    spec: BenchmarkSpec, image_path: Path, ann_path: Path
) -> tuple[Image.Image, int, list[str], np.ndarray]:
    """One sample: ``(RGB PIL image, -1, [], target int64 [H, W])``.

    The image goes through :func:`visionfm.data.images.open_image` (EXIF orientation applied, as mmcv's default
    ``'color'`` decoding does); its size must equal the annotation's.

    Raises:
        ImageLoadError: the image is missing or unreadable.
        FileNotFoundError, ValueError: the annotation is missing, unreadable, out of range or of another size.
    """
    image = open_image(image_path)
    target = read_label_map(ann_path, spec)
    if target.shape != (image.height, image.width):
        raise ValueError(f"annotation {ann_path} is {target.shape[1]}x{target.shape[0]} but image {image_path} is "
                         f"{image.width}x{image.height} (width x height, after EXIF orientation)")  # fmt: skip
    return image, -1, [], target


def _dataset_root(spec: BenchmarkSpec, root: Path) -> Path:
    """The directory holding ``spec``'s layout: ``root`` itself or one of ``spec.root_subdirs`` below it."""
    if not root.is_dir():
        raise ValueError(f"{spec.name}: dataset root {root} does not exist or is not a directory; expected "
                         f"{spec.layout}")  # fmt: skip
    top = Path(spec.img_dir).parts[0]
    tried = [root / sub if sub else root for sub in spec.root_subdirs]
    for cand in tried:
        if (cand / top).is_dir():
            return cand
    raise ValueError(f"{spec.name}: no {top}/ directory in {' or '.join(map(str, tried))}; expected {spec.layout}")


def benchmark_items(spec: BenchmarkSpec, root: Path, split: str = "val") -> list[tuple[str, Path, Path]]:
    """The samples of ``spec`` under ``root``, in the benchmark's order.

    Args:
        spec: the benchmark.
        root: the dataset root (mmseg's ``data_root``) or a directory above it named in ``spec.root_subdirs``.
        split: ``"val"`` (the benchmarks' evaluation split), ``"train"``, or another split / directory name.

    Returns:
        ``[(id, image path, annotation path)]``; ``id`` is the image name without suffix (relative to the image
        directory, e.g. ``"frankfurt/frankfurt_000000_000294"``). Annotation files are not checked here.

    Raises:
        ValueError: naming the path, when the root, image or annotation directory, or split file is missing, or no
            image is listed.
    """
    base = _dataset_root(spec, root)
    sdir = spec.split_dir(split)
    img_dir, ann_dir = base / spec.img_dir.format(split=sdir), base / spec.ann_dir.format(split=sdir)
    for kind, d in (("image", img_dir), ("annotation", ann_dir)):
        if not d.is_dir():
            raise ValueError(f"{spec.name}: {kind} directory {d} does not exist (split {split!r}); expected "
                             f"{spec.layout}")  # fmt: skip
    if spec.split_file is not None:
        split_path = base / spec.split_file.format(split=split)
        if not split_path.is_file():
            have = sorted(p.stem for p in split_path.parent.glob("*.txt")) if split_path.parent.is_dir() else []
            raise ValueError(f"{spec.name}: split file {split_path} does not exist (splits there: {have or 'none'}); "
                             f"expected {spec.layout}")  # fmt: skip
        names = [s for s in (line.strip() for line in split_path.read_text().splitlines()) if s]
        where = str(split_path)
    else:
        n = len(spec.img_suffix)
        rels = sorted(p.relative_to(img_dir).as_posix() for p in img_dir.rglob(f"*{spec.img_suffix}")
                      if p.is_file() and not p.name.startswith("."))  # fmt: skip
        names = [r[:-n] for r in rels]
        where = f"{img_dir} (*{spec.img_suffix}, searched recursively)"
    if not names:
        raise ValueError(f"{spec.name}: no images listed in {where}; expected {spec.layout}")
    return [(name, img_dir / f"{name}{spec.img_suffix}", ann_dir / f"{name}{spec.ann_suffix}") for name in names]


def ovseg_source(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{benchmark: one of benchmark_names(), root: dataset root, split: val}``: a standard open-vocabulary semantic
    segmentation benchmark in its own layout (see the module docstring).

    Samples are ``image``: uint8 ``[3, H, W]``; ``label``: -1; ``target``: int64 ``[H, W]`` in ``0..K-1`` or 255
    (ignore). ``classnames`` are the benchmark's ``K`` classes; index 0 is ``"background"`` for voc21, context60 and
    coco_object (``ds.benchmark.has_background``). A missing or unreadable annotation makes that sample's loader
    raise, so it is skipped and counted like any unreadable sample.

    Raises:
        ValueError: unknown benchmark; missing root, directory or split file (naming the path and the layout).
    """
    bench = get_benchmark(spec["benchmark"])
    split = str(spec.get("split", "val"))
    items = limit(benchmark_items(bench, resolve_path(str(spec["root"]), root), split), num)
    loaders = [functools.partial(load_sample, bench, img, ann) for _, img, ann in items]
    ds = EvalDataset(name, loaders, [i for i, _, _ in items], bench.classes)
    ds.benchmark = bench  # type: ignore[attr-defined]
    logger.info("%s: %s %s, %d samples, %d classes", name, bench.name, split, len(ds), bench.num_classes)
    return ds


register_source("ovseg", ovseg_source, keys=("benchmark", "root", "split"))
