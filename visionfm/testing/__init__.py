"""Tiny random checkpoints in each family's true on-disk format, for tests and examples.

``tiny_checkpoint("clip", backend="open_clip")`` writes ``open_clip_config.json`` +
``open_clip_model.safetensors``; ``backend="transformers"`` writes a transformers directory
(``config.json``, ``model.safetensors``, tokenizer and preprocessor files); ``"dit"`` and ``"pixart"`` write
diffusers pipeline directories. They load through the real ``load_encoder`` path and through the reference
libraries themselves, which is what the parity tests compare.

The writers live in one module per family under ``visionfm/testing/`` (``clip.py``, ``dinov2.py``, ...), each
registering its kinds with :func:`visionfm.testing._registry.tiny_writer`; :func:`tiny_checkpoint` and
:func:`tiny_kinds` import every such module, so a new family's writer is one new file here.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from ._registry import TinyWriter, registered

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

#: The same for ``recipes/toyworld_ssl.yaml`` and ``recipes/toyworld_sam.yaml`` (the demo's other two toy models).
TINY_TOY_SSL_OVERRIDES: tuple[str, ...] = (
    "model.width=32", "model.heads=2", "model.layers=1", "ssl.head_hidden=32", "ssl.bottleneck=8",
    "data.num_scenes=16", "train.max_steps=2", "train.batch_size=4", "train.num_workers=0", "train.progress=false",
)  # fmt: skip
TINY_TOY_SAM_OVERRIDES: tuple[str, ...] = (
    "model.width=16", "model.heads=1", "model.layers=1", "model.global_layers=[0]", "model.neck=32",
    "data.num_scenes=16", "train.max_steps=2", "train.batch_size=4", "train.num_workers=0", "train.progress=false",
)  # fmt: skip

_discovered = False


def _writers() -> dict[str, TinyWriter]:
    """Import every public submodule of this package once (they register their writers), then the table."""
    global _discovered
    if not _discovered:
        for mod in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
            if not mod.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(mod.name)
        _discovered = True
    return registered()


def tiny_kinds() -> list[str]:
    """The kinds :func:`tiny_checkpoint` can write."""
    return sorted(_writers())


def tiny_checkpoint(
    kind: str, backend: str | None = None, *, root: str | os.PathLike | None = None, seed: int = 0
) -> Path:
    """Write (once) and return a tiny random checkpoint directory.

    Args:
        kind: ``"clip"``, ``"clip-resnet"`` (open_clip ModifiedResNet tower), ``"clip-b16"`` (ViT-B/16 geometry, OpenAI head width), ``"clip-b16-12layer"`` (the same with 12 vision layers), ``"siglip"``, ``"dinov2"``, ``"dinov2-registers"``, ``"sam"``, ``"sam2"`` (SAM 2, ``Sam2Model``), ``"edgetam"``, ``"sam3"``, ``"dit"``, ``"pixart"`` (a diffusers ``PixArtAlphaPipeline`` directory), ``"timm-vit"`` (timm's ``save_for_hf`` format), the detectors ``"owlv2"``, ``"owlvit"``, ``"grounding-dino"``, or ``"student"``; see :func:`tiny_kinds`.
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
    writers = _writers()
    if kind not in writers:
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}; choose from {tiny_kinds()}")
    writer = writers[kind]
    backend = backend or writer.default_backend
    root = Path(root) if root is not None else Path(tempfile.gettempdir()) / f"visionfm-tiny-{_version_key()}"
    out = root / f"{kind}-{backend}-seed{seed}"
    if (out / ".complete").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        writer.fn(tmp, backend=backend)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


#: Bumped whenever a writer changes, so the shared temp cache never serves a stale tiny checkpoint.
TINY_FORMAT = 3


def _version_key() -> str:
    """``<visionfm version>-tf<transformers version>-f<TINY_FORMAT>``, read from package metadata (no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    def _version(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "none"

    return f"{_version('visionfm')}-tf{_version('transformers')}-f{TINY_FORMAT}"


__all__ = [
    "TINY_FORMAT",
    "TINY_TOY_CLIP_OVERRIDES",
    "TINY_TOY_SAM_OVERRIDES",
    "TINY_TOY_SSL_OVERRIDES",
    "tiny_checkpoint",
    "tiny_kinds",
]
