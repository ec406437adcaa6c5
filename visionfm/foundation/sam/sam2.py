"""SAM 2 / SAM 2.1 (transformers' ``Sam2Model``) and EdgeTAM (``EdgeTamModel``): Segment Anything on an FPN.

On-disk format: a transformers checkpoint directory. ``config.json`` has ``model_type`` ``sam2`` or ``edgetam``,
or ``sam2_video`` / ``edgetam_video`` — what the hub's ``facebook/sam2-hiera-*``, ``facebook/sam2.1-hiera-*`` and
``yonigozlan/EdgeTAM-hf`` ship: their image parts load into the image models, the memory modules are skipped, as
transformers' docs load them. ``preprocessor_config.json`` (or the ``image_processor`` entry of
``processor_config.json``) is a ``Sam2ImageProcessor``.

How they differ from SAM 1 (:mod:`.sam1`), all handled here so the mask-generation pipeline is the same:

- preprocessing resizes the whole image to the square input (1024 x 1024, bilinear, antialiased), aspect ratio not
  kept and no padding, so prompts scale by ``1024 / W`` and ``1024 / H`` separately;
- the vision encoder is a Hiera (SAM 2) or RepViT (EdgeTAM, a timm backbone) with an FPN neck: the mask decoder
  reads the stride-16 image embedding plus two finer feature maps (strides 4 and 8);
- low-resolution masks (256 x 256) are resized straight to the original image (``Sam2ImageProcessor.post_process_masks``);
- ``multimask_output=False`` lets the decoder fall back to its best multimask candidate when the single mask is
  unstable (``dynamic_multimask_via_stability``, in eval mode), as the reference does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..encoder import tap_blocks
from ..features import EncoderInfo, Features
from ..preprocess import PreprocessConfig
from ..token_merging import TokenMergingSites
from .prompting import AutoMaskDefaults, PromptableEncoder
from .sam1 import SAM_MEAN, SAM_STD, square_size

logger = logging.getLogger(__name__)

SAM2_MODEL_TYPES = ("sam2", "sam2_video")
EDGETAM_MODEL_TYPES = ("edgetam", "edgetam_video")

#: ``SAM2AutomaticMaskGenerator``'s defaults (facebookresearch/sam2, ``sam2/automatic_mask_generator.py``): IoU 0.8
#: (SAM 1: 0.88), stability 0.95, box NMS 0.7 inside each crop and crop NMS 0.7 across crops, preferring masks from
#: smaller crops.
SAM2_AUTO_MASKS = AutoMaskDefaults(
    source="SAM2AutomaticMaskGenerator (facebookresearch/sam2)",
    pred_iou_thresh=0.8,
    crop_nms="per_crop",
)


def load_preprocess_config(path: Path, image_size: int) -> PreprocessConfig:
    """The checkpoint's ``Sam2ImageProcessor`` configuration as a :class:`PreprocessConfig`.

    Without a ``preprocessor_config.json`` or a ``processor_config.json`` with an ``image_processor`` entry (logged as
    a warning) it uses SAM 2's reference preprocessing: resize to ``image_size x image_size`` (bilinear,
    antialiased), ImageNet mean/std.

    Raises:
        ValueError: the processor does not resize to the square input the vision encoder expects.
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "Sam2ImageProcessor")
    if pp is None:
        logger.warning(
            "%s has no preprocessor_config.json (nor an image_processor in processor_config.json); using SAM 2's "
            "reference preprocessing (resize to %dx%d, bilinear, ImageNet mean/std)",
            path,
            image_size,
            image_size,
        )
        return PreprocessConfig(
            resize="exact",
            resize_size=None,
            interpolation="bilinear",
            crop_size=(image_size, image_size),
            mean=SAM_MEAN,
            std=SAM_STD,
        )
    if pp.resize != "exact" or pp.image_size != (image_size, image_size):
        raise ValueError(
            f"{path}: the image processor gives {pp.resize} resizing to {pp.image_size}, but the SAM 2 vision encoder "
            f"expects the whole image resized to {image_size}x{image_size} (Sam2ImageProcessor's size "
            "{'height': N, 'width': N})"
        )
    return pp


