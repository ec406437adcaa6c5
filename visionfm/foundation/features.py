"""The one feature contract every encoder family returns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class Features:
    """Features of a batch of images, the same for every family.

    Attributes:
        pooled: ``[B, D]`` summary embedding. CLIP/SigLIP: the image embedding in the shared
            image-text space (``D = info.embed_dim``). DINOv2: the normalised CLS token. SAM and DiT:
            the mean of the patch grid.
        patches: ``[B, h, w, C]`` dense features on the patch grid, channels last, row-major
            (``patches[b, i, j]`` covers the patch at row ``i``, column ``j`` of the model input).
            CLIP ViT: final tokens after the last layer norm, before the projection (open_clip's
            ``output_tokens`` convention), ``C = info.width``; CLIP ResNet: the last stage's map before
            the attention pool.
        grid: ``(h, w)`` of the patch grid.
        cls: ``[B, C]`` class token after the final norm, for families that have one, else ``None``.
        registers: ``[B, R, C]`` register tokens (DINOv2 with registers), else ``None``.
        layers: requested intermediate taps, ``{block_index: [B, h_l, w_l, C_l]}`` raw block outputs
            (before any final norm); block indices are 0-based and normalised to non-negative values.
            Transformers tap on the patch grid (``h_l, w_l == grid``); CNN towers (open_clip's ResNet) and
            hierarchical backbones (SAM 2's Hiera, EdgeTAM's RepViT) tap each stage on its own grid.
    """

    pooled: torch.Tensor
    patches: torch.Tensor
    grid: tuple[int, int]
    cls: torch.Tensor | None = None
    registers: torch.Tensor | None = None
    layers: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pooled.ndim != 2:
            raise ValueError(f"Features.pooled must be [B, D], got shape {tuple(self.pooled.shape)}")
        if self.patches.ndim != 4:
            raise ValueError(f"Features.patches must be [B, h, w, C], got shape {tuple(self.patches.shape)}")
        if tuple(self.patches.shape[1:3]) != tuple(self.grid):
            raise ValueError(f"Features.grid {self.grid} does not match patches shape {tuple(self.patches.shape)}")
        self.grid = (int(self.grid[0]), int(self.grid[1]))

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def _map(self, fn) -> Features:
        kw: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = fn(v)
            elif isinstance(v, dict):
                v = {k: fn(t) for k, t in v.items()}
            kw[f.name] = v
        return Features(**kw)

    def to(self, *args: Any, **kwargs: Any) -> Features:
        """Return a copy with every tensor moved/cast, like ``Tensor.to``."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def cpu(self) -> Features:
        """Return a copy with every tensor on the CPU."""
        return self._map(lambda t: t.cpu())

    def float(self) -> Features:
        """Return a copy with every tensor in float32."""
        return self._map(lambda t: t.float())

    def __getitem__(self, index: int | slice) -> Features:
        """Select images of the batch; an ``int`` keeps a batch dimension of 1."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    @staticmethod
    def cat(parts: list[Features]) -> Features:
        """Concatenate batches along the batch dimension.

        Args:
            parts: non-empty list of ``Features`` with the same grid and the same optional fields.
        """
        if not parts:
            raise ValueError("Features.cat needs at least one Features")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        kw: dict[str, Any] = {"grid": first.grid}
        for name in ("pooled", "patches", "cls", "registers"):
            vals = [getattr(p, name) for p in parts]
            kw[name] = None if vals[0] is None else torch.cat(vals)
        kw["layers"] = {k: torch.cat([p.layers[k] for p in parts]) for k in first.layers}
        return Features(**kw)


@dataclass(frozen=True)
class EncoderInfo:
    """Static facts about a loaded encoder.

    Attributes:
        family: ``"clip" | "dinov2" | "sam" | "dit" | "student"``.
        backend: library the weights run on (``"open_clip"``, ``"transformers"``, ``"diffusers"``, ...).
        name: the name or path it was loaded from.
        embed_dim: width ``D`` of ``Features.pooled`` (and of ``encode_text`` for text families).
        width: channels ``C`` of ``Features.patches``.
        patch_size: pixels per patch side at the model input.
        image_size: ``(H, W)`` of the model input after preprocessing.
        mean: per-channel normalisation mean, RGB, in [0, 1] units.
        std: per-channel normalisation std, RGB, in [0, 1] units.
        has_text: whether ``encode_text`` is available.
        num_layers: number of blocks that ``layers=[...]`` may tap.
        num_registers: register tokens (DINOv2 with registers), else 0.
    """

    family: str
    backend: str
    name: str
    embed_dim: int
    width: int
    patch_size: int
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    has_text: bool = False
    num_layers: int = 0
    num_registers: int = 0
