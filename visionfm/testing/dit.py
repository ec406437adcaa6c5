"""Tiny random DiT pipeline (class-conditional, VAE latent space), diffusers format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._registry import tiny_writer


@tiny_writer("dit", default_backend="diffusers")
def write_tiny_dit(path: Path, backend: str = "diffusers") -> None:
    """Write a tiny random DiT pipeline (diffusers ``save_pretrained`` layout, safetensors).

    Transformer: 2 blocks, 2 heads x 8 dims (width 16), patch 2, latent sample size 8, 1000 classes (null
    class 1000, as ``DiTPipeline`` hard-codes). VAE: ``block_out_channels=(8, 16)`` (scale 2), 4 latent
    channels. Scheduler: ``DDIMScheduler()``. Model input 16 px, patch grid 4 x 4, 4 px per patch.
    Loadable with ``DiTPipeline.from_pretrained(path)``. Torch must be seeded by the caller.

    Args:
        path: directory to write into (created if missing).
        backend: only ``"diffusers"``.
    """
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    if backend != "diffusers":
        raise ValueError(f"tiny DiT checkpoints exist for backend 'diffusers' only, got {backend!r}")
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        norm_num_groups=4,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    )
    vae = tiny_vae()
    id2label = {"0": "tench, Tinca tinca", "1": "goldfish", "2": "tabby, tabby cat", "3": "golden retriever"}
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(), id2label=id2label)
    pipe.register_to_config(id2label=id2label)  # kept in model_index.json, as in the hub's DiT repos
    pipe.save_pretrained(str(path), safe_serialization=True)


__all__ = ["write_tiny_dit"]


def tiny_vae() -> Any:
    """A tiny random ``AutoencoderKL`` (2 blocks, 8/16 channels, 4 latent channels, scale 2) for DiT and PixArt."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
