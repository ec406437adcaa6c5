"""Tiny random AIMv2 checkpoints in transformers format: the image-text (LiT) model and the image encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionfm.foundation.aimv2 import OPENAI_MEAN, OPENAI_STD
from visionfm.foundation.clip import write_clip_tokenizer_files

from ._registry import tiny_writer

#: The image tower of both tiny models: 56 px input, patch 14 (a 4x4 grid), 2 blocks of width 32.
TINY_VISION: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
)


def _randomise(model: torch.nn.Module) -> None:
    """Move every parameter off its initial value: ones-initialised norms and zero tokens would hide bugs."""
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name != "logit_scale":
                prm.add_(torch.randn_like(prm) * 0.1)


def _write_processor(path: Path) -> None:
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 56, "width": 56},
        resample=3,
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    ).save_pretrained(path)


@tiny_writer("aimv2", default_backend="transformers")
def write_tiny_aimv2(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Aimv2Model`` (the LiT image-text layout: image tower as :data:`TINY_VISION` with its
    attention-pooling head, a causal 2-block text tower of width 32 on CLIP's 49408-token BPE, projection 24), its
    ``CLIPImageProcessor`` (short side 64, centre crop 56) and CLIP tokenizer files, as
    ``apple/aimv2-large-patch14-224-lit`` ships them."""
    from transformers import Aimv2Config, Aimv2Model

    if backend != "transformers":
        raise ValueError(f"aimv2 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    path = Path(path)
    cfg = Aimv2Config(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            eos_token_id=49407,
        ),
        vision_config=dict(TINY_VISION, use_head=True),
        projection_dim=24,
    )
    model = Aimv2Model(cfg)
    _randomise(model)
    model.save_pretrained(path, safe_serialization=True)
    _write_processor(path)
    write_clip_tokenizer_files(path)


@tiny_writer("aimv2-vision", default_backend="transformers")
def write_tiny_aimv2_vision(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Aimv2VisionModel`` (:data:`TINY_VISION`, no pooling head, as the released
    ``apple/aimv2-*-patch14-*`` image encoders) with its ``CLIPImageProcessor``."""
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    if backend != "transformers":
        raise ValueError(f"aimv2 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    path = Path(path)
    model = Aimv2VisionModel(Aimv2VisionConfig(**TINY_VISION, use_head=False))
    _randomise(model)
    model.save_pretrained(path, safe_serialization=True)
    _write_processor(path)


__all__ = ["TINY_VISION", "write_tiny_aimv2", "write_tiny_aimv2_vision"]
