"""Where PEFT adapters go in CLIP image towers (the family's ``peft_layout``; see :mod:`visionfm.adapters`).

open_clip's ModifiedResNet attention pool reads its q/k/v/c projection weights directly in
``F.multi_head_attention_forward``; :func:`prepare_open_clip_resnet` routes it through the modules' ``forward`` so
adapters on them take effect.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import TargetLayout

_B = r"\d+"  # a block index


def peft_layout(encoder: Any) -> TargetLayout:
    if encoder.info.backend == "open_clip":
        if getattr(encoder, "is_resnet", False):
            return TargetLayout(
                description="clip (open_clip, ModifiedResNet image tower)",
                image_roots=("visual",),
                attention=(r"visual\.attnpool\.(q_proj|k_proj|v_proj|c_proj)",),
                prepare=prepare_open_clip_resnet,
            )
        if getattr(encoder, "is_timm", False):  # timm ViT blocks (PE-Core, SigLIP 2, MobileCLIP2-B ...)
            return TargetLayout(
                description="clip (open_clip, timm image tower)",
                image_roots=("visual",),
                attention=(rf"visual\.trunk\.blocks\.{_B}\.attn\.(qkv|q_proj|k_proj|v_proj|proj)",),
                mlp=(rf"visual\.trunk\.blocks\.{_B}\.mlp\.(fc1|fc2|fc1_g|fc1_x)",),
            )
        return TargetLayout(
            description="clip (open_clip, ViT image tower)",
            image_roots=("visual",),
            attention=(rf"visual\.transformer\.resblocks\.{_B}\.attn",),
            mlp=(rf"visual\.transformer\.resblocks\.{_B}\.mlp\.(c_fc|c_proj)",),
        )
    kind = getattr(getattr(encoder.model, "config", None), "model_type", "clip")
    return TargetLayout(
        description=f"clip ({kind}, transformers)",
        image_roots=("vision_model", "visual_projection"),
        attention=(rf"vision_model\.encoder\.layers\.{_B}\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",),
        mlp=(rf"vision_model\.encoder\.layers\.{_B}\.mlp\.(fc1|fc2)",),
    )


def _attention_pool_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip ``AttentionPool2d.forward`` through the ``q/k/v/c_proj`` modules (so adapters apply).

    Args:
        x: ``[N, C, H, W]`` last-stage feature map.

    Returns:
        ``[N, output_dim]``: attention pool of the mean token over the ``HW + 1`` tokens, as the original.
    """
    n, c = x.shape[:2]
    x = x.reshape(n, c, -1).permute(2, 0, 1)  # [HW, N, C]
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # [HW + 1, N, C]
    x = x + self.positional_embedding[:, None, :].to(x.dtype)
    h = self.num_heads
    q = self.q_proj(x[:1]).reshape(1, n, h, c // h).permute(1, 2, 0, 3)  # [N, h, 1, d]
    k = self.k_proj(x).reshape(-1, n, h, c // h).permute(1, 2, 0, 3)  # [N, h, L, d]
    v = self.v_proj(x).reshape(-1, n, h, c // h).permute(1, 2, 0, 3)
    out = F.scaled_dot_product_attention(q, k, v)  # [N, h, 1, d]
    return self.c_proj(out.permute(0, 2, 1, 3).reshape(n, c))


def prepare_open_clip_resnet(base: nn.Module) -> None:
    """Make ``base.visual.attnpool`` run through its projection modules (idempotent)."""
    pool = base.visual.attnpool
    if pool.__dict__.get("forward") is None:
        pool.forward = types.MethodType(_attention_pool_forward, pool)
