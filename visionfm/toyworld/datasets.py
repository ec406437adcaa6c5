"""The ``toyworld`` dataset source: ``{source: toyworld, ...}`` in suites and recipes (registered on import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.datasets import EvalDataset, register_source
from .world import POSITIONS, SIZES, ToyWorld, class_names


def training_world_args(data_cfg: dict[str, Any], image_size: int, task: str) -> dict[str, Any]:
    """A toy pretraining recipe's ``data:`` section (its task's own keys already popped) as ``ToyWorld`` keyword
    arguments: ``source`` must be ``toyworld`` and ``image_size`` (default: the model's) must equal the model's.

    Raises:
        ValueError: naming the key and the task.
    """
    args = dict(data_cfg)
    if args.pop("source", "toyworld") != "toyworld":
        raise ValueError(f"{task} supports data.source: toyworld")
    args["image_size"] = int(args.get("image_size", image_size))
    if args["image_size"] != image_size:
        raise ValueError(
            f"{task}: data.image_size ({args['image_size']}) must equal the model's image size ({image_size})"
        )
    return args


def toyworld_source(name: str, spec: dict[str, Any], root: Path, num: int | None) -> EvalDataset:
    """``{split, num, label: colour_shape|shape|colour|size|position|none, seed, image_size, min_objects, max_objects,
    target: none|semantic_colour|semantic_shape}``; scenes are generated, ``root`` is unused."""
    from .seg import target_map

    label = spec.get("label", "colour_shape")
    n = int(num if num is not None else spec.get("num", 600))
    kw = dict(image_size=int(spec.get("image_size", 64)), seed=int(spec.get("seed", 0)),
              min_objects=int(spec.get("min_objects", 1)), max_objects=int(spec.get("max_objects", 1)))  # fmt: skip
    world = ToyWorld(spec.get("split", "test"), n, **kw)
    target = spec.get("target", "none")
    attrs = {"size": SIZES, "position": POSITIONS}  # attributes of the (first) object, beyond toyworld's KINDS
    names = list(attrs[label]) if label in attrs else class_names(label) if label != "none" else []

    def load(i: int) -> tuple:
        sc = world[i]
        if label in attrs:
            lab = list(attrs[label]).index(getattr(sc.objects[0], label))
        else:
            lab = sc.label(label) if label != "none" else -1
        tgt = target_map(sc, target.removeprefix("semantic_")) if target != "none" else None
        return sc.image, lab, sc.captions, tgt

    return EvalDataset(name, [lambda i=i: load(i) for i in range(n)], [f"{world.split}/{i}" for i in range(n)], names)


register_source(
    "toyworld", toyworld_source, keys=("split", "label", "seed", "image_size", "min_objects", "max_objects", "target")
)
