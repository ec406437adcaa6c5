"""The zero-shot text classifier: class weights from prompt ensembles, and logits of image embeddings against them.

Used by the zero-shot pipelines, the eval suites, prompt learning and the toyworld demo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .encoder import Encoder

__all__ = [
    "NEGATIVE_PROMPTS",
    "SIMPLE_TEMPLATES",
    "Template",
    "Templates",
    "check_labels",
    "class_logits",
    "classify",
    "duplicate_groups",
    "template_set",
    "templates_key",
    "text_classifier",
]

SIMPLE_TEMPLATES = ("a {}.", "a photo of a {}.")
NEGATIVE_PROMPTS = ("a photo.", "a photo of something.", "a photo of an object.", "an image.")
Template = str | Callable[[str], str]
Templates = str | Sequence[Template] | Mapping[str, Sequence[str]]


def _text_key(text: str) -> str:
    """A text as the text towers' tokenizers see it: case and runs of whitespace do not matter."""
    return " ".join(text.lower().split())


def duplicate_groups(texts: Sequence[str]) -> list[list[str]]:
    """Groups of texts that are the same text to a CLIP tokenizer (equal ignoring case and runs of whitespace),
    in order of first appearance; empty when all texts differ."""
    groups: dict[str, list[str]] = {}
    for t in texts:
        groups.setdefault(_text_key(t), []).append(t)
    return [g for g in groups.values() if len(g) > 1]


def check_labels(labels: str | Sequence[str] | None, name: str = "labels") -> list[str]:
    """``labels`` as a list of class names, or a clear error.

    One string is one label (never its characters). Every label must be a non-empty string, and no two labels may
    be the same text to the text tower (compared ignoring case and runs of whitespace, as CLIP's tokenizers do):
    two copies of a label would split its probability between them.
    """
    if isinstance(labels, str):
        labels = [labels]
    if labels is None or not isinstance(labels, Iterable):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(labels).__name__}")
    labels = list(labels)
    if not labels:
        raise ValueError(f"{name} must be a non-empty list of strings, got an empty list")
    for i, x in enumerate(labels):
        if not isinstance(x, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(x).__name__} {x!r}")
        if not x.strip():
            raise ValueError(f"{name}[{i}] is empty ({x!r}); every entry of {name} must be a non-empty string")
    dups = duplicate_groups(labels)
    if dups:
        raise ValueError(
            f"{name} must be unique (compared ignoring case and extra spaces, as the text tower's tokenizer reads "
            f"them); duplicates: {', '.join(' = '.join(map(repr, g)) for g in dups)}"
        )
    return labels


def _short(text: str, width: int = 80) -> str:
    """``repr`` of a text, its middle elided when long (long labels often differ only at the end)."""
    half = (width - 5) // 2
    return repr(text if len(text) <= width else f"{text[:half]} ... {text[-half:]}")


def _refuse_truncated(encoder: Encoder, labels: Sequence[str], per_label: Sequence[Sequence[str]]) -> None:
    """Raise when any label's prompt does not fit the text tower's context (it would be cut, and labels that
    differ only after the cut would get identical scores)."""
    text_enc = encoder.text_teacher() if callable(getattr(encoder, "text_teacher", None)) else encoder
    overlong = getattr(text_enc, "overlong_texts", None)
    if overlong is None:
        return
    cut = set(overlong([p for ps in per_label for p in ps]))
    if not cut:
        return
    bad = [(label, next(p for p in ps if p in cut)) for label, ps in zip(labels, per_label) if cut.intersection(ps)]
    shown = "; ".join(f"label {_short(label)} (prompt {_short(prompt)})" for label, prompt in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ValueError(
        f"{len(bad)} label(s) have prompts longer than the {text_enc.context_length}-token text context of "
        f"{text_enc.info.name!r}: they would be truncated, and labels that differ only after the cut would get "
        f"identical scores. Shorten them (or their templates): {shown}{more}"
    )


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
        per = [[templates[label]] if isinstance(templates[label], str) else list(templates[label]) for label in labels]
        empty = [label for label, ps in zip(labels, per) if not ps]
        if empty:
            raise ValueError(f"templates dict has an empty list of prompts for labels {empty}")
        return per
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
        labels: class names; one string is one class. (Duplicates are allowed here, as datasets may name two
            classes alike; the pipelines refuse them with :func:`check_labels`.)
        templates: a template-set name, one template, a list of templates (strings with ``{}`` or
            callables), or a ``{label: [prompts]}`` dict (a plain string value is one prompt).

    Returns:
        ``[K, D]`` unit-norm class weights, ``K = len(labels)``.

    Raises:
        ValueError: a prompt is longer than the text tower's context (``context_length`` tokens) and would be
            truncated.
    """
    if not encoder.info.has_text:
        raise TypeError(f"{encoder.info.name!r} has no text tower; zero-shot classification needs CLIP or SigLIP")
    labels = [labels] if isinstance(labels, str) else list(labels)
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("labels must be a non-empty list of class names (strings)")
    per_label = _prompts(labels, templates)
    _refuse_truncated(encoder, labels, per_label)
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
        return tuple(sorted((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in templates.items()))
    if isinstance(templates, str):
        return templates
    return tuple(t if isinstance(t, str) else t(" ") for t in templates)  # callables keyed by their output shape
