"""The eval registries (a leaf): task name -> implementation and the dataset keys a suite entry must name; and the
folders of shipped suites.

Built-in tasks register in :mod:`visionfm.eval.tasks` and :mod:`visionfm.eval.generation_task`; other packages
(``visionfm.toyworld``) register theirs on import. A task is ``fn(runner, task_spec) -> result dict`` with at least
``{"task", "dataset", "metrics": {name: value}, "samples", "skipped"}``; the runner adds ``"name"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvalTask:
    """A registered eval task.

    Attributes:
        name: the ``task:`` value in a suite.
        fn: ``fn(runner, task_spec) -> dict``.
        datasets: keys of the task spec that must name datasets of the suite (``("train", "test")`` for kNN).
        optional: those of ``datasets`` that may be left out.
        description: one line for docs and errors.
    """

    name: str
    fn: Callable[[Any, dict[str, Any]], dict[str, Any]]
    datasets: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    description: str = ""


_TASKS: dict[str, EvalTask] = {}


def register_task(
    name: str, *, datasets: tuple[str, ...] = (), optional: tuple[str, ...] = (), description: str = ""
) -> Callable[[Callable[[Any, dict[str, Any]], dict[str, Any]]], Callable[[Any, dict[str, Any]], dict[str, Any]]]:
    """Decorator registering an eval task under ``name``; a duplicate name raises ``ValueError``."""

    def deco(fn: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> Callable[[Any, dict[str, Any]], dict[str, Any]]:
        if name in _TASKS:
            raise ValueError(f"eval task {name!r} is already registered")
        _TASKS[name] = EvalTask(name, fn, tuple(datasets), tuple(optional), description)
        return fn

    return deco


def get_task(name: str) -> EvalTask:
    """The task registered as ``name``; ``ValueError`` listing the known tasks otherwise."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown eval task {name!r}; known tasks: {task_names()}") from None


def task_names() -> list[str]:
    """Names of the registered eval tasks."""
    return sorted(_TASKS)


_SUITE_DIRS: list[Path] = []


def register_suite_dir(path: str | os.PathLike) -> None:
    """Make the ``*.yaml`` suites in ``path`` loadable by name (a package shipping its own suites calls this)."""
    p = Path(path).resolve()
    if p not in _SUITE_DIRS:
        _SUITE_DIRS.append(p)
