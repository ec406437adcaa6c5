"""Evaluation suites: YAML files of datasets × tasks, shipped in ``visionfm/eval_suites/`` (and in the folders other
packages register, e.g. ``visionfm/toyworld/suites/``) or your own.

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

from . import generation_task as _generation_task  # noqa: F401  (registers the generation task)
from . import tasks as _builtin_tasks  # noqa: F401  (registers the built-in tasks)
from .registry import _SUITE_DIRS, get_task, register_suite_dir, task_names

__all__ = ["Suite", "apply_suite_overrides", "load_suite", "parse_suite", "register_suite_dir", "shipped_suites"]


def _suite_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in [Path(str(resources.files("visionfm.eval_suites"))), *_SUITE_DIRS]:
        for f in sorted(d.glob("*.yaml")):
            if f.stem in out:
                raise ValueError(f"suite {f.stem!r} is shipped twice: {out[f.stem]} and {f}")
            out[f.stem] = f
    return out


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
    """Names of the suites shipped with the package and with registered suite folders."""
    return sorted(_suite_files())


def load_suite(suite: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Suite:
    """Read a shipped suite by name or a YAML file, and validate it.

    Args:
        suite: a shipped suite name (:func:`shipped_suites`) or a path to a YAML file.
        overrides: ``{"num": N}`` caps every dataset at N samples (quick runs); ``{"set": ["a.b=value", ...]}``
            edits the YAML before it is read: ``datasets.NAME.KEY=V`` or ``tasks.I.KEY=V`` (``I``: the task's
            index or ``name``; ``*``: every dataset / task), values parsed as YAML; ``{"data_root": DIR}``: relative
            dataset paths resolve against ``DIR`` (default: the suite file's folder, or the working directory for a
            shipped suite).

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
        files = _suite_files()
        if str(suite) not in files:
            raise ValueError(f"unknown suite {str(suite)!r}: shipped suites are {sorted(files)}, or pass a YAML path")
        text = files[str(suite)].read_text()
        root, path = Path.cwd(), None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        src = path if path is not None else files[str(suite)]
        where = f"{src}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(src)
        raise ValueError(f"suite {suite}: {where}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
    if overrides and overrides.get("set"):
        raw = apply_suite_overrides(raw, list(overrides["set"]), label=str(suite))
    if overrides and overrides.get("data_root"):
        root = Path(os.path.expanduser(str(overrides["data_root"])))
        if not root.is_dir():
            raise ValueError(f"suite {suite}: data root {root} is not a directory")
    return parse_suite(raw, root=root, path=path, overrides=overrides, label=str(suite))


def apply_suite_overrides(raw: dict[str, Any], items: list[str], *, label: str = "suite") -> dict[str, Any]:
    """A copy of a suite dict with ``datasets.NAME.KEY=V`` / ``tasks.I.KEY=V`` edits (``*`` for all; see
    :func:`load_suite`)."""
    import copy

    from ..training.recipes import _parse_value

    out = copy.deepcopy(raw)
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 3 or parts[0] not in ("datasets", "tasks"):
            raise ValueError(f"{label}: override {item!r} must look like datasets.NAME.KEY=V or tasks.I.KEY=V")
        if parts[0] == "datasets":
            everything = out.get("datasets") or {}
            nodes = list(everything.values()) if parts[1] == "*" else [everything.get(parts[1])]
            if not nodes or not all(isinstance(n, dict) for n in nodes):
                raise ValueError(f"{label}: override {item!r}: no dataset {parts[1]!r} in {sorted(everything)}")
        else:
            tasks = out.get("tasks") or []
            nodes = [t for i, t in enumerate(tasks) if parts[1] in ("*", str(i), t.get("name"))]
            if not nodes:
                raise ValueError(f"{label}: override {item!r}: no task with index or name {parts[1]!r}")
            nodes = nodes if parts[1] == "*" else nodes[:1]
        for node in nodes:
            for p in parts[2:-1]:
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise ValueError(f"{label}: override {item!r}: {p!r} is not a mapping")
            node[parts[-1]] = _parse_value(value)
    return out


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
    from ..training.schema import check_dataset, check_eval_task, check_keys

    check_keys(label, raw, ("name", "description", "datasets", "tasks"))
    for name, spec in raw["datasets"].items():
        if not isinstance(spec, dict) or "source" not in spec:
            raise ValueError(f"{label}: dataset {name!r} has no 'source'")
        check_dataset(f"{label}: dataset {name!r}", spec)  # unknown keys per source, with the closest valid ones
    datasets = {str(k): dict(v) for k, v in raw["datasets"].items()}
    for spec in datasets.values():
        if overrides and overrides.get("num") is not None:
            spec["num"] = min(int(spec.get("num", overrides["num"])), int(overrides["num"]))
    tasks, seen = [], set()
    for i, t in enumerate(raw["tasks"]):
        t = dict(t)
        kind = t.get("task")
        if kind not in task_names():
            raise ValueError(f"{label}: tasks[{i}] has task {kind!r}; known tasks: {task_names()}")
        check_eval_task(f"{label}: tasks[{i}]", t)  # unknown keys per task, with the closest valid ones
        spec = get_task(kind)
        for key in spec.datasets:
            if key in spec.optional and key not in t:
                continue  # e.g. linear probe without val (a split of train is used), generation with reference_stats
            if t.get(key) not in datasets:
                raise ValueError(
                    f"{label}: tasks[{i}] ({kind}) needs {key}: one of {sorted(datasets)}, got {t.get(key)!r}"
                )
        first = next((t[k] for k in ("dataset", "test", "reference", *spec.datasets) if t.get(k)), None)
        t.setdefault("name", f"{kind}/{first}" if first else kind)
        if t["name"] in seen:
            raise ValueError(f"{label}: duplicate task name {t['name']!r}; give tasks distinct 'name's")
        seen.add(t["name"])
        tasks.append(t)
    return Suite(name=str(raw.get("name", path.stem if path else label)), datasets=datasets, tasks=tasks,
                 root=root or Path.cwd(), path=path, description=str(raw.get("description", "")))  # fmt: skip
