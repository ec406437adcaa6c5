"""Tiny random DINOv2 checkpoints (with and without registers), transformers format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionfm.foundation.dinov2 import IMAGENET_MEAN, IMAGENET_STD

from ._registry import tiny_writer


def _write_tiny(path: Path, registers: int) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    kw: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        layerscale_value=0.5,
    )
    if registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = Dinov2Model(Dinov2Config(**kw))
    with torch.no_grad():  # zero-initialised tokens would hide slicing bugs: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(path, safe_serialization=True)
    BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": 64},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 56, "width": 56},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    ).save_pretrained(path)


@tiny_writer("dinov2", default_backend="transformers")
def write_tiny_dinov2(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Dinov2Model`` (hidden 32, 2 layers, patch 14, input 56) with its processor."""
    if backend != "transformers":
        raise ValueError(f"dinov2 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    _write_tiny(Path(path), registers=0)


@tiny_writer("dinov2-registers", default_backend="transformers")
def write_tiny_dinov2_registers(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Dinov2WithRegistersModel`` (as :func:`write_tiny_dinov2`, 4 registers)."""
    if backend != "transformers":
        raise ValueError(f"dinov2 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    _write_tiny(Path(path), registers=4)


__all__ = ["write_tiny_dinov2", "write_tiny_dinov2_registers"]
