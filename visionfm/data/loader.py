"""Fast image input for ``Encoder.encode``: decoding in DataLoader workers, and JPEG decoding on the GPU.

``Encoder.encode(paths, num_workers=4)`` decodes the next batches in worker processes while the model runs on the
current one (pinned memory when the model is on CUDA), so decoding hides behind the forward pass.
``decode_device="cuda"`` reads file bytes in the workers and decodes JPEGs as a batch with nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``); other formats, and files nvJPEG rejects, fall back to PIL on the CPU.
Either way, an unreadable file raises :class:`~visionfm.data.images.ImageLoadError` naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .images import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, ImageLoadError, _shape_problem, to_uint8_chw

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


class _Items(torch.utils.data.Dataset):
    """Item ``i``: the decoded uint8 ``[3, H, W]`` image, or (``raw_jpeg``) a JPEG file's bytes as a uint8 tensor."""

    def __init__(self, items: Sequence[Any], raw_jpeg: bool, max_pixels: int) -> None:
        self.items, self.raw_jpeg, self.max_pixels = items, raw_jpeg, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, str, torch.Tensor]:
        item = self.items[i]
        if self.raw_jpeg and _is_path(item) and os.path.isfile(item):  # else to_uint8_chw names the problem
            with open(item, "rb") as f:
                data = f.read()
            if data[:3] == _JPEG_MAGIC:
                return i, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return i, "pixels", to_uint8_chw(item, max_pixels=self.max_pixels, name=f"image {i} of the batch")


def _collate(rows: list[tuple[int, str, torch.Tensor]]) -> list[tuple[int, str, torch.Tensor]]:
    return rows


def _decode_jpegs(rows: list[tuple[int, str, torch.Tensor]], items: Sequence[Any], device: torch.device,
                  max_pixels: int) -> list[torch.Tensor]:  # fmt: skip
    """Batch-decode the ``"jpeg"`` rows on ``device`` (EXIF orientation applied, RGB); PIL fallback per file."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [t if kind == "pixels" else None for _, kind, t in rows]
    jpeg = [k for k, (_, kind, _) in enumerate(rows) if kind == "jpeg"]
    if jpeg:
        try:
            decoded = decode_jpeg([rows[k][2] for k in jpeg], mode=ImageReadMode.RGB, device=device,
                                  apply_exif_orientation=True)  # fmt: skip
            for k, im in zip(jpeg, decoded):
                out[k] = im
        except RuntimeError as e:  # a file nvJPEG / libjpeg rejects (progressive CMYK, corrupt, ...): PIL decides
            logger.debug("batched JPEG decode failed (%s); decoding this batch's JPEGs with PIL", e)
            for k in jpeg:
                i = rows[k][0]
                out[k] = to_uint8_chw(items[i], max_pixels=max_pixels, name=f"image {i} of the batch").to(device)
    for k in jpeg:
        h, w = out[k].shape[-2:]  # type: ignore[union-attr]
        if h * w > max_pixels:
            raise ImageLoadError(
                f"image {rows[k][0]} of the batch: {w}x{h} pixels is more than max_pixels={max_pixels}"
            )
        if (problem := _shape_problem(int(w), int(h), MAX_ASPECT_RATIO)) is not None:
            raise ImageLoadError(f"image {rows[k][0]} of the batch: {problem}")
    return out  # type: ignore[return-value]


def iter_image_batches(
    items: Sequence[Any],
    batch_size: int,
    *,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    decode_device: torch.device | str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[list[torch.Tensor]]:
    """Yield batches of uint8 ``[3, H_i, W_i]`` images (sizes may differ), in input order.

    Args:
        items: images as :func:`~visionfm.data.images.to_uint8_chw` takes them (paths, arrays, PIL, tensors).
        batch_size: images per batch.
        num_workers: DataLoader worker processes decoding ahead of the consumer (0: decode in this process).
        device: where the consumer runs; CUDA turns on pinned memory.
        decode_device: ``"cuda"``: JPEG files are decoded on that GPU in batches (nvJPEG); ``None``: PIL on the CPU.
        max_pixels: decompression-bomb limit.

    Returns:
        An iterator of lists of tensors: on ``decode_device`` for GPU-decoded JPEGs, on the CPU otherwise.
    """
    dec = torch.device(decode_device) if decode_device is not None else None
    ds = _Items(items, raw_jpeg=dec is not None, max_pixels=max_pixels)
    pin = torch.device(device).type == "cuda" if device is not None else False
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                     collate_fn=_collate, pin_memory=pin,
                                     persistent_workers=False, prefetch_factor=2 if num_workers else None)  # fmt: skip
    for rows in dl:
        if dec is not None:
            yield _decode_jpegs(rows, items, dec, max_pixels)
        else:
            yield [t for _, _, t in rows]
