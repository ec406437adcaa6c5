"""Evaluation suites: YAML files of datasets × tasks, shipped in ``visionfm/eval_suites/`` or your own.

```yaml
name: my_suite
datasets:
  pets: {source: imagefolder, path: data/pets}           # paths are relative to the YAML file
  pets-train: {source: imagefolder, path: data/pets-train}
tasks:
  - {task: zero_shot_classification, dataset: pets, templates: imagenet80}
  - {task: knn, train: pets-train, test: pets, k: 20}
```
Each task names the dataset keys it reads; see ``docs/eval.md`` for every task's options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

TASK_DATASET_KEYS = {
    "zero_shot_classification": ("dataset",),
    "linear_probe": ("train", "val", "test"),
    "knn": ("train", "test"),
    "retrieval": ("dataset",),
    "segmentation": ("dataset",),
    "detection": ("dataset",),
}


@dataclass
class Suite:
    """A parsed suite: ``datasets`` (name -> source spec) and ``tasks`` (list of task specs, each with a
    unique ``name``); ``root`` resolves relative dataset paths."""

    name: str
    datasets: dict[str, dict[str, Any]]
    tasks: list[dict[str, Any]]
    root: Path = field(default_factory=Path.cwd)
    path: Path | None = None
    description: str = ""


def shipped_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    files = resources.files("visionfm.eval_suites")
    return sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".yaml"))


def load_suite(suite: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Suite:
    """Read a shipped suite by name or a YAML file, and validate it.

    Args:
        suite: a shipped suite name (:func:`shipped_suites`) or a path to a YAML file.
        overrides: ``{"num": N}`` caps every dataset at N samples (quick runs).

    Raises:
        ValueError: unknown suite, malformed YAML, unknown task, or a task naming a dataset the suite lacks —
            the message names the suite and the entry.
    """
    path = Path(suite)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ValueError(f"suite file {path} does not exist")
        text, root = path.read_text(), path.resolve().parent
    else:
        names = shipped_suites()
        if str(suite) not in names:
            raise ValueError(f"unknown suite {str(suite)!r}: shipped suites are {names}, or pass a YAML path")
        text = resources.files("visionfm.eval_suites").joinpath(f"{suite}.yaml").read_text()
        root, path = Path.cwd(), None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"suite {suite}: not valid YAML: {e}") from e
    return parse_suite(raw, root=root, path=path, overrides=overrides, label=str(suite))


def parse_suite(
    raw: dict[str, Any],
    *,
    root: Path | None = None,
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    label: str = "suite",
) -> Suite:
    """Validate a suite dict (the YAML's content)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict) or not isinstance(raw.get("tasks"), list):
        raise ValueError(f"{label}: a suite needs a 'datasets' mapping and a 'tasks' list")
    datasets = {str(k): dict(v) for k, v in raw["datasets"].items()}
    for name, spec in datasets.items():
        if "source" not in spec:
            raise ValueError(f"{label}: dataset {name!r} has no 'source'")
        if overrides and overrides.get("num") is not None:
            spec["num"] = min(int(spec.get("num", overrides["num"])), int(overrides["num"]))
    tasks, seen = [], set()
    for i, t in enumerate(raw["tasks"]):
        t = dict(t)
        kind = t.get("task")
        if kind not in TASK_DATASET_KEYS:
            raise ValueError(f"{label}: tasks[{i}] has task {kind!r}; known tasks: {sorted(TASK_DATASET_KEYS)}")
        for key in TASK_DATASET_KEYS[kind]:
            if key == "val" and key not in t:
                continue  # linear probe without val: a split of train is used
            if t.get(key) not in datasets:
                raise ValueError(
                    f"{label}: tasks[{i}] ({kind}) needs {key}: one of {sorted(datasets)}, got {t.get(key)!r}"
                )
        t.setdefault("name", f"{kind}/{t.get('dataset') or t.get('test')}")
        if t["name"] in seen:
            raise ValueError(f"{label}: duplicate task name {t['name']!r}; give tasks distinct 'name's")
        seen.add(t["name"])
        tasks.append(t)
    return Suite(name=str(raw.get("name", path.stem if path else label)), datasets=datasets, tasks=tasks,
                 root=root or Path.cwd(), path=path, description=str(raw.get("description", "")))  # fmt: skip
