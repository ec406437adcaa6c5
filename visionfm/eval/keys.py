"""Stable keys for the eval caches: model fingerprints and task hashes (a leaf)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def model_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 over the model's state dict (names, shapes, dtypes and bytes), independent of where it was loaded,
    and over its speed options (token merging, quantization) when any is on: they change the outputs."""
    h = hashlib.sha256()
    speed = getattr(encoder, "speed_options", None)
    if speed:
        h.update(json.dumps(speed, sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def task_key(task: dict[str, Any]) -> str:
    """12 hex digits of sha256 over a task spec (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(task, sort_keys=True, default=str).encode()).hexdigest()[:12]
