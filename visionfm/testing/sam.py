"""Tiny random Segment Anything (``SamModel``) checkpoint, transformers format."""

from __future__ import annotations

from pathlib import Path

import torch

from visionfm.foundation.sam import SAM_MEAN, SAM_STD

from ._registry import tiny_writer


@tiny_writer("sam", default_backend="transformers")
def write_tiny_sam(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``SamModel`` (input 64, patch 8, hidden 32, 2 blocks, neck 16) and its processor.

    The 8x8 embedding grid is split into 4x4 windows in block 0; block 1 attends globally. The
    processor resizes the longest edge to 64 and pads to 64x64 (masks: 32, i.e. 4x the grid, as SAM).
    """
    if backend != "transformers":
        raise ValueError(f"sam tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    path = Path(path)
    image, patch, neck = 64, 8, 16
    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=neck,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image,
        patch_size=patch,
        window_size=4,
        global_attn_indexes=[1],
        num_pos_feats=neck // 2,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(hidden_size=neck, image_size=image, patch_size=patch, mask_input_channels=8)
    decoder = SamMaskDecoderConfig(
        hidden_size=neck, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16
    )
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    with torch.no_grad():  # SAM initialises with tiny std and zero position tables: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(path, safe_serialization=True)
    processor = SamImageProcessor(
        size={"longest_edge": image},
        pad_size={"height": image, "width": image},
        mask_size={"longest_edge": 4 * image // patch},
        mask_pad_size={"height": 4 * image // patch, "width": 4 * image // patch},
        image_mean=list(SAM_MEAN),
        image_std=list(SAM_STD),
    )
    processor.save_pretrained(path)  # preprocessor_config.json, as the hub checkpoints ship it
    SamProcessor(image_processor=processor).save_pretrained(path)  # processor_config.json


__all__ = ["write_tiny_sam"]
