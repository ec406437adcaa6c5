"""Tiny random SAM 3 (``Sam3Model`` + ``Sam3Processor``) checkpoint, transformers format."""

from __future__ import annotations

from pathlib import Path

import torch

from visionfm.foundation.clip import write_clip_tokenizer_files
from visionfm.foundation.sam3 import SAM3_MEAN, SAM3_STD, TEXT_LENGTH

from ._registry import tiny_writer

#: The tiny model's input side: a 8 x 8 patch grid at patch 14 (the released model: 1008, 72 x 72).
TINY_IMAGE_SIZE = 112


@tiny_writer("sam3", default_backend="transformers")
def write_tiny_sam3(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Sam3Model`` and its ``Sam3Processor`` with ``save_pretrained``.

    Sizes: input 112 px, patch 14 (an 8 x 8 grid), backbone width 32 with 2 blocks (block 0 in 4 x 4 windows,
    block 1 global, as the released model alternates them), a 4 x 4 pretraining position table that is tiled to the
    grid (as the released 24 x 24 table is tiled to 72 x 72); FPN width 32 (levels 32, 16, 8, 4 px); a CLIP text
    encoder of width 32, 2 layers, the full CLIP vocabulary (49408) and 32 positions; a 1-layer DETR encoder, a
    2-layer DETR decoder with 16 queries, a 1-layer geometry encoder, and the mask decoder (32 x 32 mask logits).
    Every parameter gets ``N(0, 0.1)`` noise added, so no part is left at a constant initialisation.

    The processor is ``Sam3Processor(Sam3ImageProcessor(size=112, mask_size=32), CLIPTokenizer)``: the image
    processor's other settings are its defaults (bilinear, mean = std = 0.5), the tokenizer is CLIP's BPE (as the
    released model's), written from the table that ships with open_clip.
    """
    if backend != "transformers":
        raise ValueError(f"sam3 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    from transformers import (
        CLIPTokenizer,
        Sam3Config,
        Sam3ImageProcessor,
        Sam3Model,
        Sam3Processor,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    path = Path(path)
    size, patch, width = TINY_IMAGE_SIZE, 14, 32
    grid = size // patch
    backbone = Sam3ViTConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        patch_size=patch,
        window_size=grid // 2,
        global_attn_indexes=[1],
        pretrain_image_size=size // 2,
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=width,
        backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
    )
    layers = dict(hidden_size=width, num_attention_heads=2, intermediate_size=2 * width)
    config = Sam3Config(
        vision_config=vision,
        text_config=dict(
            model_type="clip_text_model",
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=2 * width,
            projection_dim=width,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TEXT_LENGTH,
        ),
        geometry_encoder_config=dict(num_layers=1, roi_size=2, **layers),
        detr_encoder_config=dict(num_layers=1, **layers),
        detr_decoder_config=dict(num_layers=2, num_queries=16, **layers),
        mask_decoder_config=dict(hidden_size=width, num_upsampling_stages=3, num_attention_heads=2),
    )
    model = Sam3Model(config)
    with torch.no_grad():  # zero / constant initialisations would hide slicing bugs: make every parameter random
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(path, safe_serialization=True)
    write_clip_tokenizer_files(path)
    image_processor = Sam3ImageProcessor(
        size={"height": size, "width": size},
        mask_size={"height": 4 * grid, "width": 4 * grid},
        image_mean=list(SAM3_MEAN),
        image_std=list(SAM3_STD),
    )
    Sam3Processor(image_processor=image_processor, tokenizer=CLIPTokenizer.from_pretrained(path)).save_pretrained(path)


__all__ = ["TINY_IMAGE_SIZE", "write_tiny_sam3"]
