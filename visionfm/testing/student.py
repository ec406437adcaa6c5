"""Tiny random distilled student (teachers ``clip``, ``dino``, ``sam``), visionfm's own student format."""

from __future__ import annotations

import os
from pathlib import Path

from visionfm.foundation.student import AdaptorConfig, StudentConfig, build_student, save_student

from ._registry import tiny_writer


def tiny_config(*, text_from: str | None = None, clip_dim: int = 32) -> StudentConfig:
    """A tiny student: 32px, patch 8, width 32, 2 blocks, 2 registers, teachers ``clip``, ``dino``, ``sam``."""
    return StudentConfig(
        image_size=32,
        patch_size=8,
        width=32,
        depth=2,
        heads=2,
        mlp_ratio=2.0,
        num_registers=2,
        adaptors={
            "clip": AdaptorConfig(summary_dim=clip_dim, patch_dim=clip_dim, hidden=48, kind="clip"),
            "dino": AdaptorConfig(summary_dim=24, patch_dim=24, hidden=48, kind="dino"),
            "sam": AdaptorConfig(summary_dim=0, patch_dim=16, hidden=32, kind="sam"),
        },
        text_from=text_from,
    )


@tiny_writer("student", default_backend="torch")
def write_tiny_student(path: Path, backend: str = "torch", *, text_from: str | os.PathLike | None = None) -> None:
    """Write a tiny random student (see :func:`tiny_config`); with ``text_from`` (a CLIP directory or name) its
    ``clip`` adaptor matches that CLIP's embedding width and ``encode_text`` uses its text tower."""
    if backend != "torch":
        raise ValueError(f"student tiny checkpoints exist only for backend 'torch', not {backend!r}")
    clip_dim = 32
    if text_from is not None:
        from visionfm.foundation.loading import load_encoder

        text_from = os.fspath(text_from)
        clip_dim = load_encoder(text_from, device="cpu").info.embed_dim
    save_student(build_student(tiny_config(text_from=text_from, clip_dim=clip_dim)), path)


__all__ = ["tiny_config", "write_tiny_student"]
