"""The toy model zoo's registry entries and caches.

- ``toyworld-clip``: the CLIP ``visionfm demo`` trains from scratch (recipe ``toyworld_clip``), cached under
  ``$VISIONFM_CACHE`` (default ``~/.cache/visionfm``) in a folder named by the recipe's hash. The path is computed
  when the model is loaded, never at import: ``import visionfm`` reads no recipe.
- ``toyworld-ssl`` and ``toyworld-sam``: the self-supervised encoder (recipe ``toyworld_ssl``) and the SAM (recipe
  ``toyworld_sam``) the demo trains, cached the same way.
- ``toyworld-random-dinov2``: a tiny randomly initialised DINOv2 (``visionfm.testing.tiny_checkpoint("dinov2")``),
  the untrained baseline for the proxy and the distillation teacher that ``toyworld-ssl`` replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..foundation.registry import ModelSpec, register_model

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = "toyworld_clip"
RECIPES = Path(__file__).resolve().parent / "recipes"
SUITES = Path(__file__).resolve().parent / "suites"


def cache_root() -> Path:
    """``$VISIONFM_CACHE`` or ``~/.cache/visionfm``."""
    return Path(os.environ.get("VISIONFM_CACHE", Path.home() / ".cache" / "visionfm"))


#: The toy zoo: model kind -> (built-in recipe, the weights file whose presence means "trained").
ZOO: dict[str, tuple[str, str]] = {
    "clip": ("toyworld_clip", "open_clip_model.safetensors"),
    "ssl": ("toyworld_ssl", "model.safetensors"),
    "sam": ("toyworld_sam", "model.safetensors"),
}


def _zoo_entry(kind: str) -> tuple[str, str]:
    if kind not in ZOO:
        raise ValueError(f"toy model kind must be one of {sorted(ZOO)}, got {kind!r}")
    return ZOO[kind]


def toy_model_dir(kind: str = "clip", recipe: dict[str, Any] | None = None) -> Path:
    """Where the toy model ``kind`` (``clip``, ``ssl`` or ``sam``) trained from ``recipe`` (default: its built-in
    recipe) is cached: ``$VISIONFM_CACHE/toyworld-<kind>-<recipe hash>``."""
    from ..training.recipes import load_recipe, recipe_hash

    recipe = recipe or load_recipe(RECIPES / f"{_zoo_entry(kind)[0]}.yaml")
    return cache_root() / f"toyworld-{kind}-{recipe_hash(recipe)}"


def ensure_toy_model(kind: str = "clip", *, retrain: bool = False, overrides: list[str] | None = None) -> Path:
    """Return the cached toy model ``kind``, training it first from its recipe if missing (or ``retrain``)."""
    from ..training.recipes import apply_overrides, load_recipe, run_recipe

    name, weights = _zoo_entry(kind)
    recipe = load_recipe(RECIPES / f"{name}.yaml", overrides)
    out = toy_model_dir(kind, recipe)
    if (out / weights).is_file() and not retrain:
        logger.info("using cached toyworld %s at %s", kind, out)
        return out
    if retrain and out.exists():
        shutil.rmtree(out)
    logger.warning("training the toyworld %s (one time; cached in %s)", kind, out)
    return run_recipe(apply_overrides(recipe, [f"train.output_dir={out}"]))


def toy_clip_dir(recipe: dict[str, Any] | None = None) -> Path:
    """Where the toyworld CLIP trained from ``recipe`` (default: the built-in recipe) is cached."""
    return toy_model_dir("clip", recipe)


def ensure_toy_clip(*, retrain: bool = False, overrides: list[str] | None = None) -> Path:
    """Return the cached toyworld CLIP checkpoint, training it first if missing (or ``retrain``)."""
    return ensure_toy_model("clip", retrain=retrain, overrides=overrides)


def _random_dinov2() -> str:
    from ..testing import tiny_checkpoint

    return str(tiny_checkpoint("dinov2"))


register_model(
    ModelSpec(
        name="toyworld-clip",
        family="clip",
        source="$VISIONFM_CACHE/toyworld-clip-<recipe hash>",
        locate=lambda: str(toy_clip_dir()),
        backend="open_clip",
        description="tiny CLIP trained from scratch on toyworld by `visionfm demo` (local cache)",
    )
)
register_model(
    ModelSpec(
        name="toyworld-ssl",
        family="timm",
        source="$VISIONFM_CACHE/toyworld-ssl-<recipe hash>",
        locate=lambda: str(toy_model_dir("ssl")),
        backend="timm",
        description="tiny self-supervised conv-stem ViT trained on toyworld images by `visionfm demo` (local cache)",
    )
)
register_model(
    ModelSpec(
        name="toyworld-sam",
        family="sam",
        source="$VISIONFM_CACHE/toyworld-sam-<recipe hash>",
        locate=lambda: str(toy_model_dir("sam")),
        description="tiny SAM trained on toyworld instance masks by `visionfm demo` (local cache)",
    )
)
register_model(
    ModelSpec(
        name="toyworld-random-dinov2",
        family="dinov2",
        source="visionfm.testing.tiny_checkpoint('dinov2')",
        locate=_random_dinov2,
        description="tiny randomly initialised DINOv2 (toyworld proxy / second teacher; written on first use)",
    )
)
