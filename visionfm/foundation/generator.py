"""The generator interface that ``pipeline("generation")`` samples through (a leaf).

DiT (:class:`~visionfm.foundation.dit.DiTEncoder`, class-conditional) and PixArt
(:class:`~visionfm.foundation.pixart.PixArtEncoder`, text-to-image) declare it; the pipeline asks only for what is
listed here, never for a family name. A new generator family implements these members and works in the pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

CONDITIONINGS = ("class", "text")


class Generator:
    """A diffusion generator: a denoiser, the sampling scheduler and a latent decoder.

    Attributes:
        conditioning: ``"class"`` (class ids, e.g. DiT) or ``"text"`` (prompts, e.g. PixArt).
        transformer: the denoiser ``nn.Module`` (diffusers), called with ``(latents, timestep=..., ...)``.
        scheduler: the sampling scheduler as configured in the checkpoint (:meth:`new_scheduler` copies it).
        vae: the latent decoder, with ``decode(z).sample`` and ``config.scaling_factor`` (a pixel-space model's is
            an identity with scaling factor 1).
        vae_scale_factor: pixels per latent cell along a side.

    Class-conditional generators also have ``id2label`` (``{class id: name}``, may be empty) and
    :attr:`num_classes`; text-to-image ones have ``encode_prompts(prompts) -> (embeds [N, L, D], mask [N, L])``,
    ``added_cond_kwargs(batch, height, width, dtype)``, ``max_sequence_length`` and ``variant``.
    """

    conditioning: ClassVar[str] = ""
    transformer: nn.Module
    scheduler: Any
    vae: Any
    vae_scale_factor: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.conditioning not in CONDITIONINGS:
            raise TypeError(f"{cls.__name__}.conditioning must be one of {CONDITIONINGS}, got {cls.conditioning!r}")

    @property
    def num_classes(self) -> int:
        """Class-conditional: number of classes (the null class for guidance is this index)."""
        return int(self.transformer.config.num_embeds_ada_norm)

    def new_scheduler(self) -> Any:
        """A fresh scheduler with the checkpoint's configuration (schedulers keep per-run state)."""
        return type(self.scheduler).from_config(self.scheduler.config)

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """VAE-decode latents ``[B, C, h, w]`` to uint8 HWC images ``[B, H, W, 3]`` (diffusers' post-processing)."""
        vae = self.vae
        x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        x = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return (x * 255).round().astype(np.uint8)
