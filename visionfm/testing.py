"""Tiny random checkpoints in each family's true on-disk format, for tests and examples.

``tiny_checkpoint("clip", backend="open_clip")`` writes ``open_clip_config.json`` +
``open_clip_model.safetensors``; ``backend="transformers"`` writes a transformers directory
(``config.json``, ``model.safetensors``, tokenizer and preprocessor files); ``"dit"`` and ``"pixart"`` write
diffusers pipeline directories. They load through the real ``load_encoder`` path and through the reference
libraries themselves, which is what the parity tests compare.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

_DEFAULT_BACKEND = {
    "clip": "open_clip",
    "clip-resnet": "open_clip",
    "siglip": "transformers",
    "dinov2": "transformers",
    "dinov2-registers": "transformers",
    "sam": "transformers",
    "dit": "diffusers",
    "pixart": "diffusers",
    "owlv2": "transformers",
    "owlvit": "transformers",
    "grounding-dino": "transformers",
    "student": "torch",
}
# kind -> (module, writer function)
_WRITERS = {
    "clip": ("visionfm.foundation.clip", "write_tiny_clip"),
    "clip-resnet": ("visionfm.foundation.clip", "write_tiny_clip_resnet"),
    "siglip": ("visionfm.foundation.clip", "write_tiny_siglip"),
    "dinov2": ("visionfm.foundation.dinov2", "write_tiny_dinov2"),
    "dinov2-registers": ("visionfm.foundation.dinov2", "write_tiny_dinov2_registers"),
    "sam": ("visionfm.foundation.sam", "write_tiny_sam"),
    "dit": ("visionfm.foundation.dit", "write_tiny_dit"),
    "pixart": ("visionfm.foundation.pixart", "write_tiny_pixart"),
    "owlv2": ("visionfm.pipelines.detectors", "write_tiny_owlv2"),
    "owlvit": ("visionfm.pipelines.detectors", "write_tiny_owlvit"),
    "grounding-dino": ("visionfm.pipelines.detectors", "write_tiny_grounding_dino"),
    "student": ("visionfm.foundation.student", "write_tiny_student"),
}


#: Recipe overrides that shrink ``recipes/toyworld_clip.yaml`` to a seconds-long run (tests, smoke checks).
TINY_TOY_CLIP_OVERRIDES: tuple[str, ...] = (
    "model.embed_dim=32",
    "model.vision_cfg.width=4",
    "model.text_cfg.width=32",
    "model.text_cfg.heads=1",
    "model.text_cfg.layers=1",
    "data.num_scenes=64",
    "train.max_steps=4",
    "train.batch_size=16",
    "train.save_every=2",
    "train.log_every=1",
    "train.num_workers=0",
    "train.progress=false",
)


def tiny_kinds() -> list[str]:
    """The kinds :func:`tiny_checkpoint` can write."""
    return sorted(_WRITERS)


def tiny_checkpoint(
    kind: str, backend: str | None = None, *, root: str | os.PathLike | None = None, seed: int = 0
) -> Path:
    """Write (once) and return a tiny random checkpoint directory.

    Args:
        kind: ``"clip"``, ``"clip-resnet"`` (open_clip ModifiedResNet tower), ``"siglip"``, ``"dinov2"``, ``"dinov2-registers"``, ``"sam"``, ``"dit"``, ``"pixart"`` (a diffusers ``PixArtAlphaPipeline`` directory), or the detectors ``"owlv2"``, ``"owlvit"``, ``"grounding-dino"``.
        backend: on-disk format; ``"open_clip"`` or ``"transformers"`` for ``clip``; the others have
            one format each.
        root: parent directory; default: a per-user temp cache, so a test session writes each
            checkpoint once.
        seed: torch seed of the random weights.

    Returns:
        The checkpoint directory.

    Example:
        >>> import numpy as np, visionfm as vfm
        >>> enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu")
        >>> feats = enc.encode(np.zeros((60, 80, 3), np.uint8))
        >>> tuple(feats.pooled.shape), tuple(feats.patches.shape), feats.grid
        ((1, 32), (1, 4, 4, 32), (4, 4))
    """
    if kind not in _WRITERS:
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}; choose from {tiny_kinds()}")
    backend = backend or _DEFAULT_BACKEND[kind]
    root = Path(root) if root is not None else Path(tempfile.gettempdir()) / f"visionfm-tiny-{_version_key()}"
    out = root / f"{kind}-{backend}-seed{seed}"
    if (out / ".complete").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    module, fn = _WRITERS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        getattr(importlib.import_module(module), fn)(tmp, backend=backend)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


#: Bumped whenever a writer changes, so the shared temp cache never serves a stale tiny checkpoint.
TINY_FORMAT = 3


def _version_key() -> str:
    import transformers

    import visionfm

    return f"{visionfm.__version__}-tf{transformers.__version__}-f{TINY_FORMAT}"
