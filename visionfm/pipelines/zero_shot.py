"""Zero-shot image classification with any text-capable encoder (CLIP, SigLIP).

Text embeddings for a label set are computed once per (model, labels, templates) and kept in an LRU cache,
so classifying many batches against the same labels costs one text pass, not one per image (which is what
transformers' ``zero-shot-image-classification`` pipeline does). The class weights can be saved as a
classifier file and loaded again.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..foundation.encoder import Encoder
from ..foundation.zero_shot import (  # noqa: F401  (re-exported: the pipeline's public helpers)
    NEGATIVE_PROMPTS,
    SIMPLE_TEMPLATES,
    Template,
    Templates,
    check_labels,
    class_logits,
    classify,
    template_set,
    text_classifier,
)
from ..foundation.zero_shot import templates_key as _templates_key
from .base import Pipeline, register_pipeline

logger = logging.getLogger(__name__)


@register_pipeline("zero-shot-classification")
class ZeroShotClassificationPipeline(Pipeline):
    """``clf(images, labels=[...], templates="imagenet80", top_k=5)`` -> ``[{"score", "label"}]`` per image.

    Scores are the softmax over labels for CLIP and independent sigmoids for SigLIP (its training
    objective), like transformers' pipeline. ``multi_label=True`` asks for independent per-label scores (each
    image may carry several labels): SigLIP's sigmoids as they are; for softmax-trained CLIP, each label
    against a generic "something" class, ``p = softmax([s_label, s_neg])[0]`` with ``s = logit_scale * cos``,
    where the negative class embeds ``negative_prompts`` (default :data:`NEGATIVE_PROMPTS`). A label's score
    then does not depend on which other labels are asked for.

    Labels: one string is one label; labels must be unique (ignoring case and extra spaces, as CLIP's tokenizer
    reads them) and each prompt must fit the text tower's context (77 tokens for CLIP, 64 for SigLIP): a
    truncated prompt would give labels that differ only after the cut identical scores. ``top_k`` is a positive
    integer (more than the number of labels gives all of them) or ``None`` for all.
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
        """``[K, D]`` class weights for ``labels`` (one string is one label; duplicates are refused), from the LRU
        cache when already computed."""
        labels = check_labels(labels)
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

        labels = check_labels(labels)
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
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
                raise TypeError(f"top_k must be a positive integer (or None for all labels), got {top_k!r}")
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1 (or None for all labels), got {top_k}")
        negative_prompts = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
        if not negative_prompts or not all(isinstance(p, str) and p.strip() for p in negative_prompts):
            raise ValueError(
                f"negative_prompts must be a non-empty list of non-empty strings, got {negative_prompts!r}"
            )
        if classifier is not None:
            labels, weights = self.load_classifier(classifier)
            if weights.shape[1] != self.encoder.info.embed_dim:
                raise ValueError(
                    f"classifier {classifier} has width {weights.shape[1]}, model has {self.encoder.info.embed_dim}"
                )
        elif labels is None or (not isinstance(labels, str) and not labels):
            raise ValueError("zero-shot-classification needs labels=[...] (or classifier=PATH)")
        else:
            labels = check_labels(labels)
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
        k = len(labels) if top_k is None else min(int(top_k), len(labels))
        scores, idx = probs.topk(k, dim=-1)
        return [
            [{"score": float(s), "label": labels[i]} for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores.cpu(), idx.cpu())
        ]
