"""The promptable-encoder interface: what ``pipeline("mask-generation")`` asks of a SAM-style encoder.

Every model of the ``sam`` family (SAM 1, SAM 2 / 2.1, EdgeTAM) keeps its prompt encoder and mask decoder and
implements the few steps that differ between them — how images become decoder inputs, how the decoder is called,
how its low-resolution masks go back to the original image, how a full-size mask becomes a mask prompt — so the
pipeline itself is model-agnostic.

Coordinates: prompts reach :meth:`PromptableEncoder.decode_masks` in the model's input frame (pixels of the
preprocessed image, x right, y down); :meth:`PromptableEncoder.input_coords` maps original-image pixels there.

Prompt tokens: every point and box prompt of SAM, SAM 2 and EdgeTAM is a list of labelled points — a point keeps its
label (1 foreground, 0 background, -1 not-a-point, -10 ignored), a box becomes its two corners labelled 2 and 3, and
the models add a not-a-point where their prompt encoders do. :func:`prompt_tokens` builds that list the way each
model's prompt encoder orders it, and :meth:`PromptableEncoder.decode_tokens` decodes it with one fixed signature,
which is what the ONNX prompt-decoder graph (:mod:`visionfm.foundation.onnx_export`) is traced from.
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


#: labels of the two corners of a box prompt, as point labels of :func:`prompt_tokens`
BOX_CORNER_LABELS = (2, 3)


def prompt_tokens(
    variant: str,
    points: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    batch: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point and box prompts as one list of labelled points per prompt, in the order the model's prompt encoder
    embeds them.

    Args:
        variant: ``"sam1"`` (``SamPromptEncoder``: a not-a-point pads point prompts without boxes; nothing pads boxes;
            no prompt at all is no token) or ``"sam2"`` (``Sam2PromptEncoder``, EdgeTAM's too: a not-a-point pads point
            prompts without boxes and follows every box; no prompt at all is two not-a-points).
        points: ``[B, N, P, 2]`` point prompts in the model's input frame, or None.
        labels: ``[B, N, P]`` their labels, or None (with ``points``).
        boxes: ``[B, N, 4]`` xyxy boxes in the model's input frame, or None.
        batch: ``(B, N)``, used when there is neither points nor boxes.

    Returns:
        ``(coords [B, N, T, 2] float32, labels [B, N, T] int64)``; box corners carry :data:`BOX_CORNER_LABELS`.
    """
    if variant not in ("sam1", "sam2"):
        raise ValueError(f"variant must be 'sam1' or 'sam2', got {variant!r}")
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    ref = next((t for t in (points, boxes) if t is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    B, N = (ref.shape[0], ref.shape[1]) if ref is not None else batch

    def pad(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(B, N, n, 2, device=device), torch.full((B, N, n), -1, dtype=torch.long, device=device)

    if points is not None:
        if labels is None:
            raise ValueError("point prompts need labels")
        parts.append((points.float(), labels.long()))
        if boxes is None:
            parts.append(pad(1))
    if boxes is not None:
        corners = torch.tensor(BOX_CORNER_LABELS, dtype=torch.long, device=device).expand(B, N, 2)
        parts.append((boxes.float().reshape(B, N, 2, 2), corners))
        if variant == "sam2":
            parts.append(pad(1))
    if not parts:
        parts.append(pad(2) if variant == "sam2" else pad(0))
    return torch.cat([p for p, _ in parts], dim=2), torch.cat([lab for _, lab in parts], dim=2)


def embed_prompt_tokens(
    prompt_encoder: torch.nn.Module, point_weights: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Sparse prompt embeddings ``[B, N, T, C]`` of :func:`prompt_tokens`' output, with the prompt encoder's weights:
    each point's positional encoding at its pixel centre (not-a-point: its learned embedding; label -10: zeros) plus
    its label's embedding (``point_weights`` ``[4, C]``: negative, background, foreground, top-left and bottom-right
    corner) for labels >= 0 — the arithmetic of transformers' SAM and SAM 2 prompt encoders for points and boxes."""
    side = int(prompt_encoder.input_image_size)
    emb = prompt_encoder.shared_embedding(coords + 0.5, (side, side))
    lab = labels[..., None]
    emb = torch.where(lab == -1, prompt_encoder.not_a_point_embed.weight, emb)
    emb = torch.where(lab != -10, emb, torch.zeros_like(emb))
    return emb + point_weights[labels.clamp(0, point_weights.shape[0] - 1)] * (lab >= 0).to(emb.dtype)


class PromptableEncoder(Encoder):
    """An image encoder that keeps SAM's prompt encoder and mask decoder (``self.model``).

    ``forward`` gives the family's ``Features``; the methods below are the model-specific steps of prompting,
    each on a batch, so the mask-generation pipeline runs any SAM-style model the same way.
    """

    #: Defaults of automatic mask generation for this model (its reference generator's).
    auto_mask_defaults: AutoMaskDefaults
    #: How its prompt encoder orders prompt tokens (:func:`prompt_tokens`): ``"sam1"`` or ``"sam2"``.
    prompt_variant: str = "sam1"

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

    def decode_tokens(
        self,
        tensors: Sequence[torch.Tensor],
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode_masks` with one fixed signature: the same masks and scores for the same prompts.

        The sparse embeddings come from :func:`embed_prompt_tokens` with :meth:`point_weights`, the dense one from the
        mask embedding or the no-mask embedding, and both go through the model's mask decoder (with
        :meth:`decoder_extra_inputs`), as ``SamModel`` / ``Sam2Model`` call it.

        Args:
            tensors: as in :meth:`decode_masks`.
            coords: ``[B, N, T, 2]`` and ``labels`` ``[B, N, T]``: the prompts as :func:`prompt_tokens` lists them.
            labels: see ``coords``.
            mask_input: ``[B, 1, s, s]`` mask-prompt logits (zeros when there is none).
            has_mask_input: ``[1]``, 1.0 to use ``mask_input``, 0.0 for the model's no-mask embedding.
            multimask: as in :meth:`decode_masks`.

        Returns:
            ``(low_res_logits [B, N, M, s, s], iou_scores [B, N, M])``, float32.
        """
        emb = tensors[-1]
        pe = self.model.prompt_encoder
        sparse = embed_prompt_tokens(pe, self.point_weights(), coords.to(emb.dtype), labels)
        has = has_mask_input.to(emb.dtype).reshape(1, 1, 1, 1)
        dense = pe.mask_embed(mask_input.to(emb.dtype)) * has + pe.no_mask_embed.weight.reshape(1, -1, 1, 1) * (1 - has)
        pos = self.model.get_image_wide_positional_embeddings().repeat(emb.shape[0], 1, 1, 1)
        out = self.model.mask_decoder(
            image_embeddings=emb,
            image_positional_embeddings=pos,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            **self.decoder_extra_inputs(tensors),
        )
        return out[0].float(), out[1].float()

    def point_weights(self) -> torch.Tensor:
        """The prompt encoder's label embeddings ``[4, C]`` (negative, positive, box top-left, box bottom-right)."""
        raise NotImplementedError

    def decoder_extra_inputs(self, tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments the mask decoder takes beside the image embedding (``tensors[-1]``): none by default."""
        return {}

    def upscale_masks(self, low: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Low-resolution mask logits ``[N, s, s]`` of one image to logits ``[N, H, W]`` at its original size, as the
        model's processor ``post_process_masks`` does before thresholding."""
        raise NotImplementedError

    def mask_prompt(self, masks: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Full-size masks ``[N, H, W]`` of one image (bool, which become logits +-10, or float logits) to mask prompts
        ``[N, 1, s, s]`` in the model's input frame (``s = low_res_size``)."""
        raise NotImplementedError


__all__ = [
    "BOX_CORNER_LABELS",
    "AutoMaskDefaults",
    "ImageEmbedding",
    "PromptableEncoder",
    "embed_prompt_tokens",
    "prompt_tokens",
]
