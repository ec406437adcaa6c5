"""The toy model zoo's registry entries and caches.

- ``toyworld-clip``: the CLIP ``visionfm demo`` trains from scratch (recipe ``toyworld_clip``), cached under
  ``$VISIONFM_CACHE`` (default ``~/.cache/visionfm``) in a folder named by the recipe's hash. The path is computed
  when the model is loaded, never at import: ``import visionfm`` reads no recipe.
- ``toyworld-random-dinov2``: a tiny randomly initialised DINOv2 (``visionfm.testing.tiny_checkpoint("dinov2")``),
  the default proxy of toyworld zero-shot-seg and the second teacher of the toy distillation recipe.
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


def toy_clip_dir(recipe: dict[str, Any] | None = None) -> Path:
    """Where the toyworld CLIP trained from ``recipe`` (default: the built-in recipe) is cached."""
    from ..training.recipes import load_recipe, recipe_hash

    recipe = recipe or load_recipe(RECIPES / f"{DEFAULT_RECIPE}.yaml")
    return cache_root() / f"toyworld-clip-{recipe_hash(recipe)}"


def ensure_toy_clip(*, retrain: bool = False, overrides: list[str] | None = None) -> Path:
    """Return the cached toyworld CLIP checkpoint, training it first if missing (or ``retrain``)."""
    from ..training.recipes import apply_overrides, load_recipe, run_recipe

    recipe = load_recipe(RECIPES / f"{DEFAULT_RECIPE}.yaml", overrides)
    out = toy_clip_dir(recipe)
    if (out / "open_clip_model.safetensors").is_file() and not retrain:
        logger.info("using cached toyworld CLIP at %s", out)
        return out
    if retrain and out.exists():
        shutil.rmtree(out)
    logger.warning("training the toyworld CLIP (one time; cached in %s)", out)
    return run_recipe(apply_overrides(recipe, [f"train.output_dir={out}"]))


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
        name="toyworld-random-dinov2",
        family="dinov2",
        source="visionfm.testing.tiny_checkpoint('dinov2')",
        locate=_random_dinov2,
        description="tiny randomly initialised DINOv2 (toyworld proxy / second teacher; written on first use)",
    )
)
