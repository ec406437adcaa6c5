"""Batched torch preprocessing that reproduces each family's reference processor.

One :class:`PreprocessConfig` describes resize, crop, normalisation and padding. It is built from the
reference library's own configuration (a transformers ``preprocessor_config.json`` or open_clip's
``preprocess_cfg``) so the numbers the model sees are the numbers the reference would feed it.

Resizing runs on uint8 tensors, grouping same-sized images into one batched call, exactly as the
transformers (torchvision) image processors do. open_clip resizes PIL images; torch's antialiased
resize differs from PIL's by up to a few intensity levels, so configs built from open_clip use
``resize_backend="pil"`` (one PIL call per image, everything after it batched) to stay exact.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from PIL import Image
from torchvision.transforms import InterpolationMode

_INTERP = {
    "nearest": (InterpolationMode.NEAREST, Image.NEAREST),
    "bilinear": (InterpolationMode.BILINEAR, Image.BILINEAR),
    "bicubic": (InterpolationMode.BICUBIC, Image.BICUBIC),
    "lanczos": (InterpolationMode.LANCZOS, Image.LANCZOS),
}
# PIL resample codes used in transformers' preprocessor_config.json files.
_PIL_CODE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
#: Largest image, in pixels, that preprocessing resizes to (before crop/pad): 2**25 = 33.5M pixels, i.e. 100 MB of
#: uint8 RGB. Far above any model input (a 224 short side at the 100:1 aspect limit is 5M pixels), it stops a
#: mis-set ``resize_size`` or an extreme image from allocating gigabytes.
MAX_RESIZED_PIXELS: int = 2**25


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw RGB images become the model's input tensor.

    Attributes:
        resize: ``"shortest_edge"`` (short side to ``resize_size``, aspect kept), ``"longest_edge"``
            (long side to ``resize_size``, aspect kept, SAM's rounding), ``"exact"`` (to
            ``crop_size`` exactly, aspect ignored) or ``"none"``.
        resize_size: target edge length in pixels for the ``*_edge`` modes.
        interpolation: ``"bicubic" | "bilinear" | "nearest" | "lanczos"``.
        crop_size: ``(H, W)`` of the centre crop, or ``None`` for no crop.
        crop_rounding: ``"floor"`` (transformers: ``int((H - h) / 2)``) or ``"round"`` (torchvision's
            ``CenterCrop``, used by open_clip) for the crop offset.
        pad_size: ``(H, W)`` to zero-pad to at the bottom/right after normalising (SAM), or ``None``.
        rescale: factor from uint8 to [0, 1] (``1/255``).
        mean: per-channel mean in [0, 1] units, RGB.
        std: per-channel std in [0, 1] units, RGB.
        resize_backend: ``"torch"`` (batched antialiased tensor resize, transformers' default) or
            ``"pil"`` (PIL per image, open_clip's transform).
        rescale_before_resize: rescale to float before resizing and resize the float pixels (DINOv3's
            ``DINOv3ViTImageProcessor`` order); default: resize the uint8 pixels, then rescale (the other processors).
    """

    resize: Literal["shortest_edge", "longest_edge", "exact", "none"] = "shortest_edge"
    resize_size: int | None = 224
    interpolation: str = "bicubic"
    crop_size: tuple[int, int] | None = (224, 224)
    crop_rounding: Literal["floor", "round"] = "floor"
    pad_size: tuple[int, int] | None = None
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    resize_backend: Literal["torch", "pil"] = "torch"
    rescale_before_resize: bool = False

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {self.interpolation!r}")
        if self.resize not in ("shortest_edge", "longest_edge", "exact", "none"):
            raise ValueError(f"resize must be shortest_edge|longest_edge|exact|none, got {self.resize!r}")
        if self.resize == "exact" and self.crop_size is None:
            raise ValueError("resize='exact' needs crop_size=(H, W) as its target")
        if self.resize_backend not in ("torch", "pil"):
            raise ValueError(f"resize_backend must be 'torch' or 'pil', got {self.resize_backend!r}")
        if self.rescale_before_resize and self.resize_backend != "torch":
            raise ValueError("rescale_before_resize needs resize_backend='torch' (PIL resizes uint8 images)")

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the tensor the model receives (fixed whenever a crop, exact resize or pad is set)."""
        if self.pad_size is not None:
            return self.pad_size
        if self.crop_size is not None:
            return self.crop_size
        if self.resize_size is not None:
            return (self.resize_size, self.resize_size)
        raise ValueError("this PreprocessConfig has no fixed output size")

    def with_overrides(self, **kw: Any) -> PreprocessConfig:
        """Return a copy with some fields replaced (validated again)."""
        return replace(self, **kw)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> PreprocessConfig:
        """Build from a transformers ``preprocessor_config.json`` dict (CLIP, SigLIP, BiT/DINOv2, SAM)."""
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = (
                {"shortest_edge": size} if not cfg.get("default_to_square", True) else {"height": size, "width": size}
            )
        crop = cfg.get("crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        do_crop = bool(cfg.get("do_center_crop", False)) and bool(crop)
        crop_size = (int(crop["height"]), int(crop["width"])) if do_crop else None
        if not cfg.get("do_resize", True):
            resize, resize_size = "none", None
        elif "shortest_edge" in size:
            resize, resize_size = "shortest_edge", int(size["shortest_edge"])
        elif "longest_edge" in size:
            resize, resize_size = "longest_edge", int(size["longest_edge"])
        elif "height" in size:
            resize, resize_size = "exact", None
            if crop_size is None:
                crop_size = (int(size["height"]), int(size["width"]))
            else:  # resize to (h, w) then crop: express as exact resize with a second crop stage is rare
                raise ValueError(f"unsupported preprocessor config: exact resize {size} followed by crop {crop}")
        else:
            raise ValueError(f"unsupported preprocessor 'size': {size}")
        pad = cfg.get("pad_size") if cfg.get("do_pad", False) else None
        pad_size = (int(pad["height"]), int(pad["width"])) if pad else None
        mean = tuple(cfg.get("image_mean", (0.5, 0.5, 0.5))) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(cfg.get("image_std", (0.5, 0.5, 0.5))) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
        return cls(
            resize=resize,
            resize_size=resize_size,
            interpolation=_PIL_CODE.get(int(cfg.get("resample", 3)), "bicubic"),
            crop_size=crop_size,
            crop_rounding="floor",
            pad_size=pad_size,
            rescale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            resize_backend="torch",
            rescale_before_resize=str(cfg.get("image_processor_type", "")).removesuffix("Fast")
            == "DINOv3ViTImageProcessor",
        )

    @classmethod
    def from_hf_dir(cls, path: str | Path, processor_class: str) -> PreprocessConfig | None:
        """Read a transformers checkpoint's image-processor settings, or ``None`` if it has none.

        Looks for ``preprocessor_config.json``, then the ``image_processor`` entry of
        ``processor_config.json`` (what ``ProcessorMixin.save_pretrained`` writes in transformers 5).
        Keys the file leaves out take the processor class's own defaults (``image_processor_type``
        in the file, else ``processor_class``), exactly as transformers fills them.

        Args:
            path: checkpoint directory.
            processor_class: transformers image-processor class name to take defaults from, e.g.
                ``"SamImageProcessor"``.
        """
        path = Path(path)
        cfg: dict[str, Any] | None = None
        if (path / "preprocessor_config.json").is_file():
            cfg = _read_json(path / "preprocessor_config.json")
        elif (path / "processor_config.json").is_file():
            cfg = _read_json(path / "processor_config.json").get("image_processor")
        if cfg is None:
            return None
        import transformers

        name = str(cfg.get("image_processor_type") or processor_class).removesuffix("Fast")
        klass = getattr(transformers, name, None) or getattr(transformers, processor_class)
        defaults = {**klass().to_dict(), "default_to_square": getattr(klass, "default_to_square", True)}
        return cls.from_hf({**defaults, **cfg})

    def to_hf(self) -> dict[str, Any]:
        """The transformers ``preprocessor_config.json`` fields equivalent to this config."""
        code = {v: k for k, v in _PIL_CODE.items()}[self.interpolation]
        out: dict[str, Any] = {
            "do_resize": self.resize != "none",
            "resample": code,
            "do_rescale": True,
            "rescale_factor": self.rescale,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
            "do_center_crop": self.crop_size is not None and self.resize != "exact",
        }
        if self.resize == "shortest_edge":
            out["size"] = {"shortest_edge": self.resize_size}
        elif self.resize == "longest_edge":
            out["size"] = {"longest_edge": self.resize_size}
        elif self.resize == "exact":
            out["size"] = {"height": self.crop_size[0], "width": self.crop_size[1]}  # type: ignore[index]
        if out["do_center_crop"]:
            out["crop_size"] = {"height": self.crop_size[0], "width": self.crop_size[1]}  # type: ignore[index]
        if self.pad_size is not None:
            out["do_pad"] = True
            out["pad_size"] = {"height": self.pad_size[0], "width": self.pad_size[1]}
        return out

    @classmethod
    def from_open_clip(cls, pp: dict[str, Any]) -> PreprocessConfig:
        """Build from open_clip's ``preprocess_cfg`` (``size``, ``mode``, ``mean``, ``std``,
        ``interpolation``, ``resize_mode``), reproducing ``open_clip.image_transform`` for eval."""
        size = pp.get("size", 224)
        size = size if isinstance(size, int) else int(size[0]) if size[0] == size[-1] else tuple(size)
        if not isinstance(size, int):
            raise ValueError(f"open_clip non-square image size {size} is not supported")
        mode = pp.get("resize_mode", "shortest")
        interp = pp.get("interpolation", "bicubic")
        common = dict(
            interpolation=interp,
            mean=tuple(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(pp.get("std", (0.26862954, 0.26130258, 0.27577711))),
            resize_backend="pil",
            crop_rounding="round",
        )
        if mode == "shortest":
            return cls(resize="shortest_edge", resize_size=size, crop_size=(size, size), **common)  # type: ignore[arg-type]
        if mode == "squash":
            return cls(resize="exact", resize_size=None, crop_size=(size, size), **common)  # type: ignore[arg-type]
        raise ValueError(f"open_clip resize_mode {mode!r} is not supported (supported: 'shortest', 'squash')")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:  # the same message as visionfm.foundation.loading.read_json
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def _check_sizes(images: list[torch.Tensor], cfg: PreprocessConfig) -> None:
    """Refuse, before any resize, an image whose aspect ratio is over the limit or whose resized size would be empty
    or over :data:`MAX_RESIZED_PIXELS` (naming the image's index in this call, its size and the limit)."""
    from ..data.images import MAX_ASPECT_RATIO, ImageLoadError, _shape_problem

    for i, im in enumerate(images):
        h, w = int(im.shape[-2]), int(im.shape[-1])
        if h < 1 or w < 1:
            raise ImageLoadError(f"image {i} of the batch is empty ({w}x{h} pixels, width x height)")
        if (problem := _shape_problem(w, h, MAX_ASPECT_RATIO)) is not None:
            raise ImageLoadError(f"image {i} of the batch: {problem}")
        nh, nw = _resize_hw(h, w, cfg)
        if nh < 1 or nw < 1 or nh * nw > MAX_RESIZED_PIXELS:
            why = (
                "an empty image"
                if nh < 1 or nw < 1
                else f"{nh * nw} pixels, more than MAX_RESIZED_PIXELS={MAX_RESIZED_PIXELS}"
            )
            raise ImageLoadError(
                f"image {i} of the batch: {w}x{h} pixels (width x height) would be resized ({cfg.resize} "
                f"{cfg.resize_size}) to {nw}x{nh} = {why}; crop or pad the image first"
            )


def _resize_hw(h: int, w: int, cfg: PreprocessConfig) -> tuple[int, int]:
    if cfg.resize == "shortest_edge":
        s = cfg.resize_size
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = s, int(s * long / short)  # type: ignore[operator]
        return (new_short, new_long) if h <= w else (new_long, new_short)
    if cfg.resize == "longest_edge":
        scale = cfg.resize_size * 1.0 / max(h, w)  # type: ignore[operator]
        return int(h * scale + 0.5), int(w * scale + 0.5)
    if cfg.resize == "exact":
        return cfg.crop_size  # type: ignore[return-value]
    return h, w


def _resize_group(batch: torch.Tensor, size: tuple[int, int], cfg: PreprocessConfig) -> torch.Tensor:
    """Resize a uint8 ``[N, 3, h, w]`` batch to ``size``; returns uint8 ``[N, 3, H, W]`` (float in, float out with
    ``rescale_before_resize``)."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    t_interp, p_interp = _INTERP[cfg.interpolation]
    if cfg.resize_backend == "torch":
        return tvF.resize(batch, list(size), interpolation=t_interp, antialias=True)
    out = []
    for img in batch.cpu():
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        arr = np.asarray(pil.resize((size[1], size[0]), p_interp))
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    return torch.stack(out).to(batch.device)


def _crop_offsets(h: int, w: int, ch: int, cw: int, rounding: str) -> tuple[int, int]:
    if rounding == "round":
        return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return int((h - ch) / 2.0), int((w - cw) / 2.0)


def _group_by_shape(images: list[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[(im.shape[-2], im.shape[-1])].append(i)
    return groups


def preprocess_uint8(
    images: list[torch.Tensor], cfg: PreprocessConfig, device: torch.device | str | None = None
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Turn uint8 RGB images into the model input batch.

    Args:
        images: list of uint8 tensors ``[3, H_i, W_i]`` (any sizes).
        cfg: the preprocessing to apply.
        device: where to run the work (the model's device is usually fastest); default: where the
            images are.

    Returns:
        ``(pixel_values, resized_sizes)``: float32 ``[B, 3, H, W]`` normalised input and, per image,
        the ``(h, w)`` it had after resizing and before crop/pad (SAM needs it to map prompts).

    Raises:
        ImageLoadError: an image is empty, has an aspect ratio over ``visionfm.data.images.MAX_ASPECT_RATIO``
            (100:1), or would be resized to an empty image or to more than :data:`MAX_RESIZED_PIXELS`; checked
            before any pixel is resized.
    """
    if not images:
        raise ValueError("preprocess needs at least one image")
    _check_sizes(images, cfg)
    if device is not None:
        images = [im.to(device, non_blocking=True) for im in images]
    resized: list[torch.Tensor | None] = [None] * len(images)
    sizes: list[tuple[int, int]] = [(0, 0)] * len(images)
    for (h, w), idx in _group_by_shape(images).items():
        new = _resize_hw(h, w, cfg)
        group = torch.stack([images[i] for i in idx])
        if cfg.rescale_before_resize:  # DINOv3's processor: rescale to float, then resize the floats
            group = group.float() * cfg.rescale
        out = _resize_group(group, new, cfg)
        for k, i in enumerate(idx):
            resized[i] = out[k]
            sizes[i] = (int(new[0]), int(new[1]))
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=resized[0].device).view(1, 3, 1, 1)  # type: ignore[union-attr]
    std = torch.tensor(cfg.std, dtype=torch.float32, device=mean.device).view(1, 3, 1, 1)
    outputs: list[torch.Tensor | None] = [None] * len(images)
    for (h, w), idx in _group_by_shape(resized).items():  # type: ignore[arg-type]
        batch = torch.stack([resized[i] for i in idx])  # type: ignore[misc]
        if cfg.crop_size is not None and cfg.resize != "exact":
            ch, cw = cfg.crop_size
            if ch > h or cw > w:  # pad symmetrically (zeros) first, as both references do
                pt, pl = max(ch - h, 0) // 2, max(cw - w, 0) // 2
                batch = tvF.pad(batch, [pl, pt, max(cw - w, 0) - pl, max(ch - h, 0) - pt], fill=0)
                h, w = batch.shape[-2:]
            top, left = _crop_offsets(h, w, ch, cw, cfg.crop_rounding)
            batch = batch[..., top : top + ch, left : left + cw]
        x = ((batch if cfg.rescale_before_resize else batch.float() * cfg.rescale) - mean) / std
        if cfg.pad_size is not None:
            ph, pw = cfg.pad_size
            if x.shape[-2] > ph or x.shape[-1] > pw:
                raise ValueError(f"image of size {tuple(x.shape[-2:])} is larger than pad_size {cfg.pad_size}")
            x = torch.nn.functional.pad(x, (0, pw - x.shape[-1], 0, ph - x.shape[-2]))
        for k, i in enumerate(idx):
            outputs[i] = x[k]
    shapes = {tuple(o.shape) for o in outputs}  # type: ignore[union-attr]
    if len(shapes) != 1:
        raise ValueError(f"preprocessing produced differently sized images {sorted(shapes)}; set a crop or pad size")
    return torch.stack(outputs), sizes  # type: ignore[arg-type]
