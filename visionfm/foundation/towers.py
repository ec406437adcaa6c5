"""Small timm image towers of visionfm's own, for open_clip CLIPs trained from scratch (the toyworld zoo).

Importing this module registers the timm model names below, so that an open_clip config with
``vision_cfg.timm_model_name: visionfm_conv_stem_vit`` builds (``visionfm.load_encoder`` imports it whenever a
config names a ``visionfm_`` timm model; plain open_clip users import it first).

- ``visionfm_conv_stem_vit``: a ViT whose patch embedding is a stack of 3 x 3 stride-2 convolutions instead of one
  strided ``patch x patch`` projection (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS
  2021): the transformer still sees one token per ``patch x patch`` cell, but each token is built by a small CNN,
  which gives a from-scratch ViT the locality prior it lacks on little data. Defaults: 64 px input, patch 8 (an
  8 x 8 token grid), width 128, 4 blocks of 4 heads, no class token, average pooling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

VISIONFM_TIMM_PREFIX = "visionfm_"


class ConvStemPatchEmbed(nn.Module):
    """Patch embedding by ``log2(patch_size)`` conv 3 x 3 / stride 2 + GroupNorm + GELU layers and a final 1 x 1
    convolution to the embedding width.

    Input ``[B, in_chans, H, W]`` with ``H`` and ``W`` multiples of ``patch_size``; output ``[B, H/p * W/p, embed_dim]``
    (row-major tokens), like timm's ``PatchEmbed``, or ``[B, H/p, W/p, embed_dim]`` when timm asks for
    ``output_fmt="NHWC"`` (a ViT built with ``dynamic_img_size=True``, which then resizes its position table). ``proj`` is the whole stem, so code that calls
    ``patch_embed.proj(x)`` for the ``[B, embed_dim, H/p, W/p]`` map works unchanged. GroupNorm rather than BatchNorm
    keeps every image's tokens independent of the rest of its batch.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 64,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 128,
        stem_width: int = 32,
        output_fmt: str | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}")
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"img_size {size} must be a multiple of patch_size {patch_size}")
        self.img_size = size
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.output_nhwc = output_fmt == "NHWC"  # timm asks for NHWC tokens when the ViT has dynamic_img_size
        self.dynamic_img_size = self.output_nhwc
        layers: list[nn.Module] = []
        chans, width = in_chans, stem_width
        for _ in range(int(math.log2(patch_size))):
            layers += [nn.Conv2d(chans, width, 3, 2, 1, bias=False), nn.GroupNorm(8, width), nn.GELU()]
            chans, width = width, min(2 * width, embed_dim)
        layers.append(nn.Conv2d(chans, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = nn.Identity()

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        """Input pixels per token side (timm's ``PatchEmbed`` API)."""
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid for an input of ``img_size`` (timm's ``PatchEmbed`` API)."""
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"input size {(h, w)} is not a multiple of the patch size {self.patch_size}")
        y = self.proj(x)
        return self.norm(y.permute(0, 2, 3, 1) if self.output_nhwc else y.flatten(2).transpose(1, 2))


def _conv_stem_vit(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Built by timm's ``build_model_with_cfg``, so ``timm.create_model("local-dir:DIR", pretrained=True)`` (or an
    ``hf-hub:`` id) loads saved weights as for any timm model; there are no published weights of its own."""
    from timm.models import build_model_with_cfg
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    args: dict[str, Any] = dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0,
                                class_token=False, global_pool="avg", embed_layer=ConvStemPatchEmbed)  # fmt: skip
    args.update(kwargs)
    cfg = kwargs.pop("pretrained_cfg", None)
    args.pop("pretrained_cfg", None)
    size = args["img_size"] if isinstance(args["img_size"], (tuple, list)) else (args["img_size"],) * 2
    default = {"input_size": (3, *size), "num_classes": 0, "mean": (0.485, 0.456, 0.406),
               "std": (0.229, 0.224, 0.225), "interpolation": "bilinear", "crop_pct": 1.0}  # fmt: skip
    if pretrained and cfg is None:
        raise ValueError("visionfm_conv_stem_vit has no published weights; load a saved checkpoint directory")
    return build_model_with_cfg(VisionTransformer, "visionfm_conv_stem_vit", pretrained,
                                pretrained_cfg=cfg if cfg is not None else default,
                                pretrained_filter_fn=checkpoint_filter_fn, **args)  # fmt: skip


def ensure_registered(model_cfg: dict[str, Any]) -> None:
    """Register the towers when an open_clip ``model_cfg`` names a ``visionfm_`` timm model."""
    if str(model_cfg.get("vision_cfg", {}).get("timm_model_name") or "").startswith(VISIONFM_TIMM_PREFIX):
        register()


def register() -> None:
    """Register the towers with timm (idempotent)."""
    from timm.models import is_model, register_model

    if not is_model("visionfm_conv_stem_vit"):

        def visionfm_conv_stem_vit(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return _conv_stem_vit(pretrained, **kwargs)

        register_model(visionfm_conv_stem_vit)
