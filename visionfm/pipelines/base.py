"""``pipeline(task, model=...)``: the factory, the task registry and the shared input handling."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..foundation.encoder import Encoder

logger = logging.getLogger(__name__)

_TASKS: dict[str, type[Pipeline]] = {}
_LOAD_OPTIONS = (
    "allow_pickle", "local_files_only", "revision", "cache_dir", "backend", "adapter",
    "token_merging", "quantize", "calibration", "speed",
)  # fmt: skip


def register_pipeline(task: str) -> Callable[[type[Pipeline]], type[Pipeline]]:
    """Class decorator registering a pipeline for ``task``; a duplicate raises."""

    def deco(cls: type[Pipeline]) -> type[Pipeline]:
        if task in _TASKS:
            raise ValueError(f"pipeline task {task!r} is already registered ({_TASKS[task].__name__})")
        _TASKS[task] = cls
        cls.task = task
        return cls

    return deco


def pipeline_tasks() -> list[str]:
    """The registered task names."""
    return sorted(_TASKS)


def pipeline(
    task: str,
    model: str | Encoder | None = None,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 32,
    runtime: str = "torch",
    **kwargs: Any,
) -> Pipeline:
    """Build a task pipeline around an encoder.

    Args:
        task: one of :func:`pipeline_tasks` (``"zero-shot-classification"``, ``"feature-extraction"``, ...).
        model: an :class:`Encoder`, or anything ``load_encoder`` accepts; default: the task's default model.
        device: where to run (``"auto"``: CUDA when available).
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        batch_size: images per forward pass.
        runtime: ``"torch"`` (default) or ``"onnx"``: run the model's ONNX export on onnxruntime (CPU).
            ``model`` is then an export directory (``visionfm export``), or a name, which is exported once into
            ``$VISIONFM_CACHE/onnx/`` first. Zero-shot classification, zero-shot-seg (the dense modes but
            ``proxy``) and mask generation (SAM, SAM 2, EdgeTAM) run on exports; see docs/foundation.md →
            "ONNX export".
        **kwargs: task options (e.g. ``templates=`` for zero-shot classification) and ``load_encoder`` options.

    Returns:
        A pipeline with one ``__call__`` over an image or a batch.
    """
    if task not in _TASKS:
        hint = difflib.get_close_matches(task, list(_TASKS), n=2)
        raise ValueError(
            f"unknown pipeline task {task!r}; known tasks: {sorted(_TASKS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    cls = _TASKS[task]
    if runtime == "onnx":
        model = _onnx_encoder(model or cls.default_model)
    elif runtime != "torch":
        raise ValueError(f"runtime={runtime!r} is not supported; choose 'torch' or 'onnx'")
    return cls.build(model or cls.default_model, device=device, dtype=dtype, batch_size=batch_size, **kwargs)


def _onnx_encoder(model: Any) -> Encoder:
    """An :class:`~visionfm.foundation.onnx_runtime.OnnxEncoder` (or ``OnnxPromptableEncoder``) for an export
    directory or a model name (exported once into the cache)."""
    import hashlib
    import os
    from pathlib import Path

    from ..foundation.onnx_export import MANIFEST, export_onnx
    from ..foundation.onnx_runtime import load_onnx_encoder

    if isinstance(model, Encoder):
        raise TypeError("runtime='onnx' needs a model name or an export directory, not a loaded Encoder")
    path = Path(os.path.expanduser(os.fspath(model)))
    if (path / MANIFEST).is_file():
        return load_onnx_encoder(path)
    name = os.fspath(model)
    key = name
    if path.is_dir():  # a retrained or replaced checkpoint gets a fresh export
        stamp = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
        key = f"{path.resolve()}|{stamp}"
    root = Path(os.environ.get("VISIONFM_CACHE", Path.home() / ".cache" / "visionfm")) / "onnx"
    out = root / f"{path.name or 'model'}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (out / MANIFEST).is_file():
        export_onnx(name, out)
    return load_onnx_encoder(out)


class Pipeline:
    """Base class: holds the encoder, normalises inputs, runs under ``torch.inference_mode``.

    Subclasses implement :meth:`_run` on a list of images and return one result per image; ``__call__``
    returns a single result for a single image and a list for a batch.
    """

    task: str = ""
    default_model: str = ""

    def __init__(self, encoder: Encoder, *, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encoder = encoder
        self.batch_size = batch_size

    @classmethod
    def build(
        cls,
        model: str | Encoder,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> Pipeline:
        """Load ``model`` (unless it is an :class:`Encoder` already) and build the pipeline; tasks whose models
        are not encoders (e.g. detectors for grounding) override this."""
        if isinstance(model, Encoder):
            encoder = model
        else:
            from ..foundation.loading import load_encoder

            load_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _LOAD_OPTIONS}
            encoder = load_encoder(model, device=device, dtype=dtype, **load_kw)
        return cls(encoder, batch_size=batch_size, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, model={self.encoder.info.name!r}, batch_size={self.batch_size})"
        )

    @staticmethod
    def _as_batch(images: Any) -> tuple[list[Any], bool]:
        """``(items, single)``: one image becomes a one-item batch; lists, generators, arrays and HF
        ``datasets`` columns become lists."""
        from ..data.images import as_image_list

        single = not isinstance(images, (list, tuple)) and not _is_batch_like(images)
        return as_image_list(images), single

    def __call__(self, images: Any, **kwargs: Any) -> Any:
        items, single = self._as_batch(images)
        if not items:
            raise ValueError(f"{self.task}: got no images")
        with torch.inference_mode():
            out = self._run(items, **kwargs)
        return out[0] if single else out

    def _run(self, images: list[Any], **kwargs: Any) -> list[Any]:
        raise NotImplementedError


def _is_batch_like(x: Any) -> bool:
    import numpy as np

    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.ndim == 4
    if isinstance(x, (str, bytes)) or hasattr(x, "read") or hasattr(x, "getpixel"):
        return False
    return isinstance(x, Iterable) and not hasattr(x, "shape")
