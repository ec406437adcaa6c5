"""A tiny random CLIP with ViT-B/16's geometry and all 12 of its vision layers (``clip-b16-12layer``).

CorrCLIP's reference code (github.com/zdk258/CorrCLIP) averages a range of middle blocks chosen from the layer count
(5 blocks for 12 layers) and fails on fewer than 5 layers, so the 2-layer ``clip-b16`` cannot run it. Its golden
(``tests/pipelines/golden/corrclip.safetensors``) was computed on exactly this checkpoint at seed 0; the weights
(23 MB, most of it the text tower's 49408-token embedding) are written here rather than committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._registry import tiny_writer
from .clip import TINY_B16_CFG, write_tiny_clip

#: ``clip-b16`` (width 128, 64-wide heads, patch 16, 224 px, 2-layer text tower) with 12 vision layers.
TINY_B16_12LAYER_CFG: dict[str, Any] = {
    **TINY_B16_CFG,
    "vision_cfg": {**TINY_B16_CFG["vision_cfg"], "layers": 12},
}


@tiny_writer("clip-b16-12layer", default_backend="open_clip")
def write_tiny_clip_b16_12layer(path: Path, backend: str = "open_clip") -> None:
    """Tiny random CLIP shaped like ViT-B/16 with 12 vision layers (and 2 text layers), open_clip format."""
    if backend != "open_clip":
        raise ValueError("the tiny 12-layer B/16-shaped CLIP is written in open_clip format only")
    write_tiny_clip(path, backend, model_cfg=TINY_B16_12LAYER_CFG)


__all__ = ["TINY_B16_12LAYER_CFG", "write_tiny_clip_b16_12layer"]
