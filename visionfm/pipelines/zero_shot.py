"""Zero-shot image classification with any text-capable encoder (CLIP, SigLIP).

Text embeddings for a label set are computed once per (model, labels, templates) and kept in an LRU cache,
so classifying many batches against the same labels costs one text pass, not one per image (which is what
transformers' ``zero-shot-image-classification`` pipeline does). The class weights can be saved as a
classifier file and loaded again.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..foundation.encoder import Encoder
from .base import Pipeline, register_pipeline

logger = logging.getLogger(__name__)

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


def _templates_key(templates: Templates) -> Any:
    if isinstance(templates, Mapping):
        return tuple(sorted((k, tuple(v)) for k, v in templates.items()))
    if isinstance(templates, str):
        return templates
    return tuple(t if isinstance(t, str) else t(" ") for t in templates)  # callables keyed by their output shape


@register_pipeline("zero-shot-classification")
class ZeroShotClassificationPipeline(Pipeline):
    """``clf(images, labels=[...], templates="imagenet80", top_k=5)`` -> ``[{"score", "label"}]`` per image.

    Scores are the softmax over labels for CLIP and independent sigmoids for SigLIP (its training
    objective), like transformers' pipeline. ``multi_label=True`` asks for independent per-label scores (each
    image may carry several labels): SigLIP's sigmoids as they are; for softmax-trained CLIP, each label
    against a generic "something" class, ``p = softmax([s_label, s_neg])[0]`` with ``s = logit_scale * cos``,
    where the negative class embeds ``negative_prompts`` (default :data:`NEGATIVE_PROMPTS`). A label's score
    then does not depend on which other labels are asked for.
    """

    default_model = "clip-vit-b-16"

    def __init__(
        self, encoder: Encoder, *, batch_size: int = 32, templates: Templates = "single", cache_size: int = 16
    ) -> None:
        super().__init__(encoder, batch_size=batch_size)
        if not encoder.info.has_text:
            raise TypeError(f"zero-shot-classification needs a text-capable encoder; {encoder.info.name!r} has none")
        self.templates = templates
        self.cache_size = cache_size
        self._cache: OrderedDict[Any, torch.Tensor] = OrderedDict()

    @property
    def sigmoid(self) -> bool:
        """Whether the model was trained with a sigmoid loss (SigLIP: it has a ``logit_bias``)."""
        return getattr(self.encoder, "logit_bias", None) is not None

    def class_weights(self, labels: Sequence[str], templates: Templates | None = None) -> torch.Tensor:
        """``[K, D]`` class weights for ``labels``, from the LRU cache when already computed."""
        templates = self.templates if templates is None else templates
        key = (tuple(labels), _templates_key(templates))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.inference_mode():
            w = text_classifier(self.encoder, labels, templates)
        self._cache[key] = w
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return w

    def save_classifier(self, path: str | Path, labels: Sequence[str], templates: Templates | None = None) -> Path:
        """Write the class weights for ``labels`` to a safetensors file (labels and model in its metadata)."""
        from safetensors.torch import save_file

        w = self.class_weights(labels, templates).detach().cpu().contiguous()
        meta = {"labels": json.dumps(list(labels)), "model": self.encoder.info.name, "embed_dim": str(w.shape[1])}
        save_file({"weights": w}, str(path), metadata=meta)
        return Path(path)

    @staticmethod
    def load_classifier(path: str | Path) -> tuple[list[str], torch.Tensor]:
        """Read a classifier file written by :meth:`save_classifier`: ``(labels, [K, D] weights)``."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "labels" not in meta:
                raise ValueError(f"{path} is not a visionfm classifier file (no 'labels' metadata)")
            return json.loads(meta["labels"]), f.get_tensor("weights")

    def _run(
        self,
        images: list[Any],
        labels: Sequence[str] | None = None,
        *,
        templates: Templates | None = None,
        classifier: str | Path | None = None,
        top_k: int | None = None,
        multi_label: bool = False,
        negative_prompts: Sequence[str] = NEGATIVE_PROMPTS,
    ) -> list[list[dict[str, Any]]]:
        if classifier is not None:
            labels, weights = self.load_classifier(classifier)
            if weights.shape[1] != self.encoder.info.embed_dim:
                raise ValueError(
                    f"classifier {classifier} has width {weights.shape[1]}, model has {self.encoder.info.embed_dim}"
                )
        elif not labels:
            raise ValueError("zero-shot-classification needs labels=[...] (or classifier=PATH)")
        else:
            labels = list(labels)
            weights = self.class_weights(labels, templates)
        pooled = self.encoder.encode(images, batch_size=self.batch_size).pooled
        logits = class_logits(self.encoder, pooled, weights)
        if self.sigmoid:
            probs = logits.sigmoid()
        elif multi_label:
            negative = self.class_weights(["negative"], {"negative": list(negative_prompts)})
            probs = (logits - class_logits(self.encoder, pooled, negative)).sigmoid()  # softmax([s, s_neg])[0]
        else:
            probs = logits.softmax(-1)
        k = len(labels) if top_k is None else max(1, min(int(top_k), len(labels)))
        scores, idx = probs.topk(k, dim=-1)
        return [
            [{"score": float(s), "label": labels[i]} for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores.cpu(), idx.cpu())
        ]
