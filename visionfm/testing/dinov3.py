"""Tiny random DINOv3 checkpoints (ViT with registers, ConvNeXt), transformers format."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from visionfm.foundation.dinov3 import IMAGENET_MEAN, IMAGENET_STD

from ._registry import tiny_writer


def _randomise(model: torch.nn.Module) -> None:
    with torch.no_grad():  # zero-initialised tokens would hide slicing bugs: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)


def _write_processor(path: Path, size: int) -> None:
    """``preprocessor_config.json`` with the keys facebook/dinov3-* ship (their 224 replaced by ``size``)."""
    cfg = {
        "crop_size": None,
        "data_format": "channels_first",
        "default_to_square": True,
        "device": None,
        "do_center_crop": None,
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(IMAGENET_MEAN),
        "image_processor_type": "DINOv3ViTImageProcessorFast",
        "image_std": list(IMAGENET_STD),
        "input_data_format": None,
        "resample": 2,
        "rescale_factor": 1 / 255,
        "return_tensors": None,
        "size": {"height": size, "width": size},
    }
    (path / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _check_backend(backend: str) -> None:
    if backend != "transformers":
        raise ValueError(f"dinov3 tiny checkpoints exist only for backend 'transformers', not {backend!r}")


@tiny_writer("dinov3", default_backend="transformers")
def write_tiny_dinov3(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``DINOv3ViTModel`` (hidden 32, 2 layers, 2 heads, patch 16, 4 registers, SwiGLU MLP,
    key bias off as the released models) with its processor (resize to 64x64, bilinear): a 4x4 grid."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    _check_backend(backend)
    cfg = DINOv3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        image_size=64,
        num_register_tokens=4,
        layerscale_value=0.5,
        use_gated_mlp=True,
        layer_norm_eps=1e-5,
    )
    model = DINOv3ViTModel(cfg)
    _randomise(model)
    model.save_pretrained(Path(path), safe_serialization=True)
    _write_processor(Path(path), 64)


@tiny_writer("dinov3-convnext", default_backend="transformers")
def write_tiny_dinov3_convnext(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``DINOv3ConvNextModel`` (widths 8/16/24/32, depths 1/1/2/1) with its processor (resize
    to 96x96, bilinear): a 3x3 last-stage grid."""
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    _check_backend(backend)
    model = DINOv3ConvNextModel(DINOv3ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], image_size=96))
    _randomise(model)
    model.save_pretrained(Path(path), safe_serialization=True)
    _write_processor(Path(path), 96)


__all__ = ["write_tiny_dinov3", "write_tiny_dinov3_convnext"]
