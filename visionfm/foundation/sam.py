"""Segment Anything (SAM) image encoder through transformers' ``SamModel``.

The transformers checkpoint directory (``config.json`` with ``model_type`` ``sam``,
``model.safetensors``, ``preprocessor_config.json`` of a ``SamImageProcessor``) is the on-disk format.
The whole ``SamModel`` is kept (prompt encoder and mask decoder included) so prompting can build on it;
``forward`` runs only the vision encoder and its neck, as ``SamModel.get_image_embeddings`` does,
but without that method's ``no_grad``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, tap_blocks
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model

logger = logging.getLogger(__name__)

SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)


def _int(v: int | Sequence[int]) -> int:
    if isinstance(v, int):
        return v
    if v[0] != v[-1]:
        raise ValueError(f"non-square SAM sizes {tuple(v)} are not supported")
    return int(v[0])


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers SAM checkpoint, else ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt == "sam" else None


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


class SamEncoder(Encoder):
    """SAM image encoder (ViT + neck).

    ``Features``: ``patches`` is the image embedding ``[B, h, w, C]`` (``SamModel.get_image_embeddings``
    permuted to channels last, ``C = vision_config.output_channels``); ``pooled`` its mean over the
    grid ``[B, C]``; no ``cls``/``registers``; ``layers`` the outputs of
    ``model.vision_encoder.layers[i]``, ``[B, h, w, hidden_size]``.

    Args:
        model: a transformers ``SamModel`` (kept whole as ``self.model``).
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        vcfg = model.config.vision_config
        info = EncoderInfo(
            family="sam",
            backend="transformers",
            name=name,
            embed_dim=int(vcfg.output_channels),
            width=int(vcfg.output_channels),
            patch_size=_int(vcfg.patch_size),
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(vcfg.num_hidden_layers),
            num_registers=0,
        )
        super().__init__(info, preprocess_config)
        self.model = model

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


def build(req: LoadRequest) -> SamEncoder:
    """Build a :class:`SamEncoder` from a transformers checkpoint directory."""
    from transformers import SamModel

    model = load_hf_model(SamModel, req.path, allow_pickle=req.allow_pickle)
    image_size = _int(model.config.vision_config.image_size)
    return SamEncoder(model, load_preprocess_config(req.path, image_size), name=req.name)


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in sam encoders (the family's ``peft_layout``)."""
    return TargetLayout(
        description="sam (transformers)",
        image_roots=("vision_encoder",),
        attention=(rf"vision_encoder\.layers\.{_B}\.attn\.(qkv|proj)",),
        mlp=(rf"vision_encoder\.layers\.{_B}\.mlp\.(lin1|lin2)",),
    )


register_family(
    Family(
        name="sam",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="Segment Anything image encoders: dense neck embeddings on the patch grid",
        formats="transformers (config.json with model_type sam)",
        peft_layout=peft_layout,
    )
)

for _size, _desc in {
    "base": "ViT-B/16, 1024px input, 64x64x256 embeddings",
    "large": "ViT-L/16, 1024px input, 64x64x256 embeddings",
    "huge": "ViT-H/16, 1024px input, 64x64x256 embeddings",
}.items():
    register_model(
        ModelSpec(
            name=f"sam-vit-{_size}",
            family="sam",
            source=f"facebook/sam-vit-{_size}",
            backend="transformers",
            description=f"Segment Anything {_desc}",
        )
    )
