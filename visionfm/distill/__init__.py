"""Distillation: multi-teacher distillation into a student encoder, and an on-disk teacher feature cache so later
epochs only pay for the student. Importing it registers the ``distill`` recipe task (``visionfm train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training.registry import register_task
from .cache import TeacherCache, cached_forward

__all__ = ["TeacherCache", "cached_forward"]


@register_task("distill")
def _distill(recipe: dict[str, Any]) -> Path:
    from .train import run

    return run(recipe)
