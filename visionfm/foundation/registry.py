"""Model specs, aliases and family registration.

A *family* knows how to recognise and build one kind of checkpoint (``clip``, ``dinov2``, ...). A
*spec* is a named, documented pointer to a checkpoint (an alias such as ``"dinov2-small"``). Both
registrations fail loudly on duplicates: a second package silently replacing a model is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .encoder import Encoder


@dataclass(frozen=True)
class LoadRequest:
    """Everything a family needs to build an encoder from files on disk.

    Attributes:
        path: local directory holding the checkpoint files.
        name: what the user asked for (alias, hub id, tag or path), recorded in ``info.name``.
        backend: which backend to build, as detected or requested.
        options: family options after validation (defaults filled in).
        allow_pickle: whether a pickle checkpoint may be loaded (always with ``weights_only=True``).
        extra: source-specific hints, e.g. ``{"open_clip_arch": "ViT-B-16"}`` for an open_clip tag.
    """

    path: Path
    name: str
    backend: str
    options: Mapping[str, Any]
    allow_pickle: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetLayout:
    """Where an encoder keeps its weights and which of its modules the PEFT target groups name.

    A family declares it (``Family.peft_layout``); :mod:`visionfm.adapters` reads it.

    Attributes:
        description: family and backend in words, for error messages (``"dinov2 (transformers)"``).
        base_attr: attribute of the encoder holding the ``nn.Module`` with the weights.
        image_roots: module names (relative to the base module) of the image tower; ``("",)`` is the
            whole module. Suffix targets only match inside these.
        attention: regexes (full match on module names) of the attention projections.
        mlp: regexes of the MLP linears.
        prepare: called on the base module before adapters are injected or loaded (makes modules whose
            weights the forward reads directly go through their ``forward``); ``None`` for most.
    """

    description: str
    base_attr: str = "model"
    image_roots: tuple[str, ...] = ("",)
    attention: tuple[str, ...] = ()
    mlp: tuple[str, ...] = ()
    prepare: Callable[[nn.Module], None] | None = None


@dataclass(frozen=True)
class Family:
    """A model family: how to detect its on-disk formats and build an :class:`Encoder`.

    Attributes:
        name: family name (``"clip"``, ``"dinov2"``, ...).
        backends: the backends it supports; the first is the default.
        detect: ``detect(dir) -> backend | None``: the backend whose on-disk format ``dir`` holds.
        build: ``build(LoadRequest) -> Encoder``.
        options: the family-specific overrides ``load_encoder`` accepts, with their defaults.
        description: one line for ``visionfm models``.
        formats: the on-disk formats it recognises, in words (for the "not a format visionfm recognises" error).
        kind: ``"encoder"`` (``build`` returns an :class:`Encoder`; ``load_encoder`` loads it) or ``"detector"``
            (an open-vocabulary detector; ``load_detector`` loads it).
        peft_layout: ``encoder -> TargetLayout``: where PEFT adapters go (``None``: only explicit targets).
        dense_tower: ``(encoder, pixel_values, *, pos_interp) -> visionfm.foundation.dense.DenseTower``: the last-block parts training-free dense
            features need (``None``: the family has no dense CLIP modes).
    """

    name: str
    backends: tuple[str, ...]
    detect: Callable[[Path], str | None]
    build: Callable[[LoadRequest], Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    formats: str = ""
    kind: str = "encoder"
    peft_layout: Callable[[Encoder], TargetLayout] | None = None
    dense_tower: Callable[..., Any] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A named checkpoint.

    Attributes:
        name: the alias users type (``"clip-vit-b-16"``).
        family: registered family name.
        source: where the weights live: a Hugging Face hub id (``"facebook/dinov2-small"``) or an
            open_clip tag (``"ViT-B-16/openai"``).
        backend: backend to build with; ``None`` picks the family default for the source.
        options: default family options for this checkpoint (overridable in ``load_encoder``).
        description: one line for ``visionfm models``.
        locate: optional ``() -> str`` that computes the source when the model is loaded, for sources that
            depend on the environment (a local cache under ``$VISIONFM_CACHE``); ``source`` is then what
            it gave at registration, for display.
    """

    name: str
    family: str
    source: str
    backend: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    locate: Callable[[], str] | None = None


_FAMILIES: dict[str, Family] = {}
_SPECS: dict[str, ModelSpec] = {}


def register_family(family: Family) -> Family:
    """Register a family. Raises ``ValueError`` if the name is taken."""
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered; refusing to replace it")
    _FAMILIES[family.name] = family
    return family


def register_model(spec: ModelSpec) -> ModelSpec:
    """Register a named checkpoint. Raises ``ValueError`` on a duplicate name or an unknown family."""
    key = spec.name.lower()
    if key in _SPECS:
        raise ValueError(f"model {spec.name!r} is already registered (as {_SPECS[key]}); refusing to replace it")
    if spec.family not in _FAMILIES:
        raise ValueError(f"model {spec.name!r} names unknown family {spec.family!r}; known: {sorted(_FAMILIES)}")
    fam = _FAMILIES[spec.family]
    if spec.backend is not None and spec.backend not in fam.backends:
        raise ValueError(f"model {spec.name!r}: backend {spec.backend!r} not in {fam.backends}")
    unknown = set(spec.options) - set(fam.options)
    if unknown:
        raise ValueError(f"model {spec.name!r}: unknown options {sorted(unknown)}; valid: {sorted(fam.options)}")
    _SPECS[key] = spec
    return spec


def get_family(name: str) -> Family:
    """Return a registered family, or raise ``KeyError`` listing the known ones."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known families: {sorted(_FAMILIES)}") from None


def families() -> dict[str, Family]:
    """All registered families by name (read-only view)."""
    return MappingProxyType(_FAMILIES)  # type: ignore[return-value]


def get_spec(name: str) -> ModelSpec | None:
    """The spec registered under ``name`` (case-insensitive), or ``None``."""
    return _SPECS.get(name.lower())


def list_models(family: str | None = None) -> list[ModelSpec]:
    """Registered checkpoints, sorted by family then name.

    Args:
        family: only this family's models.
    """
    specs = [s for s in _SPECS.values() if family is None or s.family == family]
    return sorted(specs, key=lambda s: (s.family, s.name))


def close_matches(name: str, n: int = 3) -> list[str]:
    """Registered names and sources closest to ``name`` (for 'did you mean' errors)."""
    pool = {s.name: s.name for s in _SPECS.values()}
    pool.update({s.source.lower(): s.source for s in _SPECS.values()})
    hits = difflib.get_close_matches(name.lower(), list(pool), n=n, cutoff=0.5)
    return [pool[h] for h in hits]
