"""Tiny random Segment Anything checkpoints in transformers format: SAM (``SamModel``), SAM 2 (``Sam2Model``) and
EdgeTAM (``EdgeTamModel``)."""

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


#: Input side of the tiny SAM 2 / EdgeTAM checkpoints: stride-4/8/16 FPN levels of 32, 16 and 8 pixels, low-res
#: masks of 32 (4x the 8x8 image embedding, as 256 is for 1024).
_SAM2_SIDE = 128


def _save_sam2_processor(path: Path, side: int) -> None:
    """``Sam2ImageProcessor`` (square resize to ``side``, masks ``side / 4``) saved as the hub repos ship it:
    ``preprocessor_config.json``, plus ``processor_config.json`` from ``Sam2Processor``."""
    from transformers import Sam2ImageProcessor, Sam2Processor

    processor = Sam2ImageProcessor(
        size={"height": side, "width": side},
        mask_size={"height": side // 4, "width": side // 4},
        image_mean=list(SAM_MEAN),
        image_std=list(SAM_STD),
    )
    processor.save_pretrained(path)
    Sam2Processor(image_processor=processor).save_pretrained(path)


def _sam2_prompt_and_decoder(side: int, hidden: int, model: str) -> dict:
    """Prompt encoder and mask decoder configs shared by the tiny SAM 2 and EdgeTAM (``model``: class prefix)."""
    import transformers

    prompt = getattr(transformers, f"{model}PromptEncoderConfig")(
        hidden_size=hidden, image_size=side, patch_size=16, mask_input_channels=16
    )
    decoder = getattr(transformers, f"{model}MaskDecoderConfig")(
        hidden_size=hidden, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    return {"prompt_encoder_config": prompt, "mask_decoder_config": decoder}


def _randomise(model: torch.nn.Module) -> None:
    """Move every parameter off its initialisation (zero position tables and no-memory tokens included)."""
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)


@tiny_writer("sam2", default_backend="transformers")
def write_tiny_sam2(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``Sam2Model`` (SAM 2 / 2.1) and its ``Sam2Processor``, transformers format.

    Hiera backbone: input 128, 4 stages of 1/1/2/1 blocks (widths 16-128, windowed attention with a global block 3,
    q-pooling between stages); FPN neck of width 32 (feature maps 32x32, 16x16 and the 8x8 image embedding);
    prompt encoder / mask decoder of width 32 (low-res masks 32x32). The processor resizes to 128x128.
    """
    if backend != "transformers":
        raise ValueError(f"sam2 tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2VisionConfig

    path, side, hidden = Path(path), _SAM2_SIDE, 32
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[side, side],
        window_positional_embedding_background_size=[4, 4],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        mlp_ratio=2.0,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
        fpn_hidden_size=hidden,
    )
    model = Sam2Model(Sam2Config(vision_config=vision, **_sam2_prompt_and_decoder(side, hidden, "Sam2")))
    _randomise(model)
    model.save_pretrained(path, safe_serialization=True)
    _save_sam2_processor(path, side)


@tiny_writer("edgetam", default_backend="transformers")
def write_tiny_edgetam(path: Path, backend: str = "transformers") -> None:
    """Write a tiny random ``EdgeTamModel`` and its ``Sam2Processor``, transformers format.

    Backbone: timm's ``repvit_m1`` (through transformers' ``TimmWrapperConfig``, as the hub checkpoint) shrunk to
    widths 8-64 and one block per stage; FPN, prompt encoder and mask decoder as the tiny SAM 2 (input 128).
    """
    if backend != "transformers":
        raise ValueError(f"edgetam tiny checkpoints exist only for backend 'transformers', not {backend!r}")
    from transformers import EdgeTamConfig, EdgeTamModel, EdgeTamVisionConfig, TimmWrapperConfig

    path, side, hidden = Path(path), _SAM2_SIDE, 32
    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args={
            "in_chans": 3,
            "features_only": True,
            "out_indices": [0, 1, 2, 3],
            "embed_dim": [8, 16, 32, 64],
            "depth": [1, 1, 1, 1],
        },
    )
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2],
        fpn_hidden_size=hidden,
    )
    model = EdgeTamModel(EdgeTamConfig(vision_config=vision, **_sam2_prompt_and_decoder(side, hidden, "EdgeTam")))
    _randomise(model)
    model.save_pretrained(path, safe_serialization=True)
    _save_sam2_processor(path, side)


__all__ = ["write_tiny_edgetam", "write_tiny_sam", "write_tiny_sam2"]
