"""Tiny random RADIO checkpoint (transformers ``RadioModel``), in the transformers on-disk format."""

from __future__ import annotations

from pathlib import Path

import torch

from ._registry import tiny_writer


@tiny_writer("radio", default_backend="transformers")
def write_tiny_radio(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``RadioModel`` (``config.json`` + ``model.safetensors``, no preprocessor config, as a
    converted checkpoint without one): hidden 32, 2 layers, 2 heads, patch 16, image size 64 (a 4x4 grid),
    ``max_img_size`` 256, 3 CLS tokens of which ``summary_idxs`` [0, 2] form the summary, 2 registers."""
    from transformers import RadioConfig, RadioModel

    if backend != "transformers":
        raise ValueError(f"radio tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    cfg = RadioConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2.0,
        patch_size=16,
        image_size=64,
        max_img_size=256,
        num_cls_tokens=3,
        num_registers=2,
        summary_idxs=[0, 2],
    )
    model = RadioModel(cfg)
    with torch.no_grad():  # zero-initialised tokens would hide slicing bugs: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(Path(path), safe_serialization=True)


__all__ = ["write_tiny_radio"]
