"""Evaluation: metrics, suites (datasets × tasks in YAML), the resumable Accelerate runner and reports.

Importing it registers ``eval_suite`` with the training recipes: a fine-tuning recipe with ``eval_suite: NAME``
runs that suite on the adapted encoder after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training.registry import register_evaluator


def _eval_suite_after_training(suite: Any, encoder: Any, out_dir: Path) -> list[dict[str, Any]]:
    from .runner import Runner

    return Runner(suite, encoder, out_dir).run()["results"]


register_evaluator("eval_suite", _eval_suite_after_training)
