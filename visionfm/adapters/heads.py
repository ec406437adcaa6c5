"""Task heads on the :class:`~visionfm.foundation.features.Features` contract.

- :class:`ClassificationHead`: linear or MLP on ``Features.pooled`` ``[B, D]`` → logits ``[B, K]``.
- :class:`SegmentationHead`: on ``Features.patches`` ``[B, h, w, C]`` → logits ``[B, K, H, W]``; ``"linear"`` is a
  1×1 conv on the patch grid upsampled bilinearly (the DINOv2 linear-probe head), ``"upsample"`` a small decoder of
  two conv + 2× upsampling stages before the final bilinear resize.
- :class:`EncoderWithHead`: an encoder plus a head as one ``nn.Module`` (what the training loop optimises).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..foundation.encoder import Encoder


class ClassificationHead(nn.Module):
    """Logits from pooled features.

    Args:
        in_dim: ``D`` of ``Features.pooled``.
        num_classes: ``K``.
        kind: ``"linear"`` or ``"mlp"`` (one hidden layer with GELU).
        hidden: MLP width.
        normalize: L2-normalise the features first (CLIP/DINOv2 features are compared by cosine).
    """

    def __init__(
        self, in_dim: int, num_classes: int, *, kind: str = "linear", hidden: int = 512, normalize: bool = True
    ):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"classification head kind must be 'linear' or 'mlp', got {kind!r}")
        self.normalize = normalize
        self.net = (
            nn.Linear(in_dim, num_classes)
            if kind == "linear"
            else nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes))
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` → ``[B, K]``."""
        x = pooled.float()
        return self.net(F.normalize(x, dim=-1) if self.normalize else x)


class SegmentationHead(nn.Module):
    """Per-pixel logits from the patch grid.

    Args:
        in_dim: ``C`` of ``Features.patches``.
        num_classes: ``K``.
        kind: ``"linear"`` or ``"upsample"``.
        hidden: decoder width (``"upsample"``).
    """

    def __init__(self, in_dim: int, num_classes: int, *, kind: str = "linear", hidden: int = 128):
        super().__init__()
        if kind not in ("linear", "upsample"):
            raise ValueError(f"segmentation head kind must be 'linear' or 'upsample', got {kind!r}")
        self.kind = kind
        self.norm = nn.LayerNorm(in_dim)
        if kind == "linear":
            self.net = nn.Conv2d(in_dim, num_classes, 1)
        else:
            self.net = nn.Sequential(
                nn.Conv2d(in_dim, hidden, 3, padding=1), nn.GELU(), nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(), nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(hidden, num_classes, 1),
            )  # fmt: skip

    def forward(self, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[B, h, w, C]`` → ``[B, K, H, W]`` at ``size = (H, W)``."""
        x = self.norm(patches.float()).permute(0, 3, 1, 2)
        return F.interpolate(self.net(x), size, mode="bilinear", align_corners=False)


class EncoderWithHead(nn.Module):
    """An encoder and a head trained together (frozen, adapted or fully fine-tuned encoder).

    Args:
        encoder: any :class:`Encoder`.
        head: a :class:`ClassificationHead` (reads ``pooled``) or :class:`SegmentationHead` (reads ``patches``).
    """

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels ``[B, 3, H, W]`` → logits (``[B, K]`` or ``[B, K, H, W]``)."""
        feats = self.encoder(pixel_values)
        if isinstance(self.head, SegmentationHead):
            return self.head(feats.patches, tuple(pixel_values.shape[-2:]))
        return self.head(feats.pooled)
