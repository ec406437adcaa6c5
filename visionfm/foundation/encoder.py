"""The ``Encoder`` base class: preprocessing, batched encoding and layer taps for every family."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .features import EncoderInfo, Features
from .preprocess import PreprocessConfig, preprocess_uint8

logger = logging.getLogger(__name__)


class Encoder(nn.Module):
    """An image encoder behind the :class:`Features` contract.

    Subclasses implement :meth:`forward` (pixels to ``Features``, differentiable) and, for
    text-capable families, :meth:`encode_text`. Everything else — input decoding, batching,
    progress, inference mode — lives here once.

    ``forward`` is never wrapped in ``no_grad``; :meth:`encode` runs under ``torch.inference_mode``.
    """

    def __init__(self, info: EncoderInfo, preprocess_config: PreprocessConfig) -> None:
        super().__init__()
        self._info = info
        self.preprocess_config = preprocess_config
        #: the speed options applied at load (``visionfm.foundation.speed.apply_speed_options``); ``{}`` when none
        self.speed_options: dict[str, Any] = {}

    @property
    def info(self) -> EncoderInfo:
        """Static facts: family, backend, dims, patch and image size, normalisation, text support."""
        return self._info

    @property
    def device(self) -> torch.device:
        """Device of the encoder's parameters."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the encoder's parameters."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def __repr__(self) -> str:
        i = self._info
        return (
            f"{type(self).__name__}(name={i.name!r}, backend={i.backend!r}, embed_dim={i.embed_dim}, width={i.width})"
        )

    # -- preprocessing -------------------------------------------------------------------------
    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise already-sized float pixels ``[B, 3, H, W]`` in ``[0, 1]`` with ``info.mean``/``info.std``, onto
        the encoder's device and dtype (for callers that crop or tile images themselves, e.g. sliding windows)."""
        mean = torch.tensor(self.info.mean, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.info.std, device=pixels.device, dtype=torch.float32).view(1, 3, 1, 1)
        return ((pixels.float() - mean) / std).to(self.device, self.dtype)

    def preprocess(self, images: Any) -> torch.Tensor:
        """Decode and preprocess images into the model's input batch.

        Args:
            images: one image or a batch: PIL image, HWC uint8 ndarray, CHW uint8/float tensor, a
                file path, or a list / 4-D array of them.

        Returns:
            ``[B, 3, H, W]`` normalised pixels on the encoder's device, in its dtype.
        """
        return self.preprocess_with_sizes(images)[0]

    def preprocess_with_sizes(self, images: Any) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
        """Like :meth:`preprocess`, also returning per-image original ``(H, W)`` and resized ``(h, w)``."""
        from ..data.images import load_images

        tensors = load_images(images)
        original = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        pixels, resized = preprocess_uint8(tensors, self.preprocess_config, device=self.device)
        return pixels.to(self.dtype), original, resized

    # -- speed options ---------------------------------------------------------------------------
    token_merging: Any = None  # the installed visionfm.foundation.token_merging.TokenMerging, else None

    def token_merging_sites(self) -> Any:
        """Where tokens may be merged (a :class:`visionfm.foundation.token_merging.TokenMergingSites`); families
        with ViT blocks override this. The default raises: this family has no blocks to merge in."""
        raise ValueError(
            f"token merging is not available for {type(self).__name__} ({self._info.family}/{self._info.backend}): "
            "it works on ViT blocks; this encoder has none that it supports"
        )

    # -- encoding --------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels.

        Args:
            pixel_values: ``[B, 3, H, W]`` as returned by :meth:`preprocess`.
            layers: block indices to tap (negative counts from the end); see ``Features.layers``.

        Returns:
            ``Features`` for the batch (differentiable; no inference mode here).
        """
        raise NotImplementedError

    def encode(
        self,
        images: Any,
        *,
        batch_size: int = 32,
        layers: Sequence[int] | None = None,
        progress: bool | None = None,
        output_device: torch.device | str | None = None,
        num_workers: int | None = None,
        decode_device: torch.device | str | None = None,
    ) -> Features:
        """Encode images in batches under ``torch.inference_mode``.

        Args:
            images: one image or a batch (see :meth:`preprocess`); a path list is decoded a batch at
                a time, so long lists do not sit in memory as pixels.
            batch_size: images per forward pass.
            layers: block indices to tap into ``Features.layers``.
            progress: show a tqdm bar; default: only when there is more than one batch.
            output_device: where to gather results (default: the encoder's device). Use ``"cpu"``
                for large inputs on a GPU.
            num_workers: DataLoader worker processes that decode the next batches while the model runs
                (pinned memory on CUDA). Default: for file paths spanning several batches, half the CPU cores
                (at most 8) when the model is on a GPU; otherwise 0 (decode in this process: on a CPU model, workers
                would take cores from the forward pass).
            decode_device: ``"cuda"`` decodes JPEG files on the GPU in batches (nvJPEG, via torchvision); other
                files fall back to PIL. Default: ``"cuda"`` for JPEG paths when the model is on CUDA, else PIL.

        Returns:
            ``Features`` with one row per input image, in input order.
        """
        import os

        from ..data.images import as_image_list
        from ..data.loader import iter_image_batches

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_image_list(images)
        if not items:
            raise ValueError("encode() got no images")
        n_batches = math.ceil(len(items) / batch_size)
        show = n_batches > 1 if progress is None else progress
        paths = all(isinstance(x, (str, os.PathLike)) for x in items)
        on_gpu = self.device.type == "cuda"
        if num_workers is None:
            cores = os.cpu_count() or 1
            # on a CPU model, decode workers take cores from the forward pass (measured: 0.87x vs 0.9x+ inline)
            num_workers = min(8, max(1, cores // 2)) if on_gpu and paths and n_batches > 1 else 0
        if decode_device is None and paths and on_gpu:
            decode_device = self.device
        parts: list[Features] = []
        with (
            torch.inference_mode(),
            tqdm(total=len(items), desc=f"encode {self._info.name}", unit="img", disable=not show) as bar,
        ):
            for batch in iter_image_batches(items, batch_size, num_workers=num_workers, device=self.device,
                                            decode_device=decode_device):  # fmt: skip
                pixels, _ = preprocess_uint8(batch, self.preprocess_config, device=self.device)
                feats = self(pixels.to(self.dtype), layers=layers)
                if output_device is not None:
                    feats = feats.to(output_device)
                parts.append(feats)
                bar.update(len(batch))
        return Features.cat(parts)

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embed texts into the image-text space.

        Args:
            texts: one string or a list of strings.
            batch_size: texts per forward pass.

        Returns:
            ``[N, D]`` text embeddings (not normalised), ``D = info.embed_dim``.
        """
        raise TypeError(f"{self._info.family} encoder {self._info.name!r} has no text tower (info.has_text is False)")

    # -- helpers for subclasses ------------------------------------------------------------------
    def _layer_indices(self, layers: Sequence[int] | None) -> list[int]:
        """Normalise requested block indices to sorted unique non-negative ints, with a clear error."""
        if not layers:
            return []
        n = self._info.num_layers
        out = []
        for i in layers:
            j = int(i) + n if int(i) < 0 else int(i)
            if not 0 <= j < n:
                raise ValueError(
                    f"layer {i} is out of range for {self._info.name!r}, which has {n} blocks (0..{n - 1})"
                )
            out.append(j)
        return sorted(set(out))


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """One string or a non-empty list of strings, as a list; a ``TypeError`` otherwise."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_text expects a string or a non-empty list of strings")
    return texts


def preview_texts(texts: Sequence[str], n: int = 3, width: int = 80) -> str:
    """The first ``n`` texts, each with its middle elided when long (long texts often differ only at the end)."""
    half = (width - 5) // 2
    shown = [repr(t if len(t) <= width else f"{t[:half]} ... {t[-half:]}") for t in texts[:n]]
    return ", ".join(shown) + (f" and {len(texts) - n} more" if len(texts) > n else "")


class TextEncoder(Encoder):
    """An encoder with a text tower: batched :meth:`encode_text` with the over-long-text warning, shared by every
    image-text family (CLIP / SigLIP, AIMv2). A subclass provides :attr:`context_length`, :meth:`_is_overlong` and
    :meth:`_embed_text_batch`."""

    logit_scale: float
    logit_bias: float | None

    @property
    def context_length(self) -> int:
        """Tokens the text tower reads, special tokens included (77 for CLIP, 64 for SigLIP); longer texts are
        truncated to it."""
        raise NotImplementedError

    def _is_overlong(self, texts: list[str]) -> list[bool]:
        raise NotImplementedError

    def overlong_texts(self, texts: str | Sequence[str]) -> list[str]:
        """The texts (in order) that are longer than :attr:`context_length` tokens, which :meth:`encode_text`
        truncates: two of them that differ only after the cut get the same embedding."""
        texts = as_texts(texts)
        return [t for t, cut in zip(texts, self._is_overlong(texts), strict=True) if cut]

    def _embed_text_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: str | Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Embed texts into the image-text space.

        Texts longer than :attr:`context_length` tokens are truncated, as by open_clip and transformers, with a
        logged warning naming them (captions and generation prompts may be long; a label never should be, and
        the zero-shot pipelines refuse labels whose prompts do not fit). :meth:`overlong_texts` finds them first.

        Args:
            texts: one string or a list of strings.
            batch_size: texts per forward pass.

        Returns:
            ``[N, D]`` text embeddings (not normalised), ``D = info.embed_dim``.
        """
        texts = as_texts(texts)
        cut = self.overlong_texts(texts)
        if cut:  # logged under the family module's logger (visionfm.foundation.clip.encoders, ...)
            logging.getLogger(type(self).__module__).warning(
                "encode_text: %d of %d texts are longer than the %d-token text context of %r and are truncated "
                "(texts that differ only after the cut get the same embedding): %s",
                len(cut), len(texts), self.context_length, self._info.name, preview_texts(cut),
            )  # fmt: skip
        with torch.inference_mode():
            return torch.cat(
                [self._embed_text_batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
            )


@contextlib.contextmanager
def tap_blocks(blocks: Sequence[nn.Module], indices: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture the outputs of ``blocks[i]`` for ``i in indices`` during a forward pass.

    Yields a dict filled as the forward runs: ``{i: output}`` (the first element when a block
    returns a tuple; with token merging on, restored to the full token sequence). Hooks are removed on exit, also
    on error.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(i: int):
        def hook(module: nn.Module, _inp: Any, out: Any) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            unmerge = getattr(module, "_vfm_unmerge", None)  # token merging: back on the full token sequence
            captured[i] = unmerge(out) if unmerge is not None else out

        return hook

    try:
        for i in indices:
            handles.append(blocks[i].register_forward_hook(make_hook(i)))
        yield captured
    finally:
        for h in handles:
            h.remove()


def restore_tokens(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x``, the output of ``block`` when a caller runs the blocks itself, back on the full token sequence if token
    merging is installed (:mod:`visionfm.foundation.token_merging`); ``x`` unchanged otherwise. Code that runs all
    but the last block by hand and then computes the last one itself (the dense CLIP modes) calls this on the
    second-to-last block's output."""
    unmerge = getattr(block, "_vfm_unmerge", None)
    return unmerge(x) if unmerge is not None else x


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int], prefix: int = 0) -> torch.Tensor:
    """``[B, prefix + h*w, C]`` token sequence to a ``[B, h, w, C]`` patch grid (prefix tokens dropped)."""
    b, n, c = tokens.shape
    h, w = grid
    if n - prefix != h * w:
        raise ValueError(f"cannot reshape {n} tokens (prefix {prefix}) into a {h}x{w} grid")
    return tokens[:, prefix:].reshape(b, h, w, c)
