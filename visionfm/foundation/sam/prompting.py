"""The promptable-encoder interface: what ``pipeline("mask-generation")`` asks of a SAM-style encoder.

Every model of the ``sam`` family (SAM 1, SAM 2 / 2.1, EdgeTAM) keeps its prompt encoder and mask decoder and
implements the few steps that differ between them — how images become decoder inputs, how the decoder is called,
how its low-resolution masks go back to the original image, how a full-size mask becomes a mask prompt — so the
pipeline itself is model-agnostic.

Coordinates: prompts reach :meth:`PromptableEncoder.decode_masks` in the model's input frame (pixels of the
preprocessed image, x right, y down); :meth:`PromptableEncoder.input_coords` maps original-image pixels there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..encoder import Encoder


@dataclass(frozen=True)
class ImageEmbedding:
    """One image encoded for the mask decoder (what segment-anything's ``set_image`` keeps).

    Attributes:
        tensors: the decoder's image inputs, each with a batch dimension of 1, in the encoder's dtype and on its
            device. SAM: ``(embedding [1, C, h, w],)``; SAM 2 / EdgeTAM: the two high-resolution feature maps
            (already through the decoder's ``conv_s0`` / ``conv_s1``) and the image embedding, finest first.
        original: the image's ``(H, W)`` in pixels.
        resized: its ``(h, w)`` inside the model's input frame: SAM resizes the longest side to the input size and
            pads the rest; SAM 2 squashes the whole image to the square input, so ``resized`` is that square.
    """

    tensors: tuple[torch.Tensor, ...]
    original: tuple[int, int]
    resized: tuple[int, int]


@dataclass(frozen=True)
class AutoMaskDefaults:
    """A model's defaults for automatic mask generation (``MaskGenerationPipeline.generate``).

    Attributes:
        source: where the values come from, in words (recorded in docs and errors).
        points_per_side: grid points per side of the whole image.
        points_per_batch: point prompts per mask-decoder call.
        pred_iou_thresh: keep masks whose predicted IoU is above this, in [0, 1].
        stability_score_thresh: keep masks whose stability score is above this, in [0, 1].
        stability_score_offset: logit offset of the stability score.
        mask_threshold: logit threshold that binarises masks.
        nms_thresh: box IoU above which the lower-scored of two masks is dropped, in [0, 1].
        crops_n_layers: extra crop layers.
        crop_overlap_ratio: overlap of neighbouring layer-1 crops, as a fraction of the short side.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` points per side.
        crop_nms: ``"global"``: one NMS over the masks of every crop by predicted IoU (transformers' pipeline);
            ``"per_crop"``: NMS inside each crop by predicted IoU, then, with crops, across crops preferring masks
            from smaller crops (segment-anything's and SAM 2's automatic mask generators).
        crop_nms_thresh: box IoU of the across-crop NMS of ``crop_nms="per_crop"``, in [0, 1].
    """

    source: str
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    nms_thresh: float = 0.7
    crops_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    crop_nms: str = "global"
    crop_nms_thresh: float = 0.7

    def options(self) -> dict[str, Any]:
        """The defaults as keyword arguments of ``MaskGenerationPipeline.generate``."""
        return {k: v for k, v in self.__dict__.items() if k != "source"}


class PromptableEncoder(Encoder):
    """An image encoder that keeps SAM's prompt encoder and mask decoder (``self.model``).

    ``forward`` gives the family's ``Features``; the methods below are the model-specific steps of prompting,
    each on a batch, so the mask-generation pipeline runs any SAM-style model the same way.
    """

    #: Defaults of automatic mask generation for this model (its reference generator's).
    auto_mask_defaults: AutoMaskDefaults

    # -- the image side ----------------------------------------------------------------------------
    def embed_images(self, pixels: Sequence[torch.Tensor]) -> list[ImageEmbedding]:
        """Encode images for the mask decoder in one vision pass.

        Args:
            pixels: uint8 ``[3, H_i, W_i]`` RGB images of any sizes.

        Returns:
            One :class:`ImageEmbedding` per image, in order.
        """
        x, original, resized = self.preprocess_with_sizes(list(pixels))
        batched = self.decoder_inputs(x)
        return [
            ImageEmbedding(tuple(t[i : i + 1] for t in batched), original[i], resized[i]) for i in range(x.shape[0])
        ]

    def decoder_inputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The mask decoder's image inputs for preprocessed pixels ``[B, 3, H, W]``: a tuple of ``[B, ...]``
        tensors (see :attr:`ImageEmbedding.tensors`)."""
        raise NotImplementedError

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's square low-resolution masks and of mask prompts (256 for the real models)."""
        return 4 * int(self.model.prompt_encoder.image_embedding_size[0])

    @staticmethod
    def input_coords(xy: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Map pixel coordinates ``[..., 2]`` (x, y) of the original ``(H, W)`` image into the model's input frame,
        where the image occupies ``resized = (h, w)`` (the transformers processors' arithmetic)."""
        (H, W), (h, w) = original, resized
        return xy * torch.tensor([w / W, h / H], dtype=xy.dtype, device=xy.device)

    # -- the decoder -------------------------------------------------------------------------------
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
        """Run the prompt encoder and mask decoder on ``B`` images with ``N`` prompts each.

        Args:
            tensors: the images' decoder inputs, :attr:`ImageEmbedding.tensors` concatenated over the batch.
            points: ``[B, N, P, 2]`` point prompts in the model's input frame.
            labels: ``[B, N, P]`` point labels (1 foreground, 0 background, negative: padding).
            boxes: ``[B, N, 4]`` xyxy box prompts in the model's input frame.
            masks: ``[B, 1, s, s]`` mask-prompt logits (``s = low_res_size``); one per image, so ``N`` must be 1.
            multimask: return the decoder's three candidate masks per prompt instead of one.

        Returns:
            ``(low_res_logits [B, N, M, s, s], iou_scores [B, N, M])`` as float32, ``M`` = 3 or 1.
        """
        raise NotImplementedError

    def upscale_masks(self, low: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Low-resolution mask logits ``[N, s, s]`` of one image to logits ``[N, H, W]`` at its original size, as the
        model's processor ``post_process_masks`` does before thresholding."""
        raise NotImplementedError

    def mask_prompt(self, masks: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Full-size masks ``[N, H, W]`` of one image (bool, which become logits +-10, or float logits) to mask prompts
        ``[N, 1, s, s]`` in the model's input frame (``s = low_res_size``)."""
        raise NotImplementedError


__all__ = ["AutoMaskDefaults", "ImageEmbedding", "PromptableEncoder"]
