"""Tiny random DINO (v1) ViT checkpoints, transformers ``ViTModel`` format."""

from __future__ import annotations

from pathlib import Path

import torch

from visionfm.foundation.dino import IMAGENET_MEAN, IMAGENET_STD

from ._registry import tiny_writer


@tiny_writer("dino", default_backend="transformers")
def write_tiny_dino(path: Path, backend: str = "transformers") -> None:
    """Tiny random DINO ViT (patch 8, 64 px native, width 32, 2 blocks) with a ``ViTImageProcessor``."""
    if backend != "transformers":
        raise ValueError("the tiny DINO is written in transformers format only")
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
                    image_size=64, layer_norm_eps=1e-6)  # fmt: skip
    model = ViTModel(cfg, add_pooling_layer=False)
    with torch.no_grad():  # zero-initialised tokens would hide slicing bugs: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(path, safe_serialization=True)
    ViTImageProcessor(size={"height": 64, "width": 64}, image_mean=list(IMAGENET_MEAN),
                      image_std=list(IMAGENET_STD)).save_pretrained(path)  # fmt: skip
