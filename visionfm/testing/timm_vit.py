"""Tiny random timm ViT checkpoints, in timm's own hub format (``config.json`` + ``model.safetensors``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ._registry import tiny_writer

#: ``timm.create_model`` arguments of the tiny ViT: ``vit_tiny_patch16_224`` at 64 px, width 32, 2 blocks of 2 heads
#: (a 4 x 4 grid, a class token), no classifier.
TINY_TIMM_VIT_ARGS = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0)


@tiny_writer("timm-vit", default_backend="timm")
def write_tiny_timm_vit(path: Path, backend: str = "timm") -> None:
    """Tiny random ``vit_tiny_patch16_224`` (:data:`TINY_TIMM_VIT_ARGS`), written by timm's own ``save_for_hf``
    (safetensors), so the directory is exactly what ``timm.create_model("local-dir:...", pretrained=True)`` reads.
    Its ``pretrained_cfg`` is ``vit_tiny_patch16_224``'s: mean = std = 0.5, bicubic, ``crop_pct`` 0.9."""
    if backend != "timm":
        raise ValueError("the tiny timm ViT is written in timm format only")
    import timm
    from timm.models import save_for_hf

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_TIMM_VIT_ARGS)
    with torch.no_grad():  # near-zero class token / position table would hide slicing bugs: make every weight random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    save_for_hf(model, str(path), model_args=dict(TINY_TIMM_VIT_ARGS), safe_serialization=True)
