"""Datasets for training and evaluation: one sample format over imagefolder, HF ``datasets``, webdataset shards,
COCO json, and any source a higher package registers (``visionfm.toyworld`` registers ``toyworld``).

Every source becomes an :class:`EvalDataset`, a map-style dataset of :class:`Sample` dicts::

    {"index": int, "id": str, "image": uint8 [3, H, W] tensor or None, "label": int (-1: none),
     "captions": [str], "target": anything task-specific (e.g. a semantic map) or None, "error": str or None}

A sample that cannot be read (missing file, corrupt bytes, bad shape) comes back with ``image=None`` and the
reason in ``"error"``; the runner skips and counts it, so one bad file never ends a long evaluation.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: ``builder(name, spec, root, num) -> EvalDataset`` per source name; see :func:`register_source`.
_SOURCES: dict[str, Callable[[str, dict[str, Any], Path, int | None], EvalDataset]] = {}
#: the keys each source declared (beyond ``source``, ``num``, ``classnames``, ``templates``); see
#: :mod:`visionfm.training.schema`
_SOURCE_KEYS: dict[str, frozenset[str]] = {}


def register_source(
    name: str,
    builder: Callable[[str, dict[str, Any], Path, int | None], EvalDataset],
    *,
    keys: Sequence[str] | None = None,
) -> None:
    """Register a dataset source usable as ``{source: name, ...}`` in suites and recipes.

    Args:
        name: the ``source`` value.
        builder: ``builder(dataset_name, spec, root, num) -> EvalDataset``; ``spec`` is the entry without
            ``source``, ``num`` and ``classnames``; relative paths resolve against ``root``; ``num`` caps the
            number of samples (``None``: all).
        keys: the entry keys the source reads (beyond the common ``source``, ``num``, ``classnames``,
            ``templates``); suites and recipes with other keys are rejected. ``None``: not checked (a warning).

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in _SOURCES:
        raise ValueError(f"dataset source {name!r} is already registered")
    _SOURCES[name] = builder
    if keys is not None:
        _SOURCE_KEYS[name] = frozenset(keys)


def sources() -> list[str]:
    """Names of the registered dataset sources."""
    return sorted(_SOURCES)


class EvalDataset(torch.utils.data.Dataset):
    """A list of sample loaders with class names.

    Args:
        name: the dataset's name in the suite.
        loaders: one zero-argument callable per sample returning ``(image, label, captions, target)``;
            ``image`` is anything :func:`visionfm.data.images.to_uint8_chw` reads.
        ids: one stable id per sample (file path, key, index).
        classnames: class names, ``label`` indexes them (may be empty for caption-only data).
    """

    def __init__(
        self, name: str, loaders: Sequence[Callable[[], tuple]], ids: Sequence[str], classnames: Sequence[str] = ()
    ) -> None:
        if len(loaders) != len(ids):
            raise ValueError(f"{name}: {len(loaders)} loaders but {len(ids)} ids")
        self.name = name
        self.loaders = list(loaders)
        self.ids = [str(i) for i in ids]
        self.classnames = list(classnames)

    def __len__(self) -> int:
        return len(self.loaders)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from .images import to_uint8_chw

        out: dict[str, Any] = {"index": int(index), "id": self.ids[index], "image": None, "label": -1,
                               "captions": [], "target": None, "error": None}  # fmt: skip
        try:
            image, label, captions, target = self.loaders[index]()
            out.update(image=to_uint8_chw(image, name=f"{self.name}[{index}] ({self.ids[index]})"),
                       label=int(label), captions=list(captions), target=target)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - any unreadable sample is skipped and counted, never fatal
            out["error"] = f"{type(e).__name__}: {e}"
            logger.debug("skipping %s[%d]: %s", self.name, index, out["error"])
        return out

    def __repr__(self) -> str:
        return f"EvalDataset({self.name!r}, {len(self)} samples, {len(self.classnames)} classes)"


