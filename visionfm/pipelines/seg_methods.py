"""Registry of zero-shot-seg methods that replace the per-window dense-mode scoring with their own (Trident, CorrCLIP).

A dense mode (:data:`visionfm.foundation.dense.DENSE_MODES`) changes only CLIP's last attention block, and the pipeline
slides windows over the rescaled image. Some methods need more: several encoders at once, region masks, or a step after
classification. Such a method registers a :class:`SegMethod`; ``pipeline("zero-shot-seg", mode=<its name>,
method_options={...})`` then calls its ``scores`` in place of the sliding-window dense scores, and its ``refine`` after
the shared softmax / threshold step. Everything else (rescale, text embeddings, resize to the original size, softmax
over all texts, best synonym per class, thresholds) stays the pipeline's. A leaf module: it imports nothing from
visionfm, and method modules register themselves when :mod:`visionfm.pipelines` is imported.

A model that is not a CLIP at all (SAM 3's concept prompts) registers a *backend* for its encoder family instead
(:func:`register_seg_backend`): ``pipeline("zero-shot-seg", model=<such a model>)`` then returns the backend's pipeline,
which takes the same ``labels`` / ``synonyms`` / ``background`` / ``preset`` and returns the same ``SegResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegMethod:
    """One zero-shot-seg method.

    Attributes:
        name: the ``mode`` value that selects it.
        scores: ``scores(pipeline, pixels, x, weights, options) -> [S, H, W]``: cosine maps of every text at the
            original size of ``pixels`` (uint8 ``[3, H, W]``); ``x`` is :meth:`ZeroShotSegPipeline.prepare`'s rescaled,
            normalised input ``[3, h, w]``; ``weights`` the unit-norm text embeddings ``[S, D]``; ``options`` the
            pipeline's ``method_options``.
        refine: ``refine(pipeline, pixels, label_map, probs, options) -> (label_map, probs)`` after classification
            (e.g. CorrCLIP's map correction, Trident's SAM refinement), or ``None``.
        option_keys: the ``method_options`` keys the method reads (others are refused).
        reference: ``"repository@commit"`` of the implementation it reproduces.
        description: one line for docs and errors.
    """

    name: str
    scores: Callable[..., Any]
    refine: Callable[..., Any] | None = None
    option_keys: tuple[str, ...] = ()
    reference: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


_METHODS: dict[str, SegMethod] = {}


def register_seg_method(method: SegMethod) -> SegMethod:
    """Register ``method`` under ``method.name``; a name taken by another method or a dense mode raises."""
    from ..foundation.dense import DENSE_MODES

    if method.name in _METHODS or method.name in DENSE_MODES:
        raise ValueError(f"zero-shot-seg method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def seg_methods() -> dict[str, SegMethod]:
    """The registered methods by name."""
    return dict(_METHODS)


_BACKENDS: dict[str, Callable[..., Any]] = {}


def register_seg_backend(family: str, factory: Callable[..., Any]) -> None:
    """Make ``pipeline("zero-shot-seg", model=m)`` return ``factory(encoder, batch_size=..., **options)`` when ``m``
    loads as an encoder of ``family``; a family registered twice raises."""
    if family in _BACKENDS:
        raise ValueError(f"a zero-shot-seg backend for family {family!r} is already registered")
    _BACKENDS[family] = factory


def seg_backends() -> dict[str, Callable[..., Any]]:
    """The registered zero-shot-seg backends by encoder family."""
    return dict(_BACKENDS)
