"""Segment Anything (SAM 1) through transformers' ``SamModel``.

The transformers checkpoint directory (``config.json`` with ``model_type`` ``sam``, ``model.safetensors``,
``preprocessor_config.json`` of a ``SamImageProcessor``) is the on-disk format. The whole ``SamModel`` is kept
(prompt encoder and mask decoder included) for prompting; ``forward`` runs only the vision encoder and its neck, as
``SamModel.get_image_embeddings`` does, but without that method's ``no_grad``.

SAM's input frame: the longest side resized to the input size (1024), the rest zero-padded at the bottom/right;
low-resolution masks go back through that padded frame (``SamImageProcessor.post_process_masks``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..encoder import tap_blocks
from ..features import EncoderInfo, Features
from ..preprocess import PreprocessConfig
from ..token_merging import TokenMergingSites
from .prompting import AutoMaskDefaults, PromptableEncoder

logger = logging.getLogger(__name__)

SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)

#: transformers' ``mask-generation`` pipeline defaults, which this family's automatic masks reproduce for SAM 1.
SAM1_AUTO_MASKS = AutoMaskDefaults(source="transformers' mask-generation pipeline (SAM)")


def square_size(v: int | Sequence[int], what: str = "SAM") -> int:
    """One side of a square size given as an int or a pair; a ``ValueError`` for a non-square one."""
    if isinstance(v, int):
        return v
    if v[0] != v[-1]:
        raise ValueError(f"non-square {what} sizes {tuple(v)} are not supported")
    return int(v[0])


def load_preprocess_config(path: Path, image_size: int) -> PreprocessConfig:
    """The checkpoint's ``SamImageProcessor`` configuration as a :class:`PreprocessConfig`.

    Without a ``preprocessor_config.json`` or ``processor_config.json`` (logged as a warning) it uses SAM's reference
    preprocessing at the model's input size: longest edge to ``image_size``, bilinear, ImageNet
    mean/std, zero padding at the bottom/right to ``image_size x image_size``.
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "SamImageProcessor")
    if pp is None:
        logger.warning(
            "%s has no preprocessor_config.json (nor processor_config.json); using SAM's reference preprocessing "
            "(longest edge %d, bilinear, ImageNet mean/std, pad to %dx%d)",
            path,
            image_size,
            image_size,
            image_size,
        )
        return PreprocessConfig(
            resize="longest_edge",
            resize_size=image_size,
            interpolation="bilinear",
            crop_size=None,
            pad_size=(image_size, image_size),
            mean=SAM_MEAN,
            std=SAM_STD,
        )
    if pp.image_size != (image_size, image_size):
        raise ValueError(
            f"{path}: preprocessing yields {pp.image_size} inputs but the SAM vision encoder expects "
            f"{image_size}x{image_size}"
        )
    return pp


class SamEncoder(PromptableEncoder):
    """SAM image encoder (ViT + neck), with SAM's prompt encoder and mask decoder kept for prompting.

    ``Features``: ``patches`` is the image embedding ``[B, h, w, C]`` (``SamModel.get_image_embeddings``
    permuted to channels last, ``C = vision_config.output_channels``); ``pooled`` its mean over the
    grid ``[B, C]``; no ``cls``/``registers``; ``layers`` the outputs of
    ``model.vision_encoder.layers[i]``, ``[B, h, w, hidden_size]``.

    Args:
        model: a transformers ``SamModel`` (kept whole as ``self.model``).
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    auto_mask_defaults = SAM1_AUTO_MASKS

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        vcfg = model.config.vision_config
        info = EncoderInfo(
            family="sam",
            backend="transformers",
            name=name,
            embed_dim=int(vcfg.output_channels),
            width=int(vcfg.output_channels),
            patch_size=square_size(vcfg.patch_size),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(vcfg.num_hidden_layers),
            num_registers=0,
        )
        super().__init__(info, preprocess_config)
        self.model = model

    def token_merging_sites(self) -> TokenMergingSites:
        """Around the MLPs of the windowed ViT (attention windows and relative positions keep the full grid)."""
        return TokenMergingSites(blocks=self.model.vision_encoder.layers, mode="mlp")

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one vision-encoder pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised, padded pixels (``(H, W) = info.image_size``).
            layers: vision block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers``
            ``{i: [B, h, w, hidden_size]}``.
        """
        idx = self._layer_indices(layers)
        vision = self.model.vision_encoder
        with tap_blocks(vision.layers, idx) as taps:
            emb = vision(pixel_values.to(self.dtype)).last_hidden_state  # [B, C, h, w]
        patches = emb.permute(0, 2, 3, 1)
        return Features(
            pooled=patches.mean(dim=(1, 2)),
            patches=patches,
            grid=(patches.shape[1], patches.shape[2]),
            layers={i: taps[i] for i in idx},
        )

    # -- prompting (see PromptableEncoder) ------------------------------------------------------------
    def decoder_inputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(embedding [B, C, h, w],)``: the image embedding ``SamModel``'s mask decoder reads."""
        return (self(pixel_values).patches.permute(0, 3, 1, 2).contiguous(),)

    def decode_masks(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``SamModel``'s prompt encoder and mask decoder; see :meth:`PromptableEncoder.decode_masks`."""
        (emb,) = tensors
        kw = {"input_points": points, "input_labels": labels, "input_boxes": boxes, "input_masks": masks}
        out = self.model(
            image_embeddings=emb, multimask_output=multimask, **{k: v for k, v in kw.items() if v is not None}
        )
        return out.pred_masks.float(), out.iou_scores.float()

    def point_weights(self) -> torch.Tensor:
        """``SamPromptEncoder``'s four label embeddings, stacked: ``[4, C]``."""
        return torch.cat([e.weight for e in self.model.prompt_encoder.point_embed])

    def upscale_masks(self, low: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Through the padded input frame, as ``SamImageProcessor.post_process_masks``: upsample to the input size,
        crop the image's ``resized`` part, resize to the original ``(H, W)``; ``[N, s, s]`` -> ``[N, H, W]``."""
        h, w = resized
        up = F.interpolate(low[:, None].float(), self.info.image_size, mode="bilinear", align_corners=False)
        return F.interpolate(up[..., :h, :w], tuple(original), mode="bilinear", align_corners=False)[:, 0]

    def mask_prompt(self, masks: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Full-size masks ``[N, H, W]`` (bool, or float logits) to mask prompts ``[N, 1, s, s]``: resized into the
        image's part of the padded input frame, padded (bool masks become logits +-10 and pad with -10, logits pad
        with 0), then down-sampled to ``s = low_res_size``."""
        is_bool = masks.dtype == torch.bool
        x = masks.float() * 20 - 10 if is_bool else masks.float()
        x = F.interpolate(x[:, None], tuple(resized), mode="bilinear", align_corners=False)
        ph, pw = self.info.image_size
        x = F.pad(x, (0, pw - resized[1], 0, ph - resized[0]), value=-10.0 if is_bool else 0.0)
        side = self.low_res_size
        return F.interpolate(x, (side, side), mode="bilinear", align_corners=False)


def build_sam(model: torch.nn.Module, path: Path, name: str) -> SamEncoder:
    """A :class:`SamEncoder` around a loaded ``SamModel`` and the checkpoint's preprocessing."""
    image_size = square_size(model.config.vision_config.image_size)
    return SamEncoder(model, load_preprocess_config(path, image_size), name=name)


__all__ = ["SAM1_AUTO_MASKS", "SAM_MEAN", "SAM_STD", "SamEncoder", "build_sam", "load_preprocess_config"]