def collate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep samples as a list (images differ in size; the encoder's preprocessing batches them)."""
    return samples


def build_dataset(name: str, spec: dict[str, Any], *, root: str | os.PathLike | None = None) -> EvalDataset:
    """Build a dataset from its suite entry.

    Args:
        name: the dataset's name in the suite.
        spec: ``{"source": one of sources(), ...}``; see ``docs/eval.md`` for each source's keys. Common keys:
            ``classnames`` (list, overrides the source's), ``num`` (first N samples).
        root: directory relative paths are resolved against (the suite file's directory).

    Raises:
        ValueError: unknown source or missing keys, naming the dataset.
    """
    spec = dict(spec)
    source = spec.pop("source", None)
    if source not in _SOURCES:
        hint = " (import visionfm.toyworld to register it)" if source == "toyworld" else ""
        raise ValueError(f"dataset {name!r}: source must be one of {sources()}, got {source!r}{hint}")
    num = spec.pop("num", None)
    classnames = spec.pop("classnames", None)
    builder = _SOURCES[source]
    try:
        ds = builder(name, spec, Path(root) if root else Path.cwd(), num)
    except KeyError as e:
        raise ValueError(f"dataset {name!r} (source {source}): missing key {e}") from e
    if classnames is not None:
        ds.classnames = list(classnames)
    return ds


def resolve_path(p: str, root: Path) -> Path:
    """``p`` with ``~`` expanded; relative paths are taken relative to ``root``."""
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else root / q


def limit(items: list, num: int | None) -> list:
    """The first ``num`` items (all when ``num`` is ``None``)."""
    return items if num is None else items[: int(num)]


def _imagefolder(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{path}``: ``path/<class>/<image>``, classes sorted by name (torchvision's ImageFolder order)."""
    base = resolve_path(spec["path"], root)
    if not base.is_dir():
        raise ValueError(f"dataset {name!r}: imagefolder path {base} is not a directory")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"dataset {name!r}: {base} has no class subdirectories")
    files = [(f, k) for k, c in enumerate(classes) for f in sorted((base / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]  # fmt: skip
    files = limit(files, num)
    loaders = [lambda f=f, k=k: (f, k, [], None) for f, k in files]
    return EvalDataset(name, loaders, [str(f.relative_to(base)) for f, _ in files], classes)


def _hf(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{path, split, name (config), image_column, label_column, caption_column, data_dir|data_files}``: a
    local dataset directory (``save_to_disk`` or files) or a hub dataset already in the HF cache."""
    import datasets

    path = spec["path"]
    local = resolve_path(path, root)
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[spec.get("split", "test")]
    else:
        kw = {k: spec[k] for k in ("name", "data_dir", "data_files") if k in spec}
        ds = datasets.load_dataset(str(local) if local.exists() else path, split=spec.get("split", "test"), **kw)
    if num is not None:
        ds = ds.select(range(min(int(num), len(ds))))
    img_col = spec.get("image_column", "image")
    lab_col = spec.get("label_column", "label")
    cap_col = spec.get("caption_column")
    if img_col not in ds.column_names:
        raise ValueError(f"dataset {name!r}: no image column {img_col!r}; columns are {ds.column_names}")
    names: list[str] = []
    if lab_col in ds.column_names and hasattr(ds.features[lab_col], "names"):
        names = list(ds.features[lab_col].names)

    def load(i: int) -> tuple:
        row = ds[i]
        caps = row.get(cap_col, []) if cap_col else []
        return (
            row[img_col],
            row.get(lab_col, -1) if lab_col in row else -1,
            [caps] if isinstance(caps, str) else caps,
            None,
        )

    return EvalDataset(name, [lambda i=i: load(i) for i in range(len(ds))], [str(i) for i in range(len(ds))], names)


def _webdataset(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{shards: [paths or URLs, brace patterns allowed], image_key: png|jpg|..., label_key: cls,
    caption_key: txt}``. Shards are read once into memory (evaluation sets are small enough; training
    streams instead)."""
    import braceexpand
    import webdataset as wds

    shards = spec["shards"]
    shards = [shards] if isinstance(shards, str) else list(shards)
    urls = [u if "://" in u else str(resolve_path(u, root)) for s in shards for u in braceexpand.braceexpand(s)]
    img_keys = [spec["image_key"]] if "image_key" in spec else ["png", "jpg", "jpeg", "webp"]
    lab_key, cap_key = spec.get("label_key", "cls"), spec.get("caption_key", "txt")
    records = []
    for rec in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        records.append(rec)
        if num is not None and len(records) >= int(num):
            break

    def load(rec: dict) -> tuple:
        key = next((k for k in img_keys if k in rec), None)
        if key is None:
            raise ValueError(f"sample {rec.get('__key__')} has none of the image keys {img_keys}")
        from PIL import Image

        img = Image.open(io.BytesIO(rec[key]))
        img.load()
        label = int(rec[lab_key].decode().strip()) if lab_key in rec else -1
        caps = [rec[cap_key].decode()] if cap_key in rec else []
        if "json" in rec and not caps:
            caps = list(json.loads(rec["json"]).get("captions", []))
        return img, label, caps, None

    return EvalDataset(name, [lambda r=r: load(r) for r in records], [r["__key__"] for r in records],
                       spec.get("classnames", []))  # fmt: skip


def _coco(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{annotations: instances.json, images: image dir}``: targets are the image's COCO annotations; class
    names are the categories in id order, ``label`` is -1 (detection data)."""
    ann_path = resolve_path(spec["annotations"], root)
    img_dir = resolve_path(spec["images"], root)
    coco = json.loads(ann_path.read_text())
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    by_image: dict[int, list] = {}
    for a in coco.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    images = limit(sorted(coco["images"], key=lambda im: im["id"]), num)
    loaders = [lambda im=im: (img_dir / im["file_name"], -1, [], {"image": im, "annotations": by_image.get(im["id"], [])})
               for im in images]  # fmt: skip
    ds = EvalDataset(name, loaders, [im["file_name"] for im in images], [c["name"] for c in cats])
    ds.categories = cats  # type: ignore[attr-defined]
    ds.coco = {"images": images, "annotations": [a for im in images for a in by_image.get(im["id"], [])]}  # type: ignore[attr-defined]
    return ds


register_source("imagefolder", _imagefolder, keys=("path",))
register_source("hf", _hf, keys=("path", "split", "name", "image_column", "label_column", "caption_column",
                                 "data_dir", "data_files"))  # fmt: skip
register_source("webdataset", _webdataset, keys=("shards", "image_key", "label_key", "caption_key"))
register_source("coco", _coco, keys=("annotations", "images"))


def label_array(ds: EvalDataset) -> np.ndarray:
    """Labels of every sample (loads each sample; for tests and small sets)."""
    return np.array([ds[i]["label"] for i in range(len(ds))])
