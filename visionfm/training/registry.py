"""The recipe task registry (a leaf): ``task:`` name -> ``fn(recipe: dict) -> Path`` (the output directory).

Built-in tasks register in :mod:`visionfm.training.finetune` and :mod:`visionfm.training.dit_train`; other packages
register theirs on import (``distill`` in :mod:`visionfm.distill`, ``clip_pretrain`` in :mod:`visionfm.toyworld`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TASKS: dict[str, Callable[[dict[str, Any]], Path]] = {}


def register_task(name: str) -> Callable[[Callable[[dict[str, Any]], Path]], Callable[[dict[str, Any]], Path]]:
    """Decorator registering a recipe task; a duplicate name raises ``ValueError``."""

    def deco(fn: Callable[[dict[str, Any]], Path]) -> Callable[[dict[str, Any]], Path]:
        if name in _TASKS:
            raise ValueError(f"recipe task {name!r} is already registered")
        _TASKS[name] = fn
        return fn

    return deco


_EVALUATORS: dict[str, Callable[[Any, Any, Path], Any]] = {}


def register_evaluator(key: str, fn: Callable[[Any, Any, Path], Any]) -> None:
    """Register what a fine-tuning recipe's top-level ``key`` runs on the trained encoder after training.

    ``fn(value, encoder, out_dir) -> JSON-able result`` is called with the recipe's ``key`` value; the result is
    stored under ``key`` in the run's ``eval.json``. :mod:`visionfm.eval` registers ``eval_suite`` (a suite run
    on the adapted encoder), so training never imports the eval package.
    """
    if key in _EVALUATORS:
        raise ValueError(f"recipe evaluator {key!r} is already registered")
    _EVALUATORS[key] = fn


def evaluators() -> dict[str, Callable[[Any, Any, Path], Any]]:
    """The registered recipe evaluators by key."""
    return dict(_EVALUATORS)


#: the package's own recipes; other packages add folders with :func:`register_recipe_dir`
RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
_RECIPE_DIRS: list[Path] = [RECIPE_DIR]


def register_recipe_dir(path: str | os.PathLike) -> None:
    """Make the ``*.yaml`` recipes in ``path`` loadable by name (``load_recipe("toyworld_clip")``)."""
    p = Path(path).resolve()
    if p not in _RECIPE_DIRS:
        _RECIPE_DIRS.append(p)
