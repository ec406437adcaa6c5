"""The toyworld vertical: a procedural world of coloured shapes, the toy model zoo trained on it from scratch, the
demo, and the toyworld eval tasks and suites.

Importing it (``import visionfm`` does) registers, without reading any file:

- the ``toyworld`` dataset source (:mod:`visionfm.toyworld.datasets`);
- the models ``toyworld-clip``, ``toyworld-ssl``, ``toyworld-sam`` and ``toyworld-random-dinov2``
  (:mod:`visionfm.toyworld.models`);
- the recipe tasks ``clip_pretrain``, ``sam_pretrain`` and ``ssl_pretrain`` and the recipes in ``visionfm/toyworld/recipes/``;
- the eval tasks ``toyworld_seg``, ``toyworld_grounding``, ``toyworld_generation_baselines`` and
  ``toyworld_student``, and the suites in ``visionfm/toyworld/suites/``.

General modules never import this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..eval.registry import register_suite_dir
from ..eval.registry import register_task as register_eval_task
from ..training.registry import register_recipe_dir
from ..training.registry import register_task as register_recipe_task
from ..training.schema import declare_eval_task, declare_recipe_task
from . import datasets as _datasets  # noqa: F401  (registers the toyworld dataset source)
from .models import RECIPES, SUITES, cache_root, ensure_toy_clip, toy_clip_dir
from .world import COLOURS, HELDOUT_PAIRS, SHAPES, Scene, ToyWorld, class_names

__all__ = [
    "COLOURS",
    "HELDOUT_PAIRS",
    "SHAPES",
    "Scene",
    "ToyWorld",
    "cache_root",
    "class_names",
    "ensure_toy_clip",
    "toy_clip_dir",
]

register_recipe_dir(RECIPES)
register_suite_dir(SUITES)
# the keys each toyworld recipe / eval task accepts (recipes and suites are validated against them)
declare_recipe_task("clip_pretrain", ("model", "data"))
declare_recipe_task("sam_pretrain", ("model", "data"))
declare_recipe_task("ssl_pretrain", ("model", "data", "ssl"))
declare_eval_task("toyworld_seg", ("modes", "kinds", "splits", "num", "num_val", "short_side", "window", "stride",
                                   "proxy", "pamr", "sam", "seed"))  # fmt: skip
declare_eval_task("toyworld_grounding", ("modes", "splits", "num", "num_val", "short_side", "stride", "seed"))
declare_eval_task("toyworld_generation_baselines", ("generation", "reference", "untrained_seed", "samples_png"))
declare_eval_task("toyworld_student", ("teacher", "num_seg", "batch"))


@register_recipe_task("clip_pretrain")
def _clip_pretrain(recipe: dict[str, Any]) -> Path:
    from .clip_pretrain import run

    return run(recipe)


@register_recipe_task("sam_pretrain")
def _sam_pretrain(recipe: dict[str, Any]) -> Path:
    from .sam_pretrain import run

    return run(recipe)


@register_recipe_task("ssl_pretrain")
def _ssl_pretrain(recipe: dict[str, Any]) -> Path:
    from .ssl_pretrain import run

    return run(recipe)


@register_eval_task("toyworld_seg", description="zero-shot-seg mIoU of every dense mode on toyworld label maps")
def _seg_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    from .seg import seg_task

    return seg_task(runner, task)


@register_eval_task("toyworld_grounding", description="grounding box / mask AP on toyworld colour phrases")
def _grounding_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    from .grounding import grounding_task

    return grounding_task(runner, task)


@register_eval_task(
    "toyworld_generation_baselines",
    datasets=("reference",),
    description="a toyworld DiT's untrained twin, noise and a real-scene floor, scored like the generation task",
)
def _generation_baselines_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    from .generation import baselines_task

    return baselines_task(runner, task)


@register_eval_task("toyworld_student", description="a distilled student against its CLIP teacher on toyworld")
def _student_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    from .student import student_task

    return student_task(runner, task)
