"""Toyworld exporters: write scenes as an imagefolder, webdataset shards or a COCO json dataset
(``visionfm toyworld OUT --format imagefolder|webdataset|coco``)."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .world import KINDS, SHAPES, Scene, ToyWorld, _check_int, scene_to_coco_rle

logger = logging.getLogger(__name__)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _scene_record(scene: Scene) -> dict[str, Any]:
    """JSON-serialisable annotations of a scene (boxes xyxy, masks as uncompressed COCO RLE)."""
    objs = []
    for o, m, b in zip(scene.objects, scene.masks, scene.boxes):
        d = o.to_dict()
        d["box"] = [float(v) for v in b]
        d["area"] = int(m.sum())
        d["category_id"] = 1 + SHAPES.index(o.shape)
        d["segmentation"] = scene_to_coco_rle(m)
        objs.append(d)
    h, w = scene.image.shape[:2]
    return {
        "scene_id": scene.scene_id,
        "split": scene.split,
        "height": h,
        "width": w,
        "captions": list(scene.captions),
        "objects": objs,
    }


def export_imagefolder(
    out_dir: str | os.PathLike,
    split: str = "train",
    num_images: int = 1000,
    *,
    label: str = "colour_shape",
    image_size: int = 64,
    seed: int = 0,
    fmt: str = "png",
    background: str = "noise",
    progress: bool = True,
) -> Path:
    """Write single-object scenes as a torchvision ``ImageFolder`` tree.

    Files are ``out_dir/<class name>/<split>_<index:06d>.<fmt>``, the class name being ``"red circle"``
    (``label="colour_shape"``), ``"circle"`` (``"shape"``) or ``"red"`` (``"colour"``). Scene ``i`` is
    ``ToyWorld(split, num_images, image_size=image_size, seed=seed, min_objects=1, max_objects=1)[i]``.

    Args:
        out_dir: Output directory (created).
        split: One of :data:`SPLITS`.
        num_images: Number of images.
        label: One of :data:`KINDS`.
        image_size: Image side in pixels.
        seed: Dataset seed.
        fmt: ``"png"`` (lossless) or ``"jpg"`` (quality 95).
        background: ``"noise"`` or ``"plain"``.
        progress: Show a tqdm progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    if label not in KINDS:
        raise ValueError(f"label must be one of {KINDS}, got {label!r}")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    ds = ToyWorld(split, num_images, image_size=image_size, seed=seed, min_objects=1, max_objects=1,
                  background=background)  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(ds)), desc=f"toyworld imagefolder {split}", disable=not progress):
        scene = ds.scene(i)
        cls_dir = out / scene.label_name(label)
        cls_dir.mkdir(exist_ok=True)
        img = Image.fromarray(scene.image)
        if fmt == "png":
            img.save(cls_dir / f"{split}_{i:06d}.png", format="PNG")
        else:
            img.save(cls_dir / f"{split}_{i:06d}.jpg", format="JPEG", quality=95)
    logger.info("wrote %d %s images (%s labels) to %s", len(ds), split, label, out)
    return out


