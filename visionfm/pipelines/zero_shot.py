"""Zero-shot classification with any text-capable encoder (CLIP, SigLIP): prompt ensembles -> class weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..foundation.encoder import Encoder

SIMPLE_TEMPLATES = ("a {}.", "a photo of a {}.")


def text_classifier(
    encoder: Encoder, labels: Sequence[str], templates: Sequence[str] = SIMPLE_TEMPLATES
) -> torch.Tensor:
    """Class weights from a prompt ensemble.

    Each label is written into every template (``"a photo of a {}."``), embedded, L2-normalised, averaged
    over templates and normalised again (the CLIP paper's ensembling).

    Args:
        encoder: an encoder with ``info.has_text``.
        labels: class names.
        templates: format strings with one ``{}``.

    Returns:
        ``[K, D]`` unit-norm class weights, ``K = len(labels)``.
    """
    if not encoder.info.has_text:
        raise TypeError(f"{encoder.info.name!r} has no text tower; zero-shot classification needs CLIP or SigLIP")
    if not labels:
        raise ValueError("labels must be a non-empty list of class names")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates must contain '{{}}': {bad}")
    prompts = [t.format(label) for label in labels for t in templates]
    emb = F.normalize(encoder.encode_text(prompts).float(), dim=-1).view(len(labels), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


def classify(encoder: Encoder, images: Any, weights: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Cosine-similarity logits of images against class weights.

    Returns:
        ``[B, K]`` similarities scaled by the model's ``logit_scale`` (softmax-ready for CLIP).
    """
    feats = encoder.encode(images, batch_size=batch_size).pooled.float()
    scale = float(getattr(encoder, "logit_scale", 100.0))
    return scale * F.normalize(feats, dim=-1) @ weights.to(feats.device).t()
