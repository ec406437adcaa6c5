"""Recipes: YAML files that name a task and its ``model``/``data``/``train`` sections.

``visionfm train recipes/toyworld_clip.yaml`` (or :func:`run_recipe`) reads the file, applies
``key.sub=value`` overrides, and runs the registered task. A task is
``fn(recipe: dict) -> Path`` returning the output checkpoint directory.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from . import dit_train as _dit_train  # noqa: F401  (registers the dit task)
from . import finetune as _finetune  # noqa: F401  (registers the classification and segmentation tasks)
from .loop import RUN_DIR_CHECK, TrainConfig
from .registry import _RECIPE_DIRS, _TASKS, evaluators, register_recipe_dir, register_task
from .schema import COMMON_RECIPE_KEYS, RECIPE_DATA_KIND, RECIPE_TASK_KEYS, _warn_once, check_dataset, check_keys

__all__ = ["apply_overrides", "builtin_recipes", "load_recipe", "recipe_hash", "register_recipe_dir", "register_task",
           "run_recipe", "validate_recipe"]  # fmt: skip

logger = logging.getLogger(__name__)


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
    try:
        recipe = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        what = getattr(e, "problem", None) or str(e)
        raise ValueError(f"{where}: recipe is not valid YAML: {what}") from e
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
    if not isinstance(recipe, dict) or "task" not in recipe:
        raise ValueError("a recipe is a mapping with a 'task' key")
    if recipe["task"] not in _TASKS:
        raise ValueError(f"unknown recipe task {recipe['task']!r}; known tasks: {sorted(_TASKS)}")
    validate_recipe(recipe)  # unknown keys (with the closest valid ones), wrong types, a missing train section
    token = RUN_DIR_CHECK.set(lambda out, resuming: _claim_run_dir(recipe, out, resuming))
    try:  # the Trainer calls the check when it starts, after the task's own checks
        return _TASKS[recipe["task"]](recipe)
    finally:
        RUN_DIR_CHECK.reset(token)


RUN_RECIPE_FILE = "recipe.json"


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


#: recipe keys that may change when a run is resumed: where it lives, the bar, the resume switch, and ``max_steps`` (a
#: finished run may be extended; the cosine schedule then follows the new length from the resumed step on)
RESUME_EXEMPT_KEYS = frozenset({"train.output_dir", "train.progress", "train.resume", "train.max_steps"})


def _resume_view(recipe: dict[str, Any]) -> dict[str, Any]:
    flat = _flat(json.loads(json.dumps(recipe, default=str)))
    return {k: v for k, v in flat.items() if k not in RESUME_EXEMPT_KEYS}


def _claim_run_dir(recipe: dict[str, Any], trainer_dir: Path, resuming: bool) -> None:
    """Record the recipe in its run directory (``recipe.json``); refuse to resume a run directory made by a different
    recipe. Only :data:`RESUME_EXEMPT_KEYS` may differ. Called by the :class:`Trainer` (``trainer_dir``: its
    ``output_dir``; ``resuming``: it found a checkpoint to resume) through :data:`loop.RUN_DIR_CHECK`."""
    out = Path(str(recipe["train"]["output_dir"]))
    if out.resolve() != Path(trainer_dir).resolve():
        return  # a Trainer of some other output directory inside the task
    record = out / RUN_RECIPE_FILE
    if resuming and record.is_file():
        try:
            old = json.loads(record.read_text())
        except ValueError:
            old = {}
        a, b = _resume_view(old.get("recipe", {})), _resume_view(recipe)
        diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            raise ValueError(
                f"{out} holds a run made with a different recipe ({'; '.join(diff)}); resuming would mix two runs. "
                f"Start fresh with a new train.output_dir, delete {out}, or set train.resume=false to overwrite it"
            )
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{RUN_RECIPE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"hash": recipe_hash(recipe), "recipe": recipe}, indent=1, default=str))
    os.replace(tmp, record)


def validate_recipe(recipe: Any, label: str = "recipe") -> None:
    """Check a recipe's keys (top level, ``data``, ``train``) and ``train`` types; ``ValueError`` on the first
    problem, naming the key."""
    if not isinstance(recipe, dict) or "task" not in recipe:
        raise ValueError(f"{label}: expected a mapping with a 'task' key")
    task = recipe["task"]
    if task not in _TASKS:
        close = difflib.get_close_matches(str(task), sorted(_TASKS), n=3)
        raise ValueError(f"unknown recipe task {task!r}; known tasks: {sorted(_TASKS)}"
                         + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))  # fmt: skip
    keys = RECIPE_TASK_KEYS.get(task)
    if keys is None:
        _warn_once(f"recipe task {task!r}")
    else:
        extra = set(evaluators()) if task == "classification" else set()
        check_keys(label, recipe, COMMON_RECIPE_KEYS | keys | extra)
    if "train" not in recipe:
        raise ValueError(f"{label}: no 'train' section (the training loop's settings: output_dir, max_steps, ...)")
    train = recipe["train"]
    if not isinstance(train, dict):
        raise ValueError(f"{label}: 'train' must be a mapping of TrainConfig settings, got {train!r}")
    try:
        TrainConfig.from_dict(dict(train))  # unknown keys with the closest ones; type errors name the key
    except (TypeError, ValueError) as e:
        raise ValueError(f"{label}: {e}") from None
    kind = RECIPE_DATA_KIND.get(task)
    data = recipe.get("data")
    if kind is None or data is None:
        return
    if not isinstance(data, dict):
        raise ValueError(f"{label}: 'data' must be a mapping, got {data!r}")
    mode, allowed = kind
    if mode == "splits":
        check_keys(f"{label}: data", data, allowed)
        for split, spec in data.items():
            check_dataset(f"{label}: data.{split}", spec)
    else:
        check_dataset(f"{label}: data", {k: v for k, v in data.items() if k not in allowed})
