"""Schemas of recipes and eval suites: unknown keys are rejected with the closest valid names, wrong types named.

Recipe tasks, eval tasks and dataset sources declare the keys they accept. Dataset sources declare them where they
are registered (``register_source(name, builder, keys=...)``); recipe and eval tasks, whose registries take no
schema, are declared here (:data:`RECIPE_TASK_KEYS`, :data:`EVAL_TASK_KEYS`, :func:`declare_recipe_task`,
:func:`declare_eval_task`). A task or source without a declared schema accepts any key, with a warning (once).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import numbers
import os
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

#: keys every recipe may carry, whatever its task
COMMON_RECIPE_KEYS = frozenset({"task", "train", "name", "description"})
#: top-level recipe keys per recipe task (beyond :data:`COMMON_RECIPE_KEYS`); ``data`` is checked per task, see
#: :data:`RECIPE_DATA_KIND`
RECIPE_TASK_KEYS: dict[str, frozenset[str]] = {
    "classification": frozenset({"model", "tuning", "coop", "adapter", "head", "data", "classnames", "eval_suite"}),
    "segmentation": frozenset({"model", "tuning", "adapter", "head", "data", "classnames"}),
    "dit": frozenset({"model", "data", "scheduler"}),
    "distill": frozenset({"teachers", "student", "loss", "data", "augment", "cache"}),
}
#: how a task's ``data`` section is read: ``"splits"`` (``{train: dataset, test: dataset}``), ``"dataset"`` (one
#: dataset spec, plus the listed extra keys), absent: not checked
RECIPE_DATA_KIND: dict[str, tuple[str, frozenset[str]]] = {
    "classification": ("splits", frozenset({"train", "test"})),
    "segmentation": ("splits", frozenset({"train", "test"})),
    "dit": ("dataset", frozenset({"hflip"})),
    "distill": ("dataset", frozenset()),
}

#: keys every suite task may carry
COMMON_EVAL_TASK_KEYS = frozenset({"task", "name", "classnames"})
_DENSE = {"mode", "templates", "short_side", "window", "stride", "refine"}
#: suite task keys per eval task (beyond :data:`COMMON_EVAL_TASK_KEYS`)
EVAL_TASK_KEYS: dict[str, frozenset[str]] = {
    "zero_shot_classification": frozenset({"dataset", "templates"}),
    "linear_probe": frozenset({"train", "val", "test", "weight_decays", "epochs", "seed"}),
    "knn": frozenset({"train", "test", "k", "temperature"}),
    "retrieval": frozenset({"dataset", "captions_per_image"}),
    "segmentation": frozenset(
        {
            "dataset",
            "method",
            "preset",
            "logit_scale",
            "prob_thresh",
            "cos_thresh",
            "area_thresh",
            "max_long_side",
            "resize",
            "inference",
            "pad_multiple",
            "pos_interp",
            "pamr_steps",
            "pamr_dilations",
            "proxy",
            "proxy_grid",
            *_DENSE,
        }
    ),  # fmt: skip
    "detection": frozenset(
        {"dataset", "phrases", "max_detections", "threshold", "cos_thresh", "nms_thresh", "min_area", *_DENSE}
    ),  # fmt: skip
    "generation": frozenset(
        {
            "reference",
            "reference_stats",
            "metrics",
            "preset",
            "steps",
            "guidance_scale",
            "seed",
            "prompts",
            "negative_prompt",
            "num_per_prompt",
            "num_per_class",
            "classes",
            "num_samples",
            "save_images",
        }
    ),  # fmt: skip
}

#: keys every dataset entry may carry, whatever its source
COMMON_DATASET_KEYS = frozenset({"source", "num", "classnames", "templates"})
#: keys of sources registered without ``keys=`` (filled by :func:`declare_source`)
SOURCE_KEYS: dict[str, frozenset[str]] = {}

_warned: set[str] = set()


def declare_recipe_task(name: str, keys: Iterable[str]) -> None:
    """Declare the top-level keys recipe task ``name`` accepts (beyond ``task``, ``train``, ``name``...)."""
    RECIPE_TASK_KEYS[name] = frozenset(keys)


def declare_source(name: str, keys: Iterable[str]) -> None:
    """Declare the keys dataset source ``name`` accepts (beyond ``source``, ``num``, ``classnames``, ``templates``)."""
    SOURCE_KEYS[name] = frozenset(keys)


def declare_eval_task(name: str, keys: Iterable[str]) -> None:
    """Declare the suite keys eval task ``name`` accepts (beyond ``task``, ``name``, ``classnames``)."""
    EVAL_TASK_KEYS[name] = frozenset(keys)


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning("%s declares no schema: its keys are not checked", what)


def check_keys(where: str, given: Iterable[Any], valid: Iterable[str]) -> None:
    """Raise ``ValueError`` naming each unknown key of ``given`` with the closest ``valid`` names."""
    valid = sorted(set(valid))
    bad = [str(k) for k in given if str(k) not in valid]
    if not bad:
        return
    parts = []
    for k in bad:
        close = difflib.get_close_matches(k, valid, n=3, cutoff=0.6)
        parts.append(f"{k!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
    raise ValueError(f"{where}: unknown key(s) {', '.join(parts)}; valid keys: {valid}")


def _type_ok(value: Any, typ: str) -> bool:
    if value is None:
        return "None" in typ
    base = typ.replace(" | None", "")
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if base == "str":
        return isinstance(value, (str, os.PathLike))
    if base.startswith("tuple[float, float]"):
        return (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        )
    return True


def check_train_types(cfg: Any) -> None:
    """Raise ``ValueError`` naming a :class:`~visionfm.training.loop.TrainConfig` field of the wrong type."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        typ = str(f.type)
        if f.name == "mixed_precision":
            continue  # a bare YAML `no` is read as false; TrainConfig maps it
        if not _type_ok(v, typ):
            raise ValueError(f"train.{f.name} must be {typ}, got {type(v).__name__} {v!r}")


def source_keys(source: str) -> frozenset[str] | None:
    """The keys dataset source ``source`` declared, or ``None``."""
    from ..data.datasets import _SOURCE_KEYS

    keys = _SOURCE_KEYS.get(source, SOURCE_KEYS.get(source))
    return None if keys is None else frozenset(keys)


def check_dataset(where: str, spec: Any) -> None:
    """Check one dataset entry's keys against its source's schema."""
    from ..data.datasets import sources

    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a dataset entry must be a mapping with a 'source', got {spec!r}")
    source = spec.get("source")
    if source is None:
        raise ValueError(f"{where}: dataset has no 'source'")
    if source not in sources() and source not in SOURCE_KEYS:
        hint = " (import visionfm.toyworld to register it)" if source == "toyworld" else ""
        close = difflib.get_close_matches(str(source), sources(), n=3)
        raise ValueError(f"{where}: source must be one of {sources()}, got {source!r}{hint}"
                         + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))  # fmt: skip
    keys = source_keys(str(source))
    if keys is None:
        _warn_once(f"dataset source {source!r}")
        return
    check_keys(f"{where} (source {source})", spec, COMMON_DATASET_KEYS | keys)


def check_eval_task(where: str, task: dict[str, Any]) -> None:
    """Check one suite task's keys against its eval task's schema."""
    kind = str(task.get("task"))
    keys = EVAL_TASK_KEYS.get(kind)
    if keys is None:
        _warn_once(f"eval task {kind!r}")
        return
    check_keys(f"{where} ({kind})", task, COMMON_EVAL_TASK_KEYS | keys)