def _add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def export_webdataset(
    out_dir: str | os.PathLike,
    split: str = "train",
    num_scenes: int = 10000,
    *,
    shard_size: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    background: str = "noise",
    num_captions: int = 5,
    progress: bool = True,
) -> Path:
    """Write scenes as WebDataset tar shards (byte-identical for the same arguments).

    Shards are ``out_dir/toyworld-<split>-%06d.tar`` holding ``shard_size`` samples each. Sample ``i`` has key
    ``<split>_<index:08d>`` and members ``.png`` (the RGB image), ``.txt`` (the first caption, which names every
    object) and ``.json`` (``scene_id``, ``split``, ``height``, ``width``, ``captions`` and ``objects``: each with
    ``shape``, ``colour``, ``size``, ``position``, ``rgb``, ``center``, ``radius``, ``rotation``, ``box`` (xyxy
    pixels), ``area``, ``category_id`` and ``segmentation`` (uncompressed COCO RLE of the visible mask), in drawing
    order, so the instance/semantic maps can be rebuilt from them). Read with
    ``webdataset.WebDataset(urls).decode("rgb8")``.

    Args:
        out_dir: Output directory (created).
        split: One of :data:`SPLITS`.
        num_scenes: Number of scenes.
        shard_size: Samples per shard.
        image_size: Image side in pixels.
        seed: Dataset seed.
        min_objects: Fewest objects per scene.
        max_objects: Most objects per scene.
        background: ``"noise"`` or ``"plain"``.
        num_captions: Captions per scene.
        progress: Show a tqdm progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    shard_size = _check_int("shard_size", shard_size, 1)
    ds = ToyWorld(split, num_scenes, image_size=image_size, seed=seed, min_objects=min_objects,
                  max_objects=max_objects, background=background, num_captions=num_captions)  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tar: tarfile.TarFile | None = None
    num_shards = 0
    try:
        for i in tqdm(range(len(ds)), desc=f"toyworld webdataset {split}", disable=not progress):
            if i % shard_size == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(
                    out / f"toyworld-{split}-{i // shard_size:06d}.tar", "w", format=tarfile.USTAR_FORMAT
                )
                num_shards += 1
            scene = ds.scene(i)
            key = f"{split}_{i:08d}"
            record = json.dumps(_scene_record(scene), sort_keys=True, separators=(",", ":"))
            _add_tar_member(tar, f"{key}.png", _png_bytes(scene.image))
            _add_tar_member(tar, f"{key}.txt", scene.captions[0].encode("utf-8"))
            _add_tar_member(tar, f"{key}.json", record.encode("utf-8"))
    finally:
        if tar is not None:
            tar.close()
    logger.info("wrote %d %s scenes in %d shards to %s", len(ds), split, num_shards, out)
    return out


def export_coco(
    out_dir: str | os.PathLike,
    split: str = "val",
    num_scenes: int = 500,
    *,
    image_size: int = 64,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    background: str = "noise",
    num_captions: int = 5,
    progress: bool = True,
) -> Path:
    """Write scenes in COCO format: images, instance annotations and captions.

    Layout: ``out_dir/images/<split>_<index:06d>.png``, ``out_dir/instances.json`` (image ids ``index + 1``;
    annotations with ``bbox`` ``[x, y, w, h]``, ``area`` = mask pixel count, ``iscrowd`` 0, ``segmentation`` as
    uncompressed RLE, ``category_id`` = ``1 + SHAPES.index(shape)`` and ``attributes`` ``{"colour", "size",
    "position"}``; categories are the shapes with supercategory ``"shape"``) and ``out_dir/captions.json`` (COCO
    captions format: ``images`` and ``annotations`` ``{id, image_id, caption}``). Both load with
    ``pycocotools.coco.COCO``.

    Args:
        out_dir: Output directory (created).
        split: One of :data:`SPLITS`.
        num_scenes: Number of scenes.
        image_size: Image side in pixels.
        seed: Dataset seed.
        min_objects: Fewest objects per scene.
        max_objects: Most objects per scene.
        background: ``"noise"`` or ``"plain"``.
        num_captions: Captions per scene.
        progress: Show a tqdm progress bar.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    ds = ToyWorld(split, num_scenes, image_size=image_size, seed=seed, min_objects=min_objects,
                  max_objects=max_objects, background=background, num_captions=num_captions)  # fmt: skip
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    info = {
        "description": f"visionfm toyworld, split={split}, seed={seed}, image_size={image_size}",
        "version": "1.0",
        "year": 2024,
    }
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    for i in tqdm(range(len(ds)), desc=f"toyworld coco {split}", disable=not progress):
        scene = ds.scene(i)
        file_name = f"{split}_{i:06d}.png"
        Image.fromarray(scene.image).save(out / "images" / file_name, format="PNG")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for o, m, b in zip(scene.objects, scene.masks, scene.boxes):
            x1, y1, x2, y2 = (float(v) for v in b)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1 + SHAPES.index(o.shape),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(m.sum()),
                    "iscrowd": 0,
                    "segmentation": scene_to_coco_rle(m),
                    "attributes": {"colour": o.colour, "size": o.size, "position": o.position},
                }
            )
        for c in scene.captions:
            captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": c})
    categories = [{"id": 1 + j, "name": s, "supercategory": "shape"} for j, s in enumerate(SHAPES)]
    instances = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    (out / "instances.json").write_text(json.dumps(instances, separators=(",", ":")))
    caps = {"info": info, "licenses": [], "images": images, "annotations": captions}
    (out / "captions.json").write_text(json.dumps(caps, separators=(",", ":")))
    logger.info("wrote %d %s scenes (%d objects) in COCO format to %s", len(ds), split, len(annotations), out)
    return out


EXPORT_FORMATS: tuple[str, ...] = ("imagefolder", "webdataset", "coco")


def main_export(out: str, fmt: str, split: str, num: int, image_size: int, seed: int, label: str) -> Path:
    """Entry point of ``visionfm toyworld``: export ``num`` scenes of ``split`` to ``out`` in format ``fmt``.

    Args:
        out: Output directory.
        fmt: ``"imagefolder"`` (single-object scenes, one directory per class), ``"webdataset"`` (tar shards of
            1000) or ``"coco"`` (images + ``instances.json`` + ``captions.json``).
        split: One of :data:`SPLITS`.
        num: Number of images/scenes.
        image_size: Image side in pixels.
        seed: Dataset seed.
        label: Class labelling for ``imagefolder`` (one of :data:`KINDS`); ignored by the other formats.

    Returns:
        The output directory.
    """
    if fmt == "imagefolder":
        return export_imagefolder(out, split, num, label=label, image_size=image_size, seed=seed)
    if fmt == "webdataset":
        return export_webdataset(out, split, num, image_size=image_size, seed=seed)
    if fmt == "coco":
        return export_coco(out, split, num, image_size=image_size, seed=seed)
    raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
