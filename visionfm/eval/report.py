"""Reports over evaluation-suite results: markdown tables and plots from ``visionfm-eval/1`` JSON files.

The suite runner writes one JSON file per run (``<out>/<suite>__<model-slug>-<8 hex>.json``, the hex part a hash of the model path and weights)::

    {"format": "visionfm-eval/1", "suite": "toyworld", "model": "toyworld-clip", "started": "2026-11-22T01:00:00+00:00",
     "wall_s": 12.3, "world_size": 2, "versions": {...}, "checkpoint_sha256": "...",
     "results": [{"task": "zero_shot_classification", "dataset": "toyworld-heldout",
                  "metrics": {"acc1": 0.437, ...}, "samples": 600, "skipped": 0,
                  "per_class": {"names": [...], "recall": [...]},   # optional
                  "confusion": [[3, 1], [0, 4]]}, ...]}               # optional, K x K, rows = true class

Required keys are ``format``, ``suite``, ``model`` and ``results`` (each result with ``task``, ``dataset`` and a
``metrics`` dict); everything else is optional. ``build_report`` turns a set of such files into ``report.md`` plus
PNG plots. Figures are drawn with ``matplotlib.figure.Figure`` on an Agg canvas, so pyplot's global state and the
user's backend are never touched.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_PREFIX = "visionfm-eval/"
MISSING = "–"
_PER_CLASS_KEYS = ("iou", "recall", "acc", "accuracy", "ap", "f1")
_MAX_CONFUSION_TICKS = 40
_MAX_CONFUSION_ANNOTATE = 12
_LABEL_CHARS = 40


# --------------------------------------------------------------------------------------------------------- loading
def load_results(paths: str | Path | Sequence[str | Path]) -> list[dict]:
    """Load evaluation results files.

    Directories are searched recursively for ``*.json`` (in sorted path order); files are taken as given. JSON files
    that are not ``visionfm-eval/*`` results (other ``format``, unreadable, not an object) are skipped with a logged
    warning. A file that claims the format but lacks required structure raises, naming the file.

    Args:
        paths: one path or a sequence of paths, each a results file or a directory.

    Returns:
        The runs in load order, each the file's JSON object with an added ``"_source"`` key (the file's path as str).
        A file reached twice (e.g. listed and inside a listed directory) is loaded once.

    Raises:
        FileNotFoundError: a path does not exist, or no results file was found at all.
        ValueError: a ``visionfm-eval`` file is malformed (e.g. no ``results`` list); the message names the file.
    """
    roots = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files.extend(sorted(p for p in root.rglob("*.json") if p.is_file()))
        elif root.is_file():
            files.append(root)
        else:
            raise FileNotFoundError(f"results path does not exist: {root}")
    runs: list[dict] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        run = _load_one(f)
        if run is not None:
            runs.append(run)
    if not runs:
        where = ", ".join(str(r) for r in roots) or "(no paths given)"
        raise FileNotFoundError(
            f"no {FORMAT_PREFIX}* results files found in {where} ({len(files)} JSON files looked at)"
        )
    logger.info("loaded %d results files from %s", len(runs), ", ".join(str(r) for r in roots))
    return runs


def _load_one(path: Path) -> dict | None:
    """One results file, or None (with a warning) when it is not a results file at all."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("skipping %s: not readable JSON (%s)", path, e)
        return None
    fmt = data.get("format") if isinstance(data, dict) else None
    if not (isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX)):
        logger.warning("skipping %s: not a %s* results file (format=%r)", path, FORMAT_PREFIX, fmt)
        return None
    for k in ("suite", "model"):
        if not isinstance(data.get(k), str) or not data[k]:
            raise ValueError(f"malformed results file {path}: missing or empty {k!r}")
    results = data.get("results")
    if not isinstance(results, list):
        raise ValueError(f"malformed results file {path}: 'results' must be a list, got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"malformed results file {path}: results[{i}] is not an object")
        missing = [k for k in ("task", "dataset") if not isinstance(r.get(k), str)]
        if missing or not isinstance(r.get("metrics"), dict):
            raise ValueError(
                f"malformed results file {path}: results[{i}] needs 'task', 'dataset' and a 'metrics' dict"
            )
    data["_source"] = str(path)
    return data


def _started(run: dict) -> datetime:
    """The run's start time (UTC-aware); missing or unparsable counts as oldest."""
    s = run.get("started")
    if isinstance(s, str):
        try:
            t = datetime.fromisoformat(s.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        except ValueError:
            logger.warning("unparsable 'started' %r in %s", s, run.get("_source", "?"))
    return datetime.min.replace(tzinfo=timezone.utc)


def _newest_runs(runs: Sequence[dict], *, log: bool = True) -> tuple[list[dict], list[str]]:
    """Keep one run per (suite, model): the newest by ``started`` (ties: the later one).

    Returns:
        (runs sorted by suite then model, notes on dropped duplicates).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["suite"], run["model"]), []).append(run)
    kept, notes = [], []
    for (suite, model), group in groups.items():
        best = group[0]
        for run in group[1:]:
            if _started(run) >= _started(best):
                best = run
        kept.append(best)
        if len(group) > 1:
            note = (
                f"{len(group)} runs of model `{model}` on suite `{suite}`; showing the newest "
                f"(started {best.get('started', '?')}, from `{best.get('_source', '?')}`)."
            )
            if log:
                logger.warning(note.replace("`", ""))
            notes.append(note)
    kept.sort(key=lambda r: (r["suite"], r["model"]))
    return kept, notes


# ---------------------------------------------------------------------------------------------------------- tables
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _fmt_value(v: Any, percent: bool) -> str:
    """One table cell.

    >>> _fmt_value(0.437, True), _fmt_value(None, True), _fmt_value(12.345678, False), _fmt_value(7, False)
    ('43.7', '–', '12.35', '7')
    """
    if not _is_number(v):
        return MISSING
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return "nan"
    if percent:
        return f"{100 * float(v):.1f}"
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):.4g}"


def _fmt_duration(seconds: Any) -> str:
    """Wall time for people.

    >>> _fmt_duration(12.34), _fmt_duration(125), _fmt_duration(3725), _fmt_duration(None)
    ('12.3 s', '2 min 05 s', '1 h 02 min', '–')
    """
    if not _is_number(seconds) or math.isnan(seconds):
        return MISSING
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _md(text: Any) -> str:
    """Escape a table cell (pipes, newlines)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric_rows(runs: Sequence[dict], metrics: Sequence[str] | None) -> tuple[list[str], list[tuple], dict]:
    """(models, row keys (suite, dataset, task, metric) in first-appearance order, values[row][model])."""
    models: list[str] = []
    blocks: dict[tuple[str, str, str], list[str]] = {}  # (suite, dataset, task) -> metric names, in order
    values: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        model = run["model"]
        if model not in models:
            models.append(model)
        seen: set[tuple[str, str]] = set()
        for res in run["results"]:
            if (res["dataset"], res["task"]) in seen:
                logger.warning(
                    "%s: several results for %s/%s; the last one is shown", run["_source"], res["dataset"], res["task"]
                )
            seen.add((res["dataset"], res["task"]))
            block = blocks.setdefault((run["suite"], res["dataset"], res["task"]), [])
            for name, v in res["metrics"].items():
                if not _is_number(v) or (metrics is not None and name not in metrics):
                    continue
                if name not in block:
                    block.append(name)
                values.setdefault((run["suite"], res["dataset"], res["task"], name), {})[model] = v
    order = {s: i for i, s in enumerate(dict.fromkeys(b[0] for b in blocks))}  # group blocks by suite
    keys = sorted(blocks, key=lambda b: order[b[0]])
    if metrics is not None:  # the caller's metric order within each block
        rank = {m: i for i, m in enumerate(metrics)}
        for b in keys:
            blocks[b].sort(key=rank.__getitem__)
    rows = [(*b, m) for b in keys for m in blocks[b]]
    return models, rows, values


def results_table(runs: list[dict], *, metrics: Sequence[str] | None = None) -> str:
    """Markdown tables comparing models.

    The first table has one row per (suite, dataset, task, metric) and one column per model. A row whose values all
    lie in [0, 1] is shown as percentages with one decimal (0.437 -> ``43.7``); ``–`` marks a metric a model lacks.
    When several runs share (suite, model) the newest by ``started`` wins and a note above the tables says so. The
    second table lists per run: results, samples and skipped (summed over results), wall time, world size, start.

    Args:
        runs: runs as returned by ``load_results``.
        metrics: only these metric names, in this order within each (suite, dataset, task); None for all.

    Returns:
        Markdown text (notes, metrics table, runs table).

    Raises:
        ValueError: no runs, or no metric to show.
    """
    if not runs:
        raise ValueError("no runs to tabulate")
    kept, notes = _newest_runs(runs)
    models, rows, values = _metric_rows(kept, metrics)
    if not rows:
        raise ValueError(f"no numeric metrics to show (metrics filter: {list(metrics) if metrics else None})")
    if metrics is not None and (unknown := sorted(set(metrics) - {r[3] for r in rows})):
        logger.warning("metrics not found in any run: %s", unknown)

    body = []
    for key in rows:
        vals = [values[key].get(m) for m in models]
        nums = [v for v in vals if _is_number(v) and not math.isnan(v)]
        percent = bool(nums) and all(0.0 <= v <= 1.0 for v in nums) and not all(isinstance(v, int) for v in nums)
        body.append([*key, *(_fmt_value(v, percent) for v in vals)])
    table = _md_table(["suite", "dataset", "task", "metric", *models], body, [":--"] * 4 + ["--:"] * len(models))

    run_rows = []
    for run in kept:
        res = run["results"]
        samples = [r["samples"] for r in res if _is_number(r.get("samples"))]
        skipped = [r["skipped"] for r in res if _is_number(r.get("skipped"))]
        ws = run.get("world_size")
        run_rows.append(
            [
                run["suite"],
                run["model"],
                str(len(res)),
                str(int(sum(samples))) if samples else MISSING,
                str(int(sum(skipped))) if skipped else MISSING,
                _fmt_duration(run.get("wall_s")),
                str(ws) if _is_number(ws) else MISSING,
                str(run.get("started", MISSING)),
            ]
        )
    runs_table = _md_table(
        ["suite", "model", "results", "samples", "skipped", "wall time", "world size", "started"],
        run_rows,
        [":--", ":--", "--:", "--:", "--:", "--:", "--:", ":--"],
    )
    parts = [f"> **Note:** {n}" for n in notes]
    parts += [
        f"Values in [0, 1] are percentages (1 decimal); {MISSING} = not evaluated.",
        table,
        "Runs (samples and skipped summed over a run's results):",
        runs_table,
    ]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------------------- plots
def _new_figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _title(*parts: Any) -> str:
    return " · ".join(str(p) for p in parts if p)


def _short(label: Any, n: int = _LABEL_CHARS) -> str:
    s = str(label)
    return s if len(s) <= n else s[: n - 1] + "…"


def _class_names(result: dict, k: int) -> list[str]:
    names = (result.get("per_class") or {}).get("names")
    if isinstance(names, list) and len(names) == k:
        return [str(n) for n in names]
    if names is not None:
        logger.warning("per_class names (%d) do not match %d classes; using indices", len(names), k)
    return [str(i) for i in range(k)]


def _per_class_values(result: dict, key: str | None) -> tuple[str, list[str], np.ndarray]:
    """(key, names, values) of the per-class scores to plot."""
    pc = result.get("per_class")
    if not isinstance(pc, dict):
        raise ValueError(f"result {result.get('dataset')}/{result.get('task')} has no 'per_class' data")
    names = pc.get("names")
    if key is None:
        candidates = [k for k in _PER_CLASS_KEYS if isinstance(pc.get(k), list)]
        candidates += [k for k, v in pc.items() if k != "names" and isinstance(v, list) and k not in candidates]
        if not candidates:
            raise ValueError(f"per_class has no list of scores besides 'names' (keys: {sorted(pc)})")
        key = candidates[0]
    if not isinstance(pc.get(key), list):
        raise ValueError(f"per_class has no list {key!r} (keys: {sorted(pc)})")
    vals = np.array([float(v) if _is_number(v) else np.nan for v in pc[key]], dtype=float)
    if not (isinstance(names, list) and len(names) == len(vals)):
        names = [str(i) for i in range(len(vals))]
    return key, [str(n) for n in names], vals


def plot_per_class(
    result: dict, path: str | Path, *, model: str | None = None, key: str | None = None, max_classes: int = 60
) -> Path:
    """Horizontal bar chart of per-class scores (recall or IoU), sorted, with the mean as a vertical line.

    Args:
        result: one entry of a run's ``results`` with ``per_class = {"names": [...], "<key>": [...]}``.
        path: PNG file to write (parent directories are created).
        model: model name for the title ``<model> · <dataset> · <task>``; default ``result.get("model")``.
        key: which per-class list to plot; default the first of iou, recall, acc, accuracy, ap, f1, then any list.
        max_classes: with more classes only the lowest and highest ``max_classes // 2`` are drawn (the mean still
            covers all). Classes with no score (NaN or null) are left out.

    Returns:
        The written path.

    Raises:
        ValueError: the result has no per-class scores.
    """
    key, names, vals = _per_class_values(result, key)
    ok = ~np.isnan(vals)
    if not ok.any():
        raise ValueError(f"per_class {key!r} has no finite values")
    names = [n for n, o in zip(names, ok) if o]
    vals = vals[ok]
    order = np.argsort(vals, kind="stable")  # ascending: barh draws index 0 at the bottom, so the best is on top
    n_all = len(order)
    note = f"{n_all} classes" + (f", {int((~ok).sum())} without data" if (~ok).any() else "")
    split = None
    if n_all > max_classes:
        split = max(max_classes // 2, 1)
        order = np.r_[order[:split], order[-split:]]
        note += f"; lowest and highest {split} shown"
    v, labels = vals[order], [_short(names[i]) for i in order]
    mean = float(vals.mean())

    fig = _new_figure(8.0, min(0.26 * len(order) + 1.8, 20.0))
    ax = fig.add_subplot()
    y = np.arange(len(order))
    bars = ax.barh(y, v, color="tab:blue")
    ax.set_yticks(y, labels, fontsize=8)
    ax.bar_label(bars, labels=[f"{x:.3g}" for x in v], padding=2, fontsize=7)
    if split is not None:  # where the omitted middle classes would be
        ax.axhline(split - 0.5, color="grey", linestyle=":", linewidth=1)
    ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3g}")
    if 0.0 <= v.min() and v.max() <= 1.0:
        ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"{key} ({note})")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_title(model or result.get("model"), result.get("dataset"), result.get("task")), fontsize=10)
    return _save(fig, path)


def plot_confusion(result: dict, path: str | Path, *, normalize: bool = True, model: str | None = None) -> Path:
    """Confusion-matrix heatmap (rows = true class, columns = predicted) with a colour bar.

    Args:
        result: one entry of a run's ``results`` with ``confusion`` (K x K counts); class names come from
            ``per_class.names`` when it has K entries, else indices.
        path: PNG file to write (parent directories are created).
        normalize: divide each row by its total (per-class recall on the diagonal; empty rows stay 0).
        model: model name for the title; default ``result.get("model")``.

    Returns:
        The written path. Tick labels are drawn for up to 40 classes (x labels rotated), cell values up to 12.

    Raises:
        ValueError: no confusion matrix, or it is not square.
    """
    raw = result.get("confusion")
    if raw is None:
        raise ValueError(f"result {result.get('dataset')}/{result.get('task')} has no 'confusion' matrix")
    cm = np.asarray(raw, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion must be a non-empty K x K matrix, got shape {cm.shape}")
    k = cm.shape[0]
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    names = _class_names(result, k)

    side = min(max(5.0, 0.28 * k + 3.0), 14.0) if k <= _MAX_CONFUSION_TICKS else 10.0
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of true class" if normalize else "count", shrink=0.8)
    if k <= _MAX_CONFUSION_TICKS:
        labels = [_short(n, 25) for n in names]
        ax.set_xticks(np.arange(k), labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(np.arange(k), labels, fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if k <= _MAX_CONFUSION_ANNOTATE:
        top = 1.0 if normalize else (cm.max() or 1.0)
        for i in range(k):
            for j in range(k):
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7, color="white" if cm[i, j] > 0.5 * top else "black"
                )
    ax.set_xlabel(f"predicted ({k} classes)")
    ax.set_ylabel("true")
    ax.set_title(_title(model or result.get("model"), result.get("dataset"), result.get("task")), fontsize=10)
    return _save(fig, path)


def _model_values(runs: Sequence[dict], dataset: str, task: str, metric: str) -> list[tuple[str, float]]:
    """(label, value) per model that reports ``metric`` for (dataset, task); newest run per (suite, model)."""
    kept, _ = _newest_runs(runs, log=False)
    found: list[tuple[str, str, float]] = []
    for run in kept:
        for res in run["results"]:
            v = res["metrics"].get(metric)
            if res["dataset"] == dataset and res["task"] == task and _is_number(v):
                found.append((run["model"], run["suite"], float(v)))
    models = [m for m, _, _ in found]
    return [(f"{m} [{s}]" if models.count(m) > 1 else m, v) for m, s, v in found]


def plot_models(runs: Sequence[dict], dataset: str, task: str, metric: str, path: str | Path) -> Path:
    """Bar chart comparing models on one metric of one (dataset, task), best first.

    Args:
        runs: runs as returned by ``load_results`` (newest run per (suite, model) is used).
        dataset: dataset name as in the results.
        task: task name as in the results.
        metric: metric key in the results' ``metrics``.
        path: PNG file to write (parent directories are created).

    Returns:
        The written path. Values in [0, 1] are drawn as percentages.

    Raises:
        ValueError: no run reports the metric for (dataset, task).
    """
    found = _model_values(runs, dataset, task, metric)
    if not found:
        raise ValueError(f"no run reports {metric!r} for dataset {dataset!r}, task {task!r}")
    found.sort(key=lambda lv: -lv[1] if not math.isnan(lv[1]) else math.inf)
    labels = [_short(lab) for lab, _ in found]
    vals = np.array([v for _, v in found])
    finite = vals[~np.isnan(vals)]
    percent = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
    shown = 100 * vals if percent else vals

    fig = _new_figure(max(6.0, 0.8 * len(found) + 2.5), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(found))
    bars = ax.bar(x, np.nan_to_num(shown), color=[f"C{i % 10}" for i in range(len(found))])
    ax.bar_label(bars, labels=[f"{s:.1f}" if percent else f"{s:.3g}" for s in shown], padding=2, fontsize=8)
    ax.set_xticks(x, labels, rotation=30 if len(found) > 3 else 0, ha="right" if len(found) > 3 else "center")
    ax.set_ylabel(f"{metric} (%)" if percent else metric)
    if percent:
        ax.set_ylim(0, 108)
    ax.set_title(_title(dataset, task, metric), fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------- report
def _slug(*parts: Any) -> str:
    """File-name-safe, deterministic slug.

    >>> _slug("ToyWorld CLIP", "zero_shot/classification")
    'toyworld-clip__zero_shot-classification'
    """
    out = []
    for p in parts:
        s = re.sub(r"[^a-z0-9._-]+", "-", str(p).lower()).strip("-.")
        out.append(s or "x")
    return "__".join(out)


class _Names:
    """Unique file names: a slug seen before gets ``-2``, ``-3``, ..."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, slug: str) -> str:
        name, i = slug, 2
        while name in self.used:
            name, i = f"{slug}-{i}", i + 1
        self.used.add(name)
        return name + ".png"


#: the open-vocabulary segmentation benchmarks in the papers' column order (``ovseg`` suite; data/ovseg.py)
OVSEG_COLUMNS = ("voc21", "context60", "coco_object", "voc20", "cityscapes", "context59", "ade20k", "coco_stuff")
_OVSEG_HEADERS = ("VOC21", "Context60", "COCO-Object", "VOC20", "Cityscapes", "Context59", "ADE20K", "COCO-Stuff")


def ovseg_rows(runs: Sequence[dict]) -> list[dict[str, Any]]:
    """One row per (model, method) over segmentation results on ovseg benchmarks: ``{"model", "method", "miou":
    {benchmark: mIoU in %}, "average"}``; the average is over the 8 benchmarks, ``None`` unless all 8 are there.
    Runs of the same model and method (e.g. one run per benchmark) are merged; for a benchmark reported twice, the
    newest run wins."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: str(r.get("started", ""))):
        for res in run["results"]:
            bench = res.get("benchmark")
            miou = res.get("metrics", {}).get("mIoU")
            if res.get("task") != "segmentation" or bench not in OVSEG_COLUMNS or not _is_number(miou):
                continue
            proto = res.get("protocol") or {}
            method = str(res.get("method") or proto.get("mode") or "?")
            key = (str(run["model"]), method)
            row = rows.setdefault(key, {"model": key[0], "method": method, "miou": {}})
            row["miou"][bench] = 100.0 * float(miou)
    out = []
    for row in rows.values():
        vals = [row["miou"].get(b) for b in OVSEG_COLUMNS]
        row["average"] = float(np.mean(vals)) if all(v is not None for v in vals) else None
        out.append(row)
    return out


def ovseg_table(rows: Sequence[dict[str, Any]]) -> str:
    """The papers' table in markdown: model, method, mIoU (%) per benchmark, average (``–`` where missing)."""
    head = ["model", "method", *_OVSEG_HEADERS, "Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['miou'][b]:.2f}" if b in r["miou"] else MISSING for b in OVSEG_COLUMNS]
        avg = f"{r['average']:.2f}" if r["average"] is not None else MISSING
        lines.append("| " + " | ".join([r["model"], r["method"], *cells, avg]) + " |")
    return "\n".join(lines)


def plot_ovseg(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars: mIoU (%) per benchmark, one bar per (model, method) row; returns ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no ovseg segmentation results to plot")
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(OVSEG_COLUMNS))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        vals = [r["miou"].get(b, np.nan) for b in OVSEG_COLUMNS]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, vals, width, label=_short(f"{r['model']} / {r['method']}"))
    ax.set_xticks(x, _OVSEG_HEADERS, rotation=20)
    ax.set_ylabel("mIoU (%)")
    ax.set_title("open-vocabulary segmentation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    return Path(path)


def build_report(paths: str | Path | Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` with tables and plots (PNGs under ``out_dir/plots/``) for results files.

    Plots: one model comparison per (dataset, task) reported by >= 2 models on its main metric (the first numeric
    key of ``metrics`` in the first run that has it); per run and result, a per-class bar chart when ``per_class``
    has scores and a confusion heatmap when ``confusion`` is present. Duplicate (suite, model) runs: the newest wins
    (noted in the report). File names are slugs of suite, model, dataset, task and metric; links are relative.

    Args:
        paths: results files and/or directories, as for ``load_results``.
        out_dir: output directory (created).

    Returns:
        Path of the written ``report.md``.
    """
    runs = load_results(paths)
    out = Path(out_dir)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    kept, _ = _newest_runs(runs, log=False)  # results_table below logs the duplicates
    name = _Names()
    n_plots = 0

    lines = [
        "# Evaluation report",
        "",
        f"{len(runs)} results files, {len(kept)} runs shown, {len({r['model'] for r in kept})} models, "
        f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
        "",
        "## Results",
        "",
        results_table(runs),
    ]

    ov = ovseg_rows(kept)
    if ov:
        file = plot_ovseg(ov, plots / name("ovseg"))
        lines += ["## Open-vocabulary segmentation", "", "mIoU (%) per benchmark; the average needs all eight.", "",
                  ovseg_table(ov), "", f"![ovseg]({file.relative_to(out).as_posix()})", ""]  # fmt: skip
        n_plots += 1

    groups: dict[tuple[str, str], str] = {}  # (dataset, task) -> main metric
    for run in kept:
        for res in run["results"]:
            main = next((k for k, v in res["metrics"].items() if _is_number(v)), None)
            if main is not None:
                groups.setdefault((res["dataset"], res["task"]), main)
    comparisons = []
    for (dataset, task), metric in groups.items():
        if len(_model_values(kept, dataset, task, metric)) < 2:
            continue
        file = plots / name(_slug("compare", dataset, task, metric))
        plot_models(kept, dataset, task, metric, file)
        comparisons.append(f"![{_title(dataset, task, metric)}]({file.relative_to(out).as_posix()})")
    if comparisons:
        lines += ["## Model comparison", "", *(f"{c}\n" for c in comparisons)]
        n_plots += len(comparisons)

    details = []
    for run in kept:
        for res in run["results"]:
            images = []
            base = (run["suite"], run["model"], res["dataset"], res["task"])
            pc = res.get("per_class")
            if isinstance(pc, dict) and any(isinstance(v, list) for k, v in pc.items() if k != "names"):
                try:
                    file = plot_per_class(res, plots / name(_slug("per_class", *base)), model=run["model"])
                    images.append(f"![per-class]({file.relative_to(out).as_posix()})")
                except ValueError as e:
                    logger.warning("no per-class plot for %s: %s", _title(*base), e)
            if res.get("confusion") is not None:
                try:
                    file = plot_confusion(res, plots / name(_slug("confusion", *base)), model=run["model"])
                    images.append(f"![confusion]({file.relative_to(out).as_posix()})")
                except ValueError as e:
                    logger.warning("no confusion plot for %s: %s", _title(*base), e)
            if images:
                details += [
                    f"### {_title(run['model'], res['dataset'], res['task'])} ({run['suite']})",
                    "",
                    *images,
                    "",
                ]
                n_plots += len(images)
    if details:
        lines += ["## Per-class results", "", *details]

    lines += ["## Sources", "", *(f"- `{r['_source']}`" for r in runs), ""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s and %d plots under %s", md, n_plots, plots)
    return md
