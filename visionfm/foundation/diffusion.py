"""Shared machinery of the diffusers denoiser families (DiT, PixArt): features from early-stopped denoiser blocks,
encoder metadata and ADM preprocessing, scheduler loading, and latent encoding / noise draws.

Family modules use it; it knows no family.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .encoder import tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .preprocess import PreprocessConfig

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by a forward hook once every needed block has run, to skip the rest of the transformer."""


def _stop_hook(_module: nn.Module, _inp: Any, _out: Any) -> None:
    raise _StopForward


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None, none_ok: bool = False) -> None:
    """Validate an integer option (``TypeError`` if not an int, ``ValueError`` if out of ``[lo, hi]``)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DiT option {name}= must be an int{' or None' if none_ok else ''}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"DiT option {name}={value} is out of range [{lo}, {hi}]")


def load_scheduler(path: Path) -> Any:
    """The pipeline's scheduler, of the class its config names (``DDPMScheduler`` if that is unknown)."""
    import diffusers
    from diffusers import DDPMScheduler
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    cfg = read_json_or_none(path / "scheduler" / "scheduler_config.json")
    if cfg is None:
        raise FileNotFoundError(f"{path} has no readable scheduler/scheduler_config.json")
    name = str(cfg.get("_class_name", "DDPMScheduler"))
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        logger.warning("unknown scheduler class %r in %s; using DDPMScheduler", name, path)
        cls = DDPMScheduler
    return cls.from_pretrained(str(path), subfolder="scheduler")


def run_denoiser_blocks(
    transformer: nn.Module, needed: Sequence[int], *args: Any, **kwargs: Any
) -> dict[int, torch.Tensor]:
    """Run ``transformer(*args, **kwargs)`` only up to the deepest block in ``needed``; return those blocks' outputs
    ``{i: [N, T, C]}`` (the final norm, projection and unpatchify never run)."""
    blocks = transformer.transformer_blocks
    with tap_blocks(blocks, needed) as captured:
        stop = blocks[max(needed)].register_forward_hook(_stop_hook)  # runs after the tap hooks
        try:
            transformer(*args, return_dict=False, **kwargs)
        except _StopForward:
            pass
        finally:
            stop.remove()
    return captured


def ensemble_features(
    captured: dict[int, torch.Tensor], batch: int, ensemble: int, grid: tuple[int, int], layer: int, taps: Sequence[int]
) -> Features:
    """``Features`` from block outputs ``[batch * ensemble, T, C]``: averaged over the ensemble draws, on the grid."""

    def to_grid(tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_grid(tokens.reshape(batch, ensemble, *tokens.shape[1:]).mean(1), grid)

    patches = to_grid(captured[layer])
    out_layers = {i: (patches if i == layer else to_grid(captured[i])) for i in taps}
    return Features(pooled=patches.mean((1, 2)), patches=patches, grid=grid, layers=out_layers)


def denoiser_info(
    family: str, name: str, vae: nn.Module, transformer: nn.Module
) -> tuple[EncoderInfo, PreprocessConfig, int, int]:
    """``(info, preprocessing, vae_scale, num_layers)`` of a diffusion-transformer encoder (DiT, PixArt).

    The input size is the transformer's ``sample_size`` times the VAE scale; a patch covers ``patch_size * vae_scale``
    pixels. Preprocessing is DiT's reference data pipeline (ADM's ``center_crop_arr``): PIL bicubic resize of the
    short side and a crop at ``floor((H - S) / 2)``, scaled to [-1, 1] (ADM's extra BOX halving of images larger
    than ``2S`` is not reproduced).
    """
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    patch = int(transformer.config.patch_size)
    size = int(transformer.config.sample_size) * vae_scale
    num_layers = len(transformer.transformer_blocks)
    width = int(transformer.config.num_attention_heads * transformer.config.attention_head_dim)
    info = EncoderInfo(family=family, backend="diffusers", name=name, embed_dim=width, width=width,
                       patch_size=patch * vae_scale, image_size=(size, size), mean=(0.5, 0.5, 0.5),
                       std=(0.5, 0.5, 0.5), has_text=False, num_layers=num_layers)  # fmt: skip
    pp = PreprocessConfig(resize="shortest_edge", resize_size=size, interpolation="bicubic", crop_size=(size, size),
                          crop_rounding="floor", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                          resize_backend="pil")  # fmt: skip
    return info, pp, vae_scale, num_layers


class DenoiserEncoder:
    """Latent encoding and the per-image noise draws of a denoiser-feature encoder (mixed into DiT and PixArt).

    Needs ``self.vae``, ``self.noise_seed`` and ``self.ensemble``.
    """

    vae: Any
    noise_seed: int
    ensemble: int

    def encode_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean, scaled to the denoiser's latent space.

        Args:
            pixel_values: ``[B, 3, S, S]`` in [-1, 1].

        Returns:
            ``[B, C_lat, S / vae_scale, S / vae_scale]`` latents ``(mean - shift_factor) * scaling_factor``.
        """
        latents = self.vae.encode(pixel_values).latent_dist.mean
        shift = getattr(self.vae.config, "shift_factor", None)
        if shift is not None:
            latents = latents - shift
        return latents * self.vae.config.scaling_factor

    def noise(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """The ``ensemble`` noise draws every image gets.

        Args:
            shape: ``(C_lat, h, w)`` of one latent.
            device: where to put the noise (drawn on the CPU for reproducibility across devices).

        Returns:
            float32 ``[ensemble, C_lat, h, w]``: draw ``k`` is the ``k``-th ``torch.randn(shape)`` of a CPU
            generator seeded with ``noise_seed``.
        """
        g = torch.Generator(device="cpu").manual_seed(self.noise_seed)
        draws = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for _ in range(self.ensemble)]
        return torch.stack(draws).to(device)
