"""The zero-shot text classifier: class weights from prompt ensembles, and logits of image embeddings against them.

Used by the zero-shot pipelines, the eval suites, prompt learning and the toyworld demo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .encoder import Encoder

__all__ = [
    "NEGATIVE_PROMPTS",
    "SIMPLE_TEMPLATES",
    "Template",
    "Templates",
    "class_logits",
    "classify",
    "template_set",
    "templates_key",
    "text_classifier",
]

SIMPLE_TEMPLATES = ("a {}.", "a photo of a {}.")
NEGATIVE_PROMPTS = ("a photo.", "a photo of something.", "a photo of an object.", "an image.")
Template = str | Callable[[str], str]
Templates = str | Sequence[Template] | Mapping[str, Sequence[str]]


def template_set(name: str) -> tuple[Template, ...]:
    """Named prompt sets: ``"imagenet80"`` (the 80 OpenAI ImageNet prompts), ``"simple"`` (OpenAI's 7),
    ``"single"`` (``"a photo of a {}."``); all but the last come from open_clip's metadata."""
    if name == "single":
        return ("a photo of a {}.",)
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    sets = {"imagenet80": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if name not in sets:
        raise ValueError(
            f"unknown template set {name!r}; use one of ['imagenet80', 'simple', 'single'], a list of "
            "strings with '{}', or a {label: [prompts]} dict"
        )
    return tuple(sets[name])


def _prompts(labels: Sequence[str], templates: Templates) -> list[list[str]]:
    """Per label, the list of prompts to embed."""
    if isinstance(templates, Mapping):
        missing = [label for label in labels if label not in templates]
        if missing:
            raise ValueError(f"templates dict has no prompts for labels {missing}")
        return [list(templates[label]) for label in labels]
    if isinstance(templates, str):
        templates = (templates,) if "{}" in templates else template_set(templates)
    bad = [t for t in templates if isinstance(t, str) and "{}" not in t]
    if bad or not templates:
        raise ValueError(f"templates must contain '{{}}' (or be callables): {bad or 'empty list'}")
    return [[t(label) if callable(t) else t.format(label) for t in templates] for label in labels]


def text_classifier(encoder: Encoder, labels: Sequence[str], templates: Templates = SIMPLE_TEMPLATES) -> torch.Tensor:
    """Class weights from a prompt ensemble.

    Each label's prompts are embedded, L2-normalised, averaged and normalised again (the CLIP paper's
    ensembling).

    Args:
        encoder: an encoder with ``info.has_text``.
        labels: class names.
        templates: a template-set name, one template, a list of templates (strings with ``{}`` or
            callables), or a ``{label: [prompts]}`` dict.

    Returns:
        ``[K, D]`` unit-norm class weights, ``K = len(labels)``.
    """
    if not encoder.info.has_text:
        raise TypeError(f"{encoder.info.name!r} has no text tower; zero-shot classification needs CLIP or SigLIP")
    labels = list(labels)
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("labels must be a non-empty list of class names (strings)")
    per_label = _prompts(labels, templates)
    flat = [p for ps in per_label for p in ps]
    emb = F.normalize(encoder.encode_text(flat).float(), dim=-1)
    out, start = [], 0
    for ps in per_label:
        out.append(F.normalize(emb[start : start + len(ps)].mean(0), dim=-1))
        start += len(ps)
    return torch.stack(out)


def class_logits(encoder: Encoder, pooled: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Logits of image embeddings ``[B, D]`` against class weights ``[K, D]``:
    ``logit_scale * cos (+ logit_bias for SigLIP)``, ``[B, K]``."""
    feats = pooled.float()
    logits = float(getattr(encoder, "logit_scale", 100.0)) * F.normalize(feats, dim=-1) @ weights.to(feats.device).t()
    bias = getattr(encoder, "logit_bias", None)
    return logits + bias if bias is not None else logits


def classify(encoder: Encoder, images: Any, weights: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Encode images and return their :func:`class_logits` against ``weights``, ``[B, K]``."""
    return class_logits(encoder, encoder.encode(images, batch_size=batch_size).pooled, weights)


def templates_key(templates: Templates) -> Any:
    """A hashable key of a templates argument (for caches of text embeddings)."""
    if isinstance(templates, Mapping):
        return tuple(sorted((k, tuple(v)) for k, v in templates.items()))
    if isinstance(templates, str):
        return templates
    return tuple(t if isinstance(t, str) else t(" ") for t in templates)  # callables keyed by their output shape
