"""Evaluation reports: loading results files, markdown tables, plots and the full report on synthetic runs."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from visionfm.eval.report import (
    build_report,
    load_results,
    plot_confusion,
    plot_models,
    plot_per_class,
    results_table,
)

NAMES = ["red circle", "green square", "blue triangle", "yellow star"]


def _run(model: str, started: str, results: list[dict], **extra) -> dict:
    return {
        "format": "visionfm-eval/1",
        "suite": "toyworld",
        "model": model,
        "checkpoint_sha256": "ab12",
        "versions": {"visionfm": "0.1.0"},
        "world_size": 2,
        "started": started,
        "wall_s": 12.3,
        "results": results,
        **extra,
    }


def _zero_shot(acc1: float, acc5: float | None = None, detail: bool = False) -> dict:
    metrics = {"acc1": acc1} | ({"acc5": acc5} if acc5 is not None else {})
    res = {"task": "zero_shot_classification", "dataset": "toyworld-heldout", "metrics": metrics}
    res |= {"samples": 600, "skipped": 0, "protocol": {"templates": ["a photo of a {}."]}}
    if detail:
        res["per_class"] = {"names": NAMES, "recall": [0.5, 0.2, 0.75, 0.3]}
        res["confusion"] = [[3, 1, 1, 1], [2, 1, 1, 1], [0, 1, 6, 1], [1, 2, 1, 2]]
    return res


RETRIEVAL = {
    "task": "retrieval",
    "dataset": "toyworld-captions",
    "metrics": {"image_to_text_R@1": 0.2, "text_to_image_R@1": 0.3},
    "samples": 200,
    "skipped": 1,
}


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def results_dir(tmp_path) -> Path:
    """Two models on one suite (one nested deeper), plus an unrelated JSON file."""
    root = tmp_path / "results"
    _write(
        root / "toyworld__model-a.json",
        _run("model-a", "2026-11-22T01:00:00+00:00", [_zero_shot(0.437, 0.81, True), RETRIEVAL]),
    )
    b = _run("model-b", "2026-11-22T02:00:00+00:00", [_zero_shot(0.52)], world_size=1, wall_s=75.0)
    _write(root / "nested" / "deeper" / "toyworld__model-b.json", b)
    _write(root / "other.json", {"loss": [1.0, 0.5], "note": "not a results file"})
    return root


def test_load_results_recursive_and_skips_unrelated(results_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="visionfm.eval.report"):
        runs = load_results(results_dir)
    assert sorted(r["model"] for r in runs) == ["model-a", "model-b"]
    assert any("other.json" in m and "skipping" in m for m in caplog.messages)
    # a file listed on its own and again through its directory is loaded once
    again = load_results([results_dir / "toyworld__model-a.json", results_dir])
    assert len(again) == 2


def test_results_table(results_dir):
    table = results_table(load_results(results_dir))
    header = next(line for line in table.splitlines() if line.startswith("| suite | dataset"))
    assert header.endswith("| model-a | model-b |")
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[2:] for line in table.splitlines()}
    assert ("zero_shot_classification", "acc1", "43.7", "52.0") in rows
    assert ("zero_shot_classification", "acc5", "81.0", "–") in rows  # model-b lacks acc5
    assert ("retrieval", "text_to_image_R@1", "30.0", "–") in rows
    # runs table: results, samples, skipped (summed), wall time, world size
    assert ("2", "800", "1", "12.3 s", "2", "2026-11-22T01:00:00+00:00") in rows
    assert ("1", "600", "0", "1 min 15 s", "1", "2026-11-22T02:00:00+00:00") in rows
    assert "Note" not in table

    only = results_table(load_results(results_dir), metrics=["acc5", "acc1"])
    metric_rows = [line for line in only.splitlines() if "zero_shot_classification" in line]
    assert [r.split("|")[4].strip() for r in metric_rows] == ["acc5", "acc1"]
    assert "retrieval" not in only


def test_newest_run_wins_with_note(results_dir, tmp_path):
    # an older run of model-b, loaded *after* the newer one: the start time decides, not the load order
    old = _run("model-b", "2026-11-20T09:00:00+00:00", [_zero_shot(0.11)])
    old_path = _write(tmp_path / "zz_old" / "toyworld__model-b.json", old)
    table = results_table(load_results([results_dir, old_path.parent]))
    assert "52.0" in table and "11.0" not in table
    note = next(line for line in table.splitlines() if "Note" in line)
    assert "2 runs of model `model-b` on suite `toyworld`" in note and "2026-11-22T02:00:00+00:00" in note

    # the newer one also wins when it is loaded last
    newer = _run("model-b", "2026-11-23T00:00:00Z", [_zero_shot(0.99)])
    newer_path = _write(tmp_path / "zz_new" / "toyworld__model-b.json", newer)
    table = results_table(load_results([results_dir, old_path, newer_path]))
    assert "99.0" in table and "52.0" not in table and "3 runs of model `model-b`" in table


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) > 100


def test_build_report(results_dir, tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    md = build_report(results_dir, tmp_path / "report")
    assert md == tmp_path / "report" / "report.md"
    text = md.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        _png_ok(md.parent / link)
    names = sorted(Path(link).name for link in links)
    assert [n for n in names if n.startswith("confusion")] == [
        "confusion__toyworld__model-a__toyworld-heldout__zero_shot_classification.png"
    ]
    assert len([n for n in names if n.startswith("per_class")]) == 1
    # retrieval has only one model, so only zero-shot gets a comparison, on its main (first) metric
    assert [n for n in names if n.startswith("compare")] == [
        "compare__toyworld-heldout__zero_shot_classification__acc1.png"
    ]
    assert sorted(p.name for p in (md.parent / "plots").iterdir()) == names
    assert "| model-a | model-b |" in text and "43.7" in text
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules  # no global pyplot / backend state touched


def test_plots_direct(tmp_path):
    res = _zero_shot(0.437, 0.81, True)
    _png_ok(plot_per_class(res, tmp_path / "a" / "pc.png", model="m"))
    _png_ok(plot_confusion(res, tmp_path / "cm.png", normalize=False))
    k = 45  # > 40 classes: no tick labels; > max_classes: lowest and highest shown
    many = {
        "task": "segmentation",
        "dataset": "seg",
        "metrics": {"mIoU": 0.4},
        "per_class": {"names": [f"class {i}" for i in range(k)], "iou": [i / k for i in range(k - 1)] + [None]},
        "confusion": [[(i == j) * 5 + 1 for j in range(k)] for i in range(k)],
    }
    _png_ok(plot_per_class(many, tmp_path / "many_pc.png", max_classes=20))
    _png_ok(plot_confusion(many, tmp_path / "many_cm.png"))
    runs = [_run(m, "2026-01-01T00:00:00", [_zero_shot(v)]) for m, v in [("a", 0.3), ("b", 0.6), ("c", 0.45)]]
    _png_ok(plot_models(runs, "toyworld-heldout", "zero_shot_classification", "acc1", tmp_path / "cmp.png"))
    with pytest.raises(ValueError, match="per_class"):
        plot_per_class(RETRIEVAL, tmp_path / "x.png")
    with pytest.raises(ValueError, match="confusion"):
        plot_confusion(RETRIEVAL, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no run reports"):
        plot_models(runs, "toyworld-heldout", "zero_shot_classification", "acc5", tmp_path / "x.png")


def test_errors(tmp_path, results_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no visionfm-eval"):
        load_results(empty)
    _write(empty / "other.json", {"format": "something-else/1"})
    (empty / "broken.json").write_text("{not json")
    with pytest.raises(FileNotFoundError, match="no visionfm-eval"):
        build_report(empty, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "missing")
    # a file that claims the format but has no "results" is an error naming the file, not a silent skip
    bad = _write(
        results_dir / "sub" / "toyworld__broken.json", {"format": "visionfm-eval/1", "suite": "s", "model": "m"}
    )
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*'results'"):
        load_results(results_dir)
    with pytest.raises(ValueError, match="no runs"):
        results_table([])
