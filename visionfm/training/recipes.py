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
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_TASKS: dict[str, Callable[[dict[str, Any]], Path]] = {}
RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


def register_task(name: str) -> Callable[[Callable[[dict[str, Any]], Path]], Callable[[dict[str, Any]], Path]]:
    """Decorator registering a recipe task; a duplicate name raises."""

    def deco(fn: Callable[[dict[str, Any]], Path]) -> Callable[[dict[str, Any]], Path]:
        if name in _TASKS:
            raise ValueError(f"recipe task {name!r} is already registered")
        _TASKS[name] = fn
        return fn

    return deco


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
    if not p.is_file() and (RECIPE_DIR / f"{path}.yaml").is_file():
        p = RECIPE_DIR / f"{path}.yaml"
    if not p.is_file():
        builtin = sorted(x.stem for x in RECIPE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"recipe {str(path)!r} not found; built-in recipes: {builtin}")
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
    """Run a recipe (dict or YAML path) and return its output checkpoint directory."""
    from ..distill import train as _distill  # noqa: F401  (registers the distill task)
    from . import clip_pretrain, dit_train, finetune  # noqa: F401  (register their tasks)

    if not isinstance(recipe, dict):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        recipe = apply_overrides(recipe, overrides)
    task = recipe["task"]
    if task not in _TASKS:
        raise ValueError(f"unknown recipe task {task!r}; known tasks: {sorted(_TASKS)}")
    return _TASKS[task](recipe)
