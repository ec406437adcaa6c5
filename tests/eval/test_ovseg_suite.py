"""The ``ovseg`` suite: the 8 benchmarks in their layouts, one zero-shot-seg task each, and the papers' table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import visionfm as vfm
from visionfm.cli import main
from visionfm.eval.report import OVSEG_COLUMNS, build_report, ovseg_rows
from visionfm.eval.runner import Runner
from visionfm.eval.suite import load_suite
from visionfm.pipelines.seg_presets import get_preset
from visionfm.testing import tiny_checkpoint
from visionfm.testing.ovseg import write_fake_benchmark
from visionfm.training.metrics import SegmentationMetric

ROOTS = {"voc21": "VOCdevkit/VOC2012", "context60": "VOCdevkit/VOC2010", "coco_object": "coco_stuff164k",
         "voc20": "VOCdevkit/VOC2012", "cityscapes": "cityscapes", "context59": "VOCdevkit/VOC2010",
         "ade20k": "ade/ADEChallengeData2016", "coco_stuff": "coco_stuff164k"}  # fmt: skip
FAST = ["tasks.*.templates=single", "tasks.*.short_side=64", "tasks.*.window=224", "tasks.*.stride=112"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """mmseg's default data_root folders under one root, as a user has them (VOC2012 holds voc21 and voc20, COCO-Stuff
    164k holds coco_stuff and coco_object)."""
    root = tmp_path_factory.mktemp("data")
    for bench in ("voc21", "context60", "coco_object", "cityscapes", "ade20k"):
        got = write_fake_benchmark(bench, root / "tmp" / bench, num=3)
        target = root / ROOTS[bench]
        target.parent.mkdir(parents=True, exist_ok=True)
        got.rename(target)
    return root


@pytest.fixture(scope="module")
def clip_dir(tiny_root):
    return tiny_checkpoint("clip-b16", root=tiny_root)


def _suite(data_root: Path, *sets: str):
    return load_suite("ovseg", overrides={"set": [*FAST, *sets], "data_root": str(data_root)})


def test_the_suite_reads_every_benchmark_in_its_standard_layout(data_root):
    suite = _suite(data_root)
    assert [t["name"] for t in suite.tasks] == list(OVSEG_COLUMNS)
    assert all(t["method"] == "naclip" for t in suite.tasks)
    from visionfm.data.datasets import build_dataset

    for name, spec in suite.datasets.items():
        ds = build_dataset(name, spec, root=suite.root)
        assert len(ds) == 3 and ds.benchmark.name == name
        sample = ds[0]
        assert sample["error"] is None and sample["target"].shape == tuple(sample["image"].shape[-2:])


def test_suite_run_gives_the_pipeline_mious_and_the_papers_table(data_root, clip_dir, tmp_path):
    suite = _suite(data_root, "tasks.*.method=sclip")
    report = Runner(suite, str(clip_dir), tmp_path / "run", batch_size=4).run()
    res = {r["name"]: r for r in report["results"]}
    assert list(res) == list(OVSEG_COLUMNS) and all("error" not in r for r in res.values())
    for name, r in res.items():
        assert r["benchmark"] == name and r["method"] == "sclip" and r["samples"] == 3
        assert r["protocol"]["preset"] == f"sclip-{name}" and len(r["per_class"]["names"]) == len(
            get_preset(f"sclip-{name}").labels
        ) + int(bool(get_preset(f"sclip-{name}").background))
    # VOC21 by hand: the preset pipeline on each image, confusion over the benchmark's 21 labels, 255 ignored
    from visionfm.data.datasets import build_dataset

    ds = build_dataset("voc21", suite.datasets["voc21"], root=suite.root)
    seg = vfm.pipeline("zero-shot-seg", model=str(clip_dir), device="cpu", preset="sclip-voc21", templates="single",
                       short_side=64, window=224, stride=112)  # fmt: skip
    metric = SegmentationMetric(21)
    for i in range(len(ds)):
        s = ds[i]
        metric.update(seg(s["image"]).label_map, np.asarray(s["target"]))
    assert res["voc21"]["metrics"]["mIoU"] == pytest.approx(metric.compute()["mIoU"], abs=1e-12)
    assert 255 in np.asarray(ds[0]["target"])  # the ignored label is there, and was ignored
    # the papers' table: one row, 8 columns and their average
    rows = ovseg_rows([report | {"model": "tiny"}])
    assert len(rows) == 1 and rows[0]["method"] == "sclip" and set(rows[0]["miou"]) == set(OVSEG_COLUMNS)
    want = np.mean([100 * res[b]["metrics"]["mIoU"] for b in OVSEG_COLUMNS])
    assert rows[0]["average"] == pytest.approx(want)
    md = build_report(tmp_path / "run", tmp_path / "report").read_text()
    assert "## Open-vocabulary segmentation" in md and "| VOC21 | Context60 |" in md and "plots/ovseg.png" in md
    assert (tmp_path / "report" / "plots" / "ovseg.png").is_file()


def test_without_a_method_the_dataset_classes_are_the_labels(data_root, clip_dir, tmp_path):
    suite = _suite(data_root, "tasks.*.method=null", "tasks.*.mode=maskclip", "datasets.*.num=1")
    report = Runner(suite, str(clip_dir), tmp_path / "plain", batch_size=4).run()
    res = {r["name"]: r for r in report["results"]}
    assert res["voc21"]["per_class"]["names"][0] == "background" and len(res["voc21"]["per_class"]["names"]) == 21
    assert res["ade20k"]["per_class"]["names"][0] == "wall" and res["ade20k"]["method"] == "maskclip"
    assert "background" not in res["ade20k"]["per_class"]["names"] and res["voc21"]["protocol"]["preset"] is None


def test_cli_limit_and_world_sizes_agree(data_root, clip_dir, tmp_path):
    """``--limit`` caps each benchmark; 1 and 2 processes give the same numbers (every image scored once)."""
    args = ["ovseg", "--model", str(clip_dir), "--data-root", str(data_root), "--limit", "2", "--batch-size", "2"]
    sets = [x for s in [*FAST, "tasks.*.method=clearclip"] for x in ("--set", s)]
    assert main(["eval", *args, *sets, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(next((tmp_path / "one").glob("ovseg__*.json")).read_text())
    assert [r["samples"] for r in one["results"]] == [2] * 8
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "visionfm",
        "eval",
        *args,
        *sets,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(next((tmp_path / "two").glob("ovseg__*.json")).read_text())
    assert two["world_size"] == 2
    assert [(r["name"], r["samples"], r["metrics"]) for r in two["results"]] == [
        (r["name"], r["samples"], r["metrics"]) for r in one["results"]
    ]


def test_bad_data_root_and_a_method_on_a_plain_dataset_are_refused(tmp_path, clip_dir):
    with pytest.raises(ValueError, match="data root .* is not a directory"):
        load_suite("ovseg", overrides={"data_root": str(tmp_path / "nope")})
    (tmp_path / "cls" / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "cls" / "cat" / "a.png")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ndatasets: {d: {source: imagefolder, path: cls}}\n"
                     "tasks: [{name: t, task: segmentation, dataset: d, method: naclip}]\n")  # fmt: skip
    with pytest.raises(ValueError, match="'method' needs an ovseg benchmark dataset"):
        Runner(load_suite(suite), str(clip_dir), tmp_path / "o").run()


def test_sam3_runs_the_suite_with_the_presets_labels(data_root, tiny_root, tmp_path):
    """SAM 3 (issue 19): the same suite, the preset's class names and background words, one row per benchmark;
    VOC21 equals the SAM 3 zero-shot-seg pipeline run by hand."""
    sam3 = tiny_checkpoint("sam3", root=tiny_root)
    suite = load_suite("ovseg", overrides={"set": ["datasets.*.num=1"], "data_root": str(data_root)})
    report = Runner(suite, str(sam3), tmp_path / "sam3", batch_size=2).run()
    res = {r["name"]: r for r in report["results"]}
    assert all("error" not in r for r in res.values()), [r.get("error") for r in res.values()]
    assert res["voc21"]["method"] == "sam3" and res["voc21"]["protocol"]["preset"] == "naclip-voc21"
    assert len(res["voc21"]["per_class"]["names"]) == 21
    from visionfm.data.datasets import build_dataset

    s = build_dataset("voc21", suite.datasets["voc21"], root=suite.root)[0]
    seg = vfm.pipeline("zero-shot-seg", model=str(sam3), device="cpu", preset="naclip-voc21")
    metric = SegmentationMetric(21)
    metric.update(seg(s["image"]).label_map, np.asarray(s["target"]))
    assert res["voc21"]["metrics"]["mIoU"] == pytest.approx(metric.compute()["mIoU"], abs=1e-12)
    bad = load_suite("ovseg", overrides={"set": ["datasets.*.num=1", "tasks.*.window=224"],
                                         "data_root": str(data_root)})  # fmt: skip
    with pytest.raises(ValueError, match=r"options \['window'\] are CLIP zero-shot-seg options"):
        Runner(bad, str(sam3), tmp_path / "bad", batch_size=2).run()