class Sam2Encoder(PromptableEncoder):
    """SAM 2 / 2.1 or EdgeTAM image encoder (backbone + FPN neck), with the prompt encoder and mask decoder kept.

    ``Features``: ``patches`` is the image embedding the mask decoder reads, ``[B, h, w, C]`` (the last entry of
    ``Sam2Model.get_image_embeddings``, i.e. the stride-16 FPN level plus the "no memory" embedding, channels last;
    ``[B, 64, 64, 256]`` at 1024 px); ``pooled`` its mean ``[B, C]``; no ``cls``/``registers``. ``layers``: SAM 2 taps
    the Hiera blocks ``model.vision_encoder.backbone.blocks[i]`` (``[B, h_i, w_i, C_i]``, each on its stage's grid);
    EdgeTAM taps the four stages of its RepViT backbone (``[B, h_i, w_i, C_i]``, channels last).

    Args:
        model: a transformers ``Sam2Model`` or ``EdgeTamModel`` (kept whole as ``self.model``).
        preprocess_config: how images become the model input (a square resize).
        name: recorded in ``info.name``.
    """

    auto_mask_defaults = SAM2_AUTO_MASKS
    prompt_variant = "sam2"

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        vcfg = model.config.vision_config
        if int(vcfg.num_feature_levels) != 3:
            raise ValueError(
                f"{name}: SAM 2 checkpoints have 3 FPN feature levels, this one has {vcfg.num_feature_levels}"
            )
        variant = "edgetam" if str(model.config.model_type).startswith("edgetam") else "sam2"
        side = int(model.prompt_encoder.input_image_size)
        grid = int(model.prompt_encoder.image_embedding_size[0])
        backbone = model.vision_encoder.backbone
        n_layers = len(backbone.blocks) if variant == "sam2" else len(vcfg.backbone_channel_list)
        info = EncoderInfo(
            family="sam",
            backend="transformers",
            name=name,
            embed_dim=int(vcfg.fpn_hidden_size),
            width=int(vcfg.fpn_hidden_size),
            patch_size=side // grid,
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=n_layers,
            num_registers=0,
        )
        super().__init__(info, preprocess_config)
        self.model = model
        self.variant = variant  #: ``"sam2"`` (Hiera backbone) or ``"edgetam"`` (RepViT backbone)

    # -- the vision tower ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _taps(self, idx: list[int]) -> Iterator[dict[int, torch.Tensor]]:
        """Capture the requested layers (channels last) while the vision encoder runs."""
        backbone = self.model.vision_encoder.backbone
        if self.variant == "sam2":
            with tap_blocks(backbone.blocks, idx) as taps:
                yield taps
            return
        taps: dict[int, torch.Tensor] = {}

        def hook(_module: torch.nn.Module, _inp: object, out: object) -> None:
            stages = out.last_hidden_state  # type: ignore[attr-defined]  # timm features_only: [B, C_i, h_i, w_i]
            taps.update({i: stages[i].permute(0, 2, 3, 1) for i in idx})

        handle = backbone.register_forward_hook(hook) if idx else None
        try:
            yield taps
        finally:
            if handle is not None:
                handle.remove()

    def _fpn(
        self, pixel_values: torch.Tensor, layers: Sequence[int] | None
    ) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """``(fpn, taps)``: the three FPN levels ``[B, C, h, w]``, finest first, with the "no memory" embedding added
        to the coarsest (the image embedding), and the requested layer taps."""
        idx = self._layer_indices(layers)
        with self._taps(idx) as taps:
            out = self.model.vision_encoder(pixel_values.to(self.dtype))
        fpn = list(out.fpn_hidden_states)
        fpn[-1] = fpn[-1] + self.model.no_memory_embedding.reshape(1, -1, 1, 1)
        return fpn, {i: taps[i] for i in idx}

    def token_merging_sites(self) -> TokenMergingSites:
        """Around the MLPs of the Hiera blocks (SAM 2 / 2.1); EdgeTAM's RepViT backbone has none."""
        if self.variant != "sam2":
            return super().token_merging_sites()
        return TokenMergingSites(blocks=self.model.vision_encoder.backbone.blocks, mode="mlp")

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one vision-encoder pass.

        Args:
            pixel_values: ``[B, 3, S, S]`` normalised pixels (``(S, S) = info.image_size``).
            layers: backbone block (SAM 2) or stage (EdgeTAM) indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers``
            ``{i: [B, h_i, w_i, C_i]}``.
        """
        fpn, taps = self._fpn(pixel_values, layers)
        patches = fpn[-1].permute(0, 2, 3, 1)
        return Features(
            pooled=patches.mean(dim=(1, 2)),
            patches=patches,
            grid=(patches.shape[1], patches.shape[2]),
            layers=taps,
        )

    # -- prompting (see PromptableEncoder) ------------------------------------------------------------
    def decoder_inputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(feat_s0 [B, C/8, 4h, 4w], feat_s1 [B, C/4, 2h, 2w], embedding [B, C, h, w])``: what
        ``Sam2Model.get_image_embeddings`` returns (the finer levels through the decoder's ``conv_s0``/``conv_s1``)."""
        fpn, _ = self._fpn(pixel_values, None)
        dec = self.model.mask_decoder
        return dec.conv_s0(fpn[0]), dec.conv_s1(fpn[1]), fpn[2]

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
        """``Sam2Model``'s (``EdgeTamModel``'s) prompt encoder and mask decoder; see
        :meth:`PromptableEncoder.decode_masks`."""
        kw = {"input_points": points, "input_labels": labels, "input_boxes": boxes, "input_masks": masks}
        out = self.model(
            image_embeddings=list(tensors),
            multimask_output=multimask,
            **{k: v for k, v in kw.items() if v is not None},
        )
        return out.pred_masks.float(), out.iou_scores.float()

    def point_weights(self) -> torch.Tensor:
        """``Sam2PromptEncoder``'s label embeddings: ``[4, C]``."""
        return self.model.prompt_encoder.point_embed.weight

    def decoder_extra_inputs(self, tensors: Sequence[torch.Tensor]) -> dict[str, Any]:
        """The two finer feature maps (``tensors[:-1]``), which SAM 2's mask decoder upsamples with."""
        return {"high_resolution_features": list(tensors[:-1])}

    def upscale_masks(self, low: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Straight to the original ``(H, W)``, as ``Sam2ImageProcessor.post_process_masks``: ``[N, s, s]`` ->
        ``[N, H, W]``."""
        return F.interpolate(low[:, None].float(), tuple(original), mode="bilinear", align_corners=False)[:, 0]

    def mask_prompt(self, masks: torch.Tensor, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Full-size masks ``[N, H, W]`` (bool become logits +-10) resized over the whole square input frame to
        ``[N, 1, s, s]``, antialiased, as ``Sam2Model`` resizes an ``input_masks`` of another size."""
        x = masks.float() * 20 - 10 if masks.dtype == torch.bool else masks.float()
        side = self.low_res_size
        return F.interpolate(x[:, None], (side, side), mode="bilinear", align_corners=False, antialias=True)


def build_sam2(model: torch.nn.Module, path: Path, name: str) -> Sam2Encoder:
    """A :class:`Sam2Encoder` around a loaded ``Sam2Model`` / ``EdgeTamModel`` and the checkpoint's preprocessing.

    Raises:
        ValueError: the prompt encoder's and the backbone's input sizes disagree, or the processor does not resize
            to that size.
    """
    side = int(model.prompt_encoder.input_image_size)
    bb = getattr(model.config.vision_config.backbone_config, "image_size", None)
    if bb is not None and square_size(bb, "SAM 2") != side:
        raise ValueError(f"{path}: the backbone expects {bb} inputs but the prompt encoder {side}x{side}")
    return Sam2Encoder(model, load_preprocess_config(path, side), name=name)


__all__ = [
    "EDGETAM_MODEL_TYPES",
    "SAM2_AUTO_MASKS",
    "SAM2_MODEL_TYPES",
    "Sam2Encoder",
    "build_sam2",
    "load_preprocess_config",
]
