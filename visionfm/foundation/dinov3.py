"""DINOv3 ViTs and ConvNeXts through transformers' ``DINOv3ViTModel`` / ``DINOv3ConvNextModel``.

The transformers checkpoint directory (``config.json`` with ``model_type`` ``dinov3_vit`` or
``dinov3_convnext``, ``model.safetensors``, ``preprocessor_config.json``) is the on-disk format.
Preprocessing reproduces the checkpoint's ``DINOv3ViTImageProcessor(Fast)``, which rescales to [0, 1]
*before* resizing (bilinear, antialiased, on float pixels: no rounding to uint8 levels), then centre
crops (when set) and normalises. The ViTs use RoPE, so any input whose sides are multiples of the patch
runs at its own resolution, with no position table to resize.
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

VIT, CONVNEXT = "dinov3_vit", "dinov3_convnext"
MODEL_TYPES = (VIT, CONVNEXT)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What facebook/dinov3-* ship in preprocessor_config.json (a DINOv3ViTImageProcessorFast): 224x224, bilinear.
DEFAULT_PREPROCESS = PreprocessConfig(
    resize="exact",
    resize_size=None,
    interpolation="bilinear",
    crop_size=(224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    rescale_before_resize=True,
)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def detect(path: Path) -> str | None:
    """``"transformers"`` if ``path`` holds a transformers DINOv3 (ViT or ConvNeXt) checkpoint, else ``None``."""
    mt = hf_model_type(Path(path))
    return "transformers" if mt is not None and mt in MODEL_TYPES else None


def load_preprocess_config(path: Path) -> PreprocessConfig:
    """The checkpoint's ``preprocessor_config.json`` as a :class:`PreprocessConfig`.

    Falls back to DINOv3's reference preprocessing (resize to 224x224, bilinear, ImageNet mean/std) with a
    warning when the file is missing.
    """
    pp = PreprocessConfig.from_hf_dir(Path(path), "DINOv3ViTImageProcessor")
    if pp is not None and not pp.rescale_before_resize:  # a checkpoint naming no processor type: still DINOv3's
        import dataclasses

        pp = dataclasses.replace(pp, rescale_before_resize=True)
    if pp is None:
        logger.warning(
            "%s has no preprocessor_config.json (nor processor_config.json); using DINOv3's reference preprocessing "
            "(resize to 224x224, bilinear, ImageNet mean/std)",
            path,
        )
        return DEFAULT_PREPROCESS
    return pp


def _info(name: str, pp: PreprocessConfig, **kw: Any) -> EncoderInfo:
    return EncoderInfo(
        family="dinov3",
        backend="transformers",
        name=name,
        image_size=pp.image_size,
        mean=tuple(pp.mean),  # type: ignore[arg-type]
        std=tuple(pp.std),  # type: ignore[arg-type]
        has_text=False,
        **kw,
    )


class Dinov3ViTEncoder(Encoder):
    """DINOv3 ViT image encoder (RoPE positions, register tokens, layer scale).

    ``Features``: ``pooled`` and ``cls`` are the layer-normed CLS token ``[B, C]`` (transformers'
    ``pooler_output``); ``patches`` the layer-normed patch tokens ``[B, h, w, C]``; ``registers`` the
    layer-normed register tokens ``[B, R, C]`` (``None`` without registers); ``layers`` raw block
    outputs (before the final norm) on the patch grid. Inputs of any size run at their own resolution;
    the grid is ``(H // patch, W // patch)``.

    Args:
        model: a transformers ``DINOv3ViTModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        patch = _pair(cfg.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patches {patch} are not supported")
        info = _info(
            name,
            preprocess_config,
            embed_dim=int(cfg.hidden_size),
            width=int(cfg.hidden_size),
            patch_size=patch[0],
            num_layers=int(cfg.num_hidden_layers),
            num_registers=int(cfg.num_register_tokens or 0),
        )
        super().__init__(info, preprocess_config)
        self.model = model

    def token_merging_sites(self) -> TokenMergingSites:
        """The ViT blocks, after the class token and registers; the rotary tables follow the merged tokens."""
        return TokenMergingSites(
            blocks=self.model.model.layer, prefix=1 + self._info.num_registers, rope_kwarg="position_embeddings"
        )

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
        prefix = 1 + self._info.num_registers
        with tap_blocks(self.model.model.layer, idx) as taps:
            out = self.model(pixel_values=pixel_values.to(self.dtype))
        last = out.last_hidden_state  # [B, 1 + R + h*w, C], after the final layer norm
        return Features(
            pooled=out.pooler_output,
            patches=tokens_to_grid(last, grid, prefix=prefix),
            grid=grid,
            cls=last[:, 0],
            registers=last[:, 1:prefix] if prefix > 1 else None,
            layers={i: tokens_to_grid(taps[i], grid, prefix=prefix) for i in idx},
        )


class Dinov3ConvNextEncoder(Encoder):
    """DINOv3 ConvNeXt image encoder (distilled from the 7B ViT).

    ``Features``: ``pooled`` is transformers' ``pooler_output`` (the layer-normed global average of the last
    stage) ``[B, C]``; ``patches`` the layer-normed last-stage map ``[B, h, w, C]`` (stride 32); ``cls`` and
    ``registers`` are ``None``; ``layers`` taps stages (``0..num_stages-1``), each raw stage output on its own
    grid and width ``[B, h_l, w_l, C_l]``. ``info.patch_size`` is the total stride.

    Args:
        model: a transformers ``DINOv3ConvNextModel``.
        preprocess_config: how images become the model input.
        name: recorded in ``info.name``.
    """

    def __init__(self, model: torch.nn.Module, preprocess_config: PreprocessConfig, name: str) -> None:
        cfg = model.config
        width = int(cfg.hidden_sizes[-1])
        info = _info(
            name,
            preprocess_config,
            embed_dim=width,
            width=width,
            patch_size=4 * 2 ** (len(cfg.hidden_sizes) - 1),
            num_layers=len(cfg.hidden_sizes),
        )
        super().__init__(info, preprocess_config)
        self.model = model

    def forward(self, pixel_values: torch.Tensor, layers: Sequence[int] | None = None) -> Features:
        """Encode preprocessed pixels in one model pass.

        Args:
            pixel_values: ``[B, 3, H, W]`` normalised pixels; the grid is the last stage's map.
            layers: stage indices to tap (negative counts from the end).

        Returns:
            ``Features`` with ``pooled`` ``[B, C]``, ``patches`` ``[B, h, w, C]`` and ``layers``
            ``{i: [B, h_i, w_i, C_i]}``.
        """
        idx = self._layer_indices(layers)
        last_stage = self._info.num_layers - 1
        with tap_blocks(self.model.model.stages, sorted({*idx, last_stage})) as taps:
            out = self.model(pixel_values=pixel_values.to(self.dtype))
        grid = (int(taps[last_stage].shape[-2]), int(taps[last_stage].shape[-1]))
        return Features(
            pooled=out.pooler_output,
            patches=tokens_to_grid(out.last_hidden_state, grid, prefix=1),  # [B, 1 + h*w, C]: pooled token first
            grid=grid,
            layers={i: taps[i].permute(0, 2, 3, 1) for i in idx},
        )


def build(req: LoadRequest) -> Dinov3ViTEncoder | Dinov3ConvNextEncoder:
    """Build a DINOv3 encoder (ViT or ConvNeXt) from a transformers checkpoint directory."""
    from transformers import AutoModel

    model = load_hf_model(AutoModel, req.path, allow_pickle=req.allow_pickle)
    mt = model.config.model_type
    if mt not in MODEL_TYPES:
        raise ValueError(f"{req.path} holds a {mt!r} model, not DINOv3")
    cls = Dinov3ViTEncoder if mt == VIT else Dinov3ConvNextEncoder
    return cls(model, load_preprocess_config(req.path), name=req.name)


# -- registration ------------------------------------------------------------------------------------
_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    """Where PEFT adapters go in dinov3 encoders (the family's ``peft_layout``).

    ViT: ``model.layer.<i>.attention.{q,k,v,o}_proj`` and ``model.layer.<i>.mlp.{up,down,gate}_proj``.
    ConvNeXt has no attention; its MLP is ``model.stages.<s>.layers.<i>.pointwise_conv{1,2}``.
    """
    if getattr(encoder.model.config, "model_type", None) == CONVNEXT:
        return TargetLayout(
            description="dinov3 ConvNeXt (transformers)",
            mlp=(rf"model\.stages\.{_B}\.layers\.{_B}\.pointwise_conv(1|2)",),
        )
    return TargetLayout(
        description="dinov3 ViT (transformers)",
        attention=(rf"model\.layer\.{_B}\.attention\.(q_proj|k_proj|v_proj|o_proj)",),
        mlp=(rf"model\.layer\.{_B}\.mlp\.(up_proj|down_proj|gate_proj)",),
    )


register_family(
    Family(
        name="dinov3",
        backends=("transformers",),
        detect=detect,
        build=build,
        options={},
        description="DINOv3 self-supervised ViTs (RoPE, registers) and ConvNeXts: CLS, patch and register tokens",
        formats="transformers (config.json with model_type dinov3_vit / dinov3_convnext)",
        peft_layout=peft_layout,
    )
)

_VITS = {
    "vits16": "ViT-S/16, 21M params, width 384, 4 registers",
    "vits16plus": "ViT-S+/16, 29M params, width 384, 4 registers, SwiGLU",
    "vitb16": "ViT-B/16, 86M params, width 768, 4 registers",
    "vitl16": "ViT-L/16, 300M params, width 1024, 4 registers",
    "vith16plus": "ViT-H+/16, 840M params, width 1280, 4 registers, SwiGLU",
    "vit7b16": "ViT-7B/16, 6.7B params, width 4096, 4 registers, SwiGLU",
}
_CONVNEXTS = {
    "tiny": "ConvNeXt-T, 29M params, width 768",
    "small": "ConvNeXt-S, 50M params, width 768",
    "base": "ConvNeXt-B, 89M params, width 1024",
    "large": "ConvNeXt-L, 198M params, width 1536",
}
for _arch, _desc in _VITS.items():
    register_model(
        ModelSpec(
            name=f"dinov3-{_arch}",
            family="dinov3",
            source=f"facebook/dinov3-{_arch}-pretrain-lvd1689m",
            backend="transformers",
            description=f"DINOv3 {_desc} (LVD-1689M)",
        )
    )
for _size, _desc in _CONVNEXTS.items():
    register_model(
        ModelSpec(
            name=f"dinov3-convnext-{_size}",
            family="dinov3",
            source=f"facebook/dinov3-convnext-{_size}-pretrain-lvd1689m",
            backend="transformers",
            description=f"DINOv3 {_desc}, distilled from ViT-7B (LVD-1689M)",
        )
    )
