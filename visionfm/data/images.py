"""Robust image input: open files safely and normalise any image to a uint8 ``[3, H, W]`` tensor.

Conventions: numpy arrays are always HWC, torch tensors always CHW; pixel values are uint8 (0..255) or floating
point in [0, 1]; alpha is composited over a white background. URLs are not fetched (download the image first), and
images thinner than ``1:MAX_ASPECT_RATIO`` are refused before they are decoded (a 1x10000 PNG is 111 bytes, but
resizing its short side to 224 pixels makes a 224x2,240,000 image).
"""

import logging
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS: int = 178_956_970  # default decompression-bomb limit (width * height); PIL's default value
#: Largest accepted ratio of an image's long side to its short side (inclusive). Panoramas (up to ~20:1) pass;
#: 1-pixel strips, whose short-side resize would allocate gigabytes, do not. ``max_aspect_ratio=None`` lifts it.
MAX_ASPECT_RATIO: float = 100.0
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class ImageLoadError(ValueError):
    """An image could not be read or has an unusable shape, dtype, mode or value range."""


def _fail(name: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot read image {name!r}: {reason}; expected a PNG/JPEG/WebP/TIFF/... image file")


def _shape_problem(width: int, height: int, max_aspect_ratio: float | None) -> str | None:
    """Why a ``width x height`` image is refused for its aspect ratio, or ``None`` if it is acceptable."""
    if max_aspect_ratio is None or min(width, height) <= 0:
        return None
    ratio = max(width, height) / min(width, height)
    if ratio <= max_aspect_ratio:
        return None
    return (
        f"{width}x{height} pixels (width x height): its aspect ratio {ratio:g}:1 is more than "
        f"max_aspect_ratio={max_aspect_ratio:g} (resizing its short side to the model's input size would need "
        "gigabytes; crop or pad it first, or pass max_aspect_ratio=None)"
    )


def _decode(
    fp: str | os.PathLike | IO[bytes], name: str, max_pixels: int, max_aspect_ratio: float | None = MAX_ASPECT_RATIO
) -> Image.Image:
    try:
        with warnings.catch_warnings():  # we do our own size check below, with our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)  # reads the header only
    except UnidentifiedImageError as e:
        raise _fail(name, "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise _fail(name, f"exceeds PIL's own hard decompression-bomb limit ({e})") from e
    except Exception as e:
        raise _fail(name, f"cannot parse the image header ({type(e).__name__}: {e})") from e
    width, height = img.size
    if width * height > max_pixels:
        reason = f"image is {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}"
        raise _fail(name, f"{reason} (possible decompression bomb; pass a larger max_pixels= to allow it)")
    if (problem := _shape_problem(width, height, max_aspect_ratio)) is not None:
        raise _fail(name, f"image is {problem}")
    try:
        img.load()  # decode now so truncated/corrupt data fails here, not lazily later
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # corrupt data: PIL raises OSError, SyntaxError, EOFError, struct.error, ...
        raise _fail(name, f"truncated or corrupt image data ({type(e).__name__}: {e})") from e
    if (width, height) != img.size:
        logger.debug("applied EXIF orientation to %s: %dx%d -> %dx%d", name, width, height, *img.size)
    return img


def open_image(
    path_or_file: str | os.PathLike | IO[bytes],
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> Image.Image:
    """Open, fully decode, EXIF-orient and RGB-convert one image.

    Args:
        path_or_file: A filesystem path (``str`` or ``os.PathLike``) or a binary file object opened for reading.
        max_pixels: Largest allowed ``width * height``, checked from the header before decoding. PIL's global
            ``Image.MAX_IMAGE_PIXELS`` is not changed (PIL still refuses images over twice it in ``Image.open``).
        max_aspect_ratio: Largest allowed long side / short side, checked from the header before decoding
            (:data:`MAX_ASPECT_RATIO`); ``None`` for no limit.

    Returns:
        A fully loaded 8-bit ``"RGB"`` PIL image, rotated/flipped per its EXIF orientation.

    Raises:
        ImageLoadError: Naming the file, if it is a URL (``http://...``: not fetched), missing, a directory, empty,
            not an image, truncated/corrupt, over ``max_pixels`` or ``max_aspect_ratio``, or of a mode
            :func:`to_rgb` cannot convert.
    """
    if not isinstance(path_or_file, (str, os.PathLike)):
        name = getattr(path_or_file, "name", None) or f"<{type(path_or_file).__name__} object>"
        img = _decode(path_or_file, name, max_pixels, max_aspect_ratio)
    else:
        name, path = os.fspath(path_or_file), Path(path_or_file)
        if isinstance(path_or_file, str) and _URL.match(path_or_file) and not path.exists():
            raise _fail(name, "URLs are not supported, download the image first")
        if not path.exists():
            raise _fail(name, "no such file")
        if path.is_dir():
            raise _fail(name, "it is a directory, not a file")
        if path.stat().st_size == 0:
            raise _fail(name, "file is empty (0 bytes)")
        try:
            with open(path, "rb") as f:
                img = _decode(f, name, max_pixels, max_aspect_ratio)
        except OSError as e:
            raise _fail(name, f"cannot open file ({e})") from e
    try:
        return to_rgb(img)
    except ImageLoadError as e:
        raise _fail(name, str(e)) from e


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite uint8 ``(H, W, 4)`` over white -> uint8 ``(H, W, 3)``."""
    rgb, alpha = rgba[..., :3].astype(np.uint32), rgba[..., 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)  # rounded


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    """Scale a 16/32-bit int or float grayscale image to uint8 ``(H, W)`` by its type's range."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(arr.max(initial=0.0))
        scaled = np.clip(arr, 0.0, 1.0) * 255.0 if peak <= 1.0 else np.clip(arr, 0.0, None) / peak * 255.0
        return np.rint(scaled).astype(np.uint8)
    arr = np.clip(arr.astype(np.int64), 0, None)  # "I;16*" (always <= 65535) or "I"
    if (peak := int(arr.max(initial=0))) <= 65535:
        return ((arr + 128) // 257).astype(np.uint8)  # 0..65535 -> 0..255, rounded
    return np.rint(arr / peak * 255.0).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any common mode to 8-bit ``"RGB"``.

    ``"RGB"`` is returned as is. ``"LA"``/``"PA"``/``"RGBA"``/``"RGBa"`` and ``"P"`` with ``transparency`` are
    composited over white. ``"I;16*"`` maps 0..65535 to 0..255; ``"I"`` likewise if its max is <= 65535, else it
    is scaled by its max; ``"F"`` is clipped to [0, 1] if its max is <= 1, else scaled by its max. Other modes
    (``"1"``, ``"L"``, ``"P"``, ``"CMYK"``, ``"YCbCr"``, ``"LAB"``, ``"HSV"``, ``"RGBX"``) use ``Image.convert``.

    Args:
        img: A PIL image of any size.

    Returns:
        A PIL image of the same size in mode ``"RGB"``.

    Raises:
        ImageLoadError: If the mode is not supported (the message names the mode).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("LA", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
        return Image.fromarray(_composite_over_white(np.asarray(img.convert("RGBA"))))
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(img)).convert("RGB")
    raise ImageLoadError(f"unsupported image mode {mode!r}; expected an RGB/RGBA/L/LA/P/CMYK/I;16/I/F/... image")


def _array_to_hwc(arr: np.ndarray, name: str, layout: str) -> np.ndarray:
    """Validate an HWC array (uint8, or float in [0, 1]) and return uint8 ``(H, W, 3)``."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise ImageLoadError(f"{name}: expected {layout} with 1, 3 or 4 channels, got shape {tuple(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            r, c, ch = (int(v) for v in np.argwhere(~finite)[0])
            raise ImageLoadError(
                f"{name}: float pixel values contain NaN or infinity ({int((~finite).sum())} of {arr.size} values; "
                f"first at channel {ch}, row {r}, column {c}); they must lie in [0, 1]"
            )
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (-1e-3 <= lo and hi <= 1 + 1e-3):  # 1e-3 slack for rounding noise; also rejects NaN
            raise ImageLoadError(f"{name}: float pixel values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageLoadError(f"{name}: expected dtype uint8 or float in [0, 1], got {arr.dtype}")
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return _composite_over_white(arr) if arr.shape[2] == 4 else arr


def _check_aspect(image: Any, name: str, max_aspect_ratio: float | None) -> None:
    """Refuse an in-memory image (PIL, HWC ndarray, CHW tensor) whose aspect ratio is over the limit."""
    if isinstance(image, Image.Image):
        width, height = image.size
    elif isinstance(image, np.ndarray) and image.ndim in (2, 3):
        height, width = image.shape[:2]
    elif isinstance(image, torch.Tensor) and image.ndim == 3:
        height, width = image.shape[-2:]
    else:
        return  # wrong shapes get their own error below
    if (problem := _shape_problem(int(width), int(height), max_aspect_ratio)) is not None:
        raise ImageLoadError(f"{name}: {problem}")


def to_uint8_chw(
    image: Any,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str = "image",
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> torch.Tensor:
    """Convert ONE image to a contiguous CPU uint8 tensor of shape ``[3, H, W]``.

    Args:
        image: One of: a PIL image (any mode supported by :func:`to_rgb`); a numpy array in **HWC** layout,
            shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; a torch tensor in **CHW** layout,
            shape ``(1, H, W)``, ``(3, H, W)`` or ``(4, H, W)``, on any device; a ``str``/``os.PathLike`` path
            or binary file object (read with :func:`open_image`). Arrays/tensors must be uint8 or floating point
            in [0, 1] (converted with ``round(x * 255)``). Alpha is composited over white, 1 channel is repeated.
        max_pixels: Decompression-bomb limit passed to :func:`open_image` for paths and file objects.
        name: How the argument is called in error messages.
        max_aspect_ratio: Largest allowed long side / short side (:data:`MAX_ASPECT_RATIO`); ``None``: no limit.

    Returns:
        A new contiguous ``torch.uint8`` tensor of shape ``[3, H, W]`` on the CPU (never aliases the input).

    Raises:
        TypeError: If ``image`` is none of the accepted types.
        ImageLoadError: If the file is unreadable (or a URL), the aspect ratio is over ``max_aspect_ratio``, or the
            shape, dtype, mode or value range is wrong (NaN/infinity included).
    """
    _check_aspect(image, name, max_aspect_ratio)
    try:
        if isinstance(image, (str, os.PathLike)) or hasattr(image, "read"):
            image = open_image(image, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
        if isinstance(image, Image.Image):
            image = np.asarray(to_rgb(image))  # (H, W, 3) uint8
    except ImageLoadError as e:
        raise ImageLoadError(f"{name}: {e}") from e
    if isinstance(image, np.ndarray):
        hint = " (looks like CHW; numpy arrays must be HWC)" if image.ndim == 3 and image.shape[0] in (1, 3, 4) else ""
        hwc = _array_to_hwc(image, name, f"an HWC ndarray of shape (H, W) or (H, W, C){hint}")
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            hint = " (looks like HWC; tensors must be CHW)" if t.ndim == 3 and t.shape[2] in (1, 3, 4) else ""
            expected = f"a CHW tensor of shape (C, H, W) with 1, 3 or 4 channels{hint}"
            raise ImageLoadError(f"{name}: expected {expected}, got shape {tuple(t.shape)}")
        hwc = _array_to_hwc(t.permute(1, 2, 0).numpy(), name, "a CHW tensor")
    else:
        kinds = "a PIL image, HWC numpy array, CHW torch tensor, path or file object"
        raise TypeError(f"{name}: expected {kinds}, got {type(image).__name__}")
    return torch.from_numpy(hwc.transpose(2, 0, 1).copy())  # copy() is C-contiguous and never aliases the input


def as_image_list(images: Any) -> list:
    """Normalise "one image or a batch" to a list of single images (no conversion is done).

    Args:
        images: A single image (PIL image, ``str``/``os.PathLike`` path, binary file object, HWC ndarray with
            ndim 2 or 3, CHW tensor with ndim 3), a list/tuple of images, a 4-D ndarray (BHWC) or tensor (BCHW),
            or any other iterable of images (e.g. a generator).

    Returns:
        A list of single images; 4-D arrays/tensors become per-item views (no copy).

    Raises:
        ImageLoadError: For an ndarray (tensor) whose ndim is not 2, 3 or 4 (3 or 4).
        TypeError: For a non-iterable (or ``bytes``/``dict``) argument, naming its type.
    """
    if isinstance(images, (Image.Image, str, os.PathLike)) or hasattr(images, "read"):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        is_array = isinstance(images, np.ndarray)
        if images.ndim in ((2, 3) if is_array else (3,)):
            return [images]
        if images.ndim == 4:
            return list(images)  # per-item views
        expected = "an HWC ndarray (ndim 2/3) or BHWC batch" if is_array else "a CHW tensor or BCHW batch"
        raise ImageLoadError(f"images: expected {expected}, got shape {tuple(images.shape)}")
    if isinstance(images, Iterable) and not isinstance(images, (bytes, bytearray, dict)):
        return list(images)
    raise TypeError(f"images: expected an image, a list/tuple/iterable of images or a 4-D batch, got {type(images)}")


def load_images(
    images: Any, *, max_pixels: int = MAX_IMAGE_PIXELS, max_aspect_ratio: float | None = MAX_ASPECT_RATIO
) -> list[torch.Tensor]:
    """Load one image or a batch into a list of uint8 ``[3, H, W]`` CPU tensors (sizes may differ).

    Args:
        images: Anything accepted by :func:`as_image_list`; each item anything accepted by :func:`to_uint8_chw`.
        max_pixels: Decompression-bomb limit for items that are paths/file objects.
        max_aspect_ratio: Largest allowed long side / short side of every item; ``None``: no limit.

    Returns:
        One contiguous ``torch.uint8`` tensor of shape ``[3, H_i, W_i]`` per image, in input order.

    Raises:
        TypeError, ImageLoadError: As :func:`to_uint8_chw`, the message starting ``"image {i} of the batch: "``.
    """
    items = as_image_list(images)
    return [
        to_uint8_chw(item, max_pixels=max_pixels, name=f"image {i} of the batch", max_aspect_ratio=max_aspect_ratio)
        for i, item in enumerate(items)
    ]
