"""Recipes: YAML files that name a task and its ``model``/``data``/``train`` sections.

``visionfm train recipes/toyworld_clip.yaml`` (or :func:`run_recipe`) reads the file, applies
``key.sub=value`` overrides, and runs the registered task. A task is
``fn(recipe: dict) -> Path`` returning the output checkpoint directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from . import dit_train as _dit_train  # noqa: F401  (registers the dit task)
from . import finetune as _finetune  # noqa: F401  (registers the classification and segmentation tasks)
from .registry import _TASKS, register_task

__all__ = ["apply_overrides", "builtin_recipes", "load_recipe", "recipe_hash", "register_recipe_dir", "register_task",
           "run_recipe"]  # fmt: skip

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
_RECIPE_DIRS: list[Path] = [RECIPE_DIR]


def register_recipe_dir(path: str | os.PathLike) -> None:
    """Make the ``*.yaml`` recipes in ``path`` loadable by name (``load_recipe("toyworld_clip")``)."""
    p = Path(path).resolve()
    if p not in _RECIPE_DIRS:
        _RECIPE_DIRS.append(p)


def builtin_recipes() -> dict[str, Path]:
    """Recipe name -> file, over the package's recipes and every registered recipe folder."""
    return {f.stem: f for d in _RECIPE_DIRS for f in sorted(d.glob("*.yaml"))}


def recipe_tasks() -> list[str]:
    """Names of the registered recipe tasks."""
    return sorted(_TASKS)


def _parse_value(text: str) -> Any:
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(recipe: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``recipe`` with ``section.key=value`` overrides applied (values parsed as YAML).

    Raises:
        ValueError: an override without ``=`` or naming a section that is not a mapping.
    """
    out = copy.deepcopy(recipe)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe YAML (a path, or the name of a built-in recipe such as ``toyworld_clip``)."""
    import yaml

    p = Path(path)
    builtin = builtin_recipes()
    if not p.is_file() and str(path) in builtin:
        p = builtin[str(path)]
    if not p.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} not found; built-in recipes: {sorted(builtin)}")
    recipe = yaml.safe_load(p.read_text())
    if not isinstance(recipe, dict) or "task" not in recipe:
        raise ValueError(f"{p} is not a recipe: expected a mapping with a 'task' key")
    return apply_overrides(recipe, overrides)


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short stable hash of a recipe's content, ignoring where its output goes."""
    r = copy.deepcopy(recipe)
    r.get("train", {}).pop("output_dir", None)
    r.get("train", {}).pop("progress", None)
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]


def run_recipe(recipe: dict[str, Any] | str | os.PathLike, overrides: list[str] | None = None) -> Path:
    """Run a recipe (dict or YAML path) and return its output checkpoint directory.

    Tasks are registered with :func:`register_task`: ``classification``, ``segmentation`` and ``dit`` here,
    ``distill`` by :mod:`visionfm.distill`, ``clip_pretrain`` by :mod:`visionfm.toyworld` (``import visionfm``
    imports both).
    """
    if not isinstance(recipe, dict):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = apply_overrides(recipe, overrides)
    task = recipe["task"]
    if task not in _TASKS:
        raise ValueError(f"unknown recipe task {task!r}; known tasks: {sorted(_TASKS)}")
    return _TASKS[task](recipe)
