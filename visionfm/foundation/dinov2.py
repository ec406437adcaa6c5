"""DINOv2 (with and without registers) through transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

The transformers checkpoint directory (``config.json`` with ``model_type`` ``dinov2`` or
``dinov2_with_registers``, ``model.safetensors``, ``preprocessor_config.json``) is the on-disk format.
Preprocessing reproduces the checkpoint's ``BitImageProcessor`` (short side resize, bicubic, centre
crop, ImageNet normalisation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .encoder import Encoder, tap_blocks, tokens_to_grid
from .features import EncoderInfo, Features
from .loading import hf_model_type, load_hf_model
from .preprocess import PreprocessConfig
from .registry import Family, LoadRequest, ModelSpec, TargetLayout, register_family, register_model
from .token_merging import TokenMergingSites

logger = logging.getLogger(__name__)

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What facebook/dinov2-* ship in preprocessor_config.json (a BitImageProcessor).
DEFAULT_PREPROCESS = PreprocessConfig(
    resize="shortest_edge",
    resize_size=256,
    interpolation="bicubic",
    crop_size=(224, 224),
    crop_rounding="floor",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers DINOv2 checkpoint, else ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt in MODEL_TYPES else None


def load_preprocess_config(path: Path) -> PreprocessConfig:
    """The checkpoint's ``preprocessor_config.json`` as a :class:`PreprocessConfig`.

    Falls back to DINOv2's reference preprocessing (short side 256, bicubic, centre crop 224, ImageNet
    mean/std) with a warning when the file is missing.
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "BitImageProcessor")
    if pp is None:
        logger.warning(
            "%s has no preprocessor_config.json (nor processor_config.json); using DINOv2's reference preprocessing "
            "(shortest edge 256, bicubic, centre crop 224, ImageNet mean/std)",
            path,
        )
        return DEFAULT_PREPROCESS
    return pp


class Dinov2Encoder(Encoder):
    """DINOv2 image encoder.

    ``Features``: ``pooled`` and ``cls`` are the layer-normed CLS token ``[B, C]`` (transformers'
    ``pooler_output``); ``patches`` the layer-normed patch tokens ``[B, h, w, C]``; ``registers`` the
    layer-normed register tokens ``[B, R, C]`` (``None`` without registers); ``layers`` raw block
    outputs (before the final norm) on the patch grid.

    Args:
        model: a transformers ``Dinov2Model`` or ``Dinov2WithRegistersModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        num_registers = (
            int(getattr(cfg, "num_register_tokens", 0) or 0) if cfg.model_type == "dinov2_with_registers" else 0
        )
        patch = _pair(cfg.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patches {patch} are not supported")
        info = EncoderInfo(
            family="dinov2",
            backend="transformers",
            name=name,
            embed_dim=int(cfg.hidden_size),
            width=int(cfg.hidden_size),
            patch_size=patch[0],
            image_size=preprocess_config.image_size,
            mean=tuple(preprocess_config.mean),  # type: ignore[arg-type]
            std=tuple(preprocess_config.std),  # type: ignore[arg-type]
            has_text=False,
            num_layers=int(cfg.num_hidden_layers),
            num_registers=num_registers,
        )
        super().__init__(info, preprocess_config)
        self.model = model

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks, after the class token and registers."""
        return TokenMergingSites(blocks=self.model.encoder.layer, prefix=1 + self._info.num_registers)

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one model pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is ``(H // patch, W // patch)``.
            layers: block indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled``/``cls`` ``[B, C]``, ``patches`` ``[B, h, w, C]``, ``registers``
            ``[B, R, C]`` or ``None`` and ``layers`` ``{i: [B, h, w, C]}``.
        """
        idx = self._layer_indices(layers)
        p = self._info.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        r = self._info.num_registers
        with tap_blocks(self.model.encoder.layer, idx) as taps:
            out = self.model(pixel_values=pixel_values.to(self.dtype))
        last = out.last_hidden_state  # [B, 1 + R + h*w, C], after the final layer norm
        cls = last[:, 0]
        return Features(
            pooled=cls,
            patches=tokens_to_grid(last, grid, prefix=1 + r),
            grid=grid,
            cls=cls,
            registers=last[:, 1 : 1 + r] if r > 0 else None,
            layers={i: tokens_to_grid(taps[i], grid, prefix=1 + r) for i in idx},
        )


def build(req: LoadRequest) -> Dinov2Encoder:
    """Build a :class:`Dinov2Encoder` from a transformers checkpoint directory."""
    from transformers import AutoModel

    model = load_hf_model(AutoModel, req.path, allow_pickle=req.allow_pickle)
    if model.config.model_type not in MODEL_TYPES:
        raise ValueError(f"{req.path} holds a {model.config.model_type!r} model, not DINOv2")
    return Dinov2Encoder(model, load_preprocess_config(req.path), name=req.name)


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in dinov2 encoders (the family's ``peft_layout``)."""
    return TargetLayout(
        description="dinov2 (transformers)",
        attention=(
            rf"encoder\.layer\.{_B}\.attention\.(q_proj|k_proj|v_proj|o_proj)",  # transformers >= 5
            rf"encoder\.layer\.{_B}\.attention\.(attention\.(query|key|value)|output\.dense)",  # transformers 4
        ),
        mlp=(rf"encoder\.layer\.{_B}\.mlp\.(fc1|fc2|gate_proj|up_proj|down_proj|weights_in|weights_out)",),
    )


register_family(
    Family(
        name="dinov2",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="DINOv2 self-supervised ViTs (optionally with registers): CLS, patch and register tokens",
        formats="transformers (config.json with model_type dinov2 / dinov2_with_registers)",
        peft_layout=peft_layout,
    )
)

_SIZES = {
    "small": "ViT-S/14, 22M params, width 384",
    "base": "ViT-B/14, 86M params, width 768",
    "large": "ViT-L/14, 300M params, width 1024",
    "giant": "ViT-g/14, 1.1B params, width 1536",
}
for _size, _desc in _SIZES.items():
    register_model(
        ModelSpec(
            name=f"dinov2-{_size}",
            family="dinov2",
            source=f"facebook/dinov2-{_size}",
            backend="transformers",
            description=f"DINOv2 {_desc}",
        )
    )
    register_model(
        ModelSpec(
            name=f"dinov2-{_size}-reg",
            family="dinov2",
            source=f"facebook/dinov2-with-registers-{_size}",
            backend="transformers",
            description=f"DINOv2 with 4 registers, {_desc}",
        )
    )
