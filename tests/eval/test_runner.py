"""Evaluation suites: exact results at any world size, resume after SIGKILL, bad samples, sources, reports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from visionfm.eval.runner import Runner
from visionfm.eval.suite import load_suite, parse_suite, shipped_suites
from visionfm.testing import tiny_checkpoint

# sizes chosen so that no dataset is a multiple of world size x batch size (4) or of the chunk size (10)
SUITE = {
    "name": "tiny",
    "datasets": {
        "a": {"source": "toyworld", "split": "test", "num": 37, "label": "colour", "image_size": 48},
        "b": {"source": "toyworld", "split": "train", "num": 23, "label": "colour", "image_size": 48},
        "caps": {"source": "toyworld", "split": "val", "num": 19, "label": "none", "max_objects": 2, "image_size": 48},
        "seg": {"source": "toyworld", "split": "heldout", "num": 11, "label": "none", "max_objects": 2,
                "image_size": 48, "target": "semantic_colour",
                "classnames": ["red", "green", "blue", "yellow", "purple", "orange"]},
    },
    "tasks": [
        {"task": "zero_shot_classification", "dataset": "a", "templates": "single"},
        {"task": "knn", "train": "b", "test": "a", "k": 5},
        {"task": "linear_probe", "train": "b", "test": "a", "epochs": 20},
        {"task": "retrieval", "dataset": "caps"},
        {"task": "segmentation", "dataset": "seg", "mode": "maskclip", "templates": "single", "cos_thresh": 0.0},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def clip_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


@pytest.fixture()
def suite_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def _results(out: Path) -> dict:
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _summary(report: dict) -> list:
    return [(r["name"], r["samples"], r["skipped"], r["metrics"]) for r in report["results"]]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def test_world_sizes_1_2_3_give_identical_metrics_and_counts(clip_dir, suite_file, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    reports = {}
    for n in (1, 2, 3):
        out = tmp_path / f"ws{n}"
        cmd = [str(torchrun), "--nproc_per_node", str(n), "-m", "visionfm", "eval", str(suite_file), "--model",
               str(clip_dir), "--out", str(out), "--batch-size", "4", "--chunk-size", "10"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[n] = _results(out)
        assert reports[n]["world_size"] == n
    counts = [r["samples"] for r in reports[1]["results"]]
    assert counts == [37, 37, 37, 19, 11]  # every sample exactly once, no padding duplicates
    assert _summary(reports[2]) == _summary(reports[1])
    assert _summary(reports[3]) == _summary(reports[1])


_KILL_PROG = """
import os, signal, sys
from visionfm.eval.runner import Runner
from visionfm.eval.suite import load_suite
def die(n):
    if n == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
Runner(load_suite(sys.argv[1]), sys.argv[2], sys.argv[3], batch_size=4, chunk_size=10, after_chunk=die).run()
"""


def test_killed_run_resumes_with_the_same_metrics(clip_dir, suite_file, tmp_path):
    full = Runner(load_suite(suite_file), str(clip_dir), tmp_path / "full", batch_size=4, chunk_size=10).run()
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _KILL_PROG, str(suite_file), str(clip_dir), str(out), "6"],
                          env=_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = sorted(p.name for p in (out / "cache").rglob("chunk_*.safetensors"))
    assert len(done) == 6 and not list(out.glob("*.json"))  # killed mid-way: some chunks, no results
    finished = []
    resumed = Runner(load_suite(suite_file), str(clip_dir), out, batch_size=4, chunk_size=10,
                     after_chunk=finished.append).run()  # fmt: skip
    assert _summary(resumed) == _summary(full)
    total_chunks = len(list((tmp_path / "full" / "cache").rglob("chunk_*.safetensors")))
    assert len(finished) == total_chunks - 6  # the resumed run computed only the missing chunks


def test_second_run_reuses_cached_features(clip_dir, suite_file, tmp_path, monkeypatch):
    Runner(load_suite(suite_file), str(clip_dir), tmp_path, batch_size=8).run()
    runner = Runner(load_suite(suite_file), str(clip_dir), tmp_path, batch_size=8)
    calls = []
    monkeypatch.setattr(runner.encoder, "forward", lambda *a, **k: calls.append(1))
    again = runner.run()
    assert calls == []  # nothing was encoded again
    assert [r["samples"] for r in again["results"]] == [37, 37, 37, 19, 11]


def test_bad_samples_are_skipped_and_counted(clip_dir, tmp_path):
    from visionfm.toyworld.export import export_imagefolder

    root = export_imagefolder(tmp_path / "folder", "test", 30, label="colour", progress=False)
    files = sorted(root.rglob("*.png"))
    files[3].write_bytes(b"not a png at all")
    files[17].write_bytes(b"")
    suite = parse_suite({"name": "bad", "datasets": {"f": {"source": "imagefolder", "path": str(root)}},
                         "tasks": [{"task": "zero_shot_classification", "dataset": "f", "templates": "single"}]})  # fmt: skip
    rep = Runner(suite, str(clip_dir), tmp_path / "out", batch_size=4, chunk_size=8).run()
    res = rep["results"][0]
    assert res["skipped"] == 2 and res["samples"] == 28
    assert sum(map(sum, res["confusion"])) == 28


def test_sources_imagefolder_hf_webdataset_coco_agree(clip_dir, tmp_path):
    from visionfm.toyworld.export import export_coco, export_imagefolder, export_webdataset

    folder = export_imagefolder(tmp_path / "folder", "test", 20, label="colour", progress=False)
    shards = export_webdataset(tmp_path / "wds", "test", 12, shard_size=5, max_objects=2, progress=False)
    coco = export_coco(tmp_path / "coco", "val", 6, max_objects=2, progress=False)
    datasets = {
        "folder": {"source": "imagefolder", "path": str(folder)},
        "hf": {"source": "hf", "path": "imagefolder", "data_dir": str(folder), "split": "test"},
        "wds": {"source": "webdataset", "shards": sorted(str(p) for p in Path(shards).glob("*.tar"))},
        "coco": {"source": "coco", "annotations": str(coco / "instances.json"), "images": str(coco / "images")},
    }
    tasks = [
        {"name": "zs-folder", "task": "zero_shot_classification", "dataset": "folder", "templates": "single"},
        {"name": "zs-hf", "task": "zero_shot_classification", "dataset": "hf", "templates": "single"},
        {"task": "retrieval", "dataset": "wds", "captions_per_image": 1},
        {"task": "detection", "dataset": "coco", "templates": "single", "cos_thresh": -1.0},
    ]
    rep = Runner(parse_suite({"name": "src", "datasets": datasets, "tasks": tasks}), str(clip_dir), tmp_path / "o",
                 batch_size=4).run()  # fmt: skip
    by = {r["name"]: r for r in rep["results"]}
    assert by["zs-folder"]["samples"] == by["zs-hf"]["samples"] == 20
    assert by["zs-folder"]["metrics"] == by["zs-hf"]["metrics"]  # same images, same class order, same numbers
    assert by["retrieval/wds"]["samples"] == 12 and by["retrieval/wds"]["texts"] == 12
    det = by["detection/coco"]
    assert det["samples"] == 6 and set(det["metrics"]) >= {"box_AP", "box_AP50"} and 0 <= det["metrics"]["box_AP"] <= 1


def test_results_file_records_the_run(clip_dir, suite_file, tmp_path):
    rep = Runner(load_suite(suite_file), str(clip_dir), tmp_path, batch_size=8).run()
    on_disk = _results(tmp_path)
    assert on_disk["checkpoint_sha256"] == rep["checkpoint_sha256"] and len(rep["checkpoint_sha256"]) == 64
    assert on_disk["suite"] == "tiny" and on_disk["versions"]["torch"] and on_disk["wall_s"] > 0
    assert on_disk["results"][0]["protocol"]["templates"] == "single"
    assert on_disk["results"][4]["protocol"]["mode"] == "maskclip"


def test_suite_validation_and_shipped_suites(tmp_path):
    assert "toyworld" in shipped_suites()
    assert load_suite("toyworld").tasks[0]["task"] == "zero_shot_classification"
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        load_suite("nope")
    bad = {"datasets": {"a": {"source": "toyworld"}}, "tasks": [{"task": "knn", "train": "a", "test": "zzz"}]}
    with pytest.raises(ValueError, match="needs test"):
        parse_suite(bad)
    with pytest.raises(ValueError, match="known tasks"):
        parse_suite({"datasets": {"a": {"source": "toyworld"}}, "tasks": [{"task": "guess", "dataset": "a"}]})
    with pytest.raises(ValueError, match="source must be one of"):
        from visionfm.data.datasets import build_dataset

        build_dataset("x", {"source": "ftp"})
    capped = load_suite("toyworld", overrides={"num": 5})
    assert all(d.get("num", 5) <= 5 for d in capped.datasets.values())


def test_eval_cli_and_report(clip_dir, suite_file, tmp_path, capsys):
    from PIL import Image

    from visionfm.cli import main

    assert (
        main(["eval", str(suite_file), "--model", str(clip_dir), "--out", str(tmp_path / "r"), "--batch-size", "8"])
        == 0
    )
    out = capsys.readouterr().out
    assert "zero_shot_classification/a" in out and "segmentation/seg" in out
    assert main(["eval", "--report", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "tiny" in md and "acc1" in md
    pngs = list((tmp_path / "r" / "plots").glob("*.png"))
    assert pngs and all(Image.open(p).size[0] > 100 for p in pngs)


@pytest.mark.slow
def test_toyworld_suite_reproduces_the_demo(tmp_path):
    """The shipped toyworld suite on the toy CLIP gives the demo's (docs/toyworld.md) zero-shot numbers."""
    from visionfm.foundation.loading import load_encoder
    from visionfm.toyworld.demo import evaluate
    from visionfm.toyworld.models import ensure_toy_clip

    path = ensure_toy_clip()
    rep = Runner("toyworld", str(path), tmp_path).run()
    got = {r["name"]: r["metrics"]["acc1"] for r in rep["results"] if r["task"] == "zero_shot_classification"}
    demo, _ = evaluate(load_encoder(str(path), device="cpu"))
    want = {(d.task, d.images): d.top1 for d in demo}
    assert got["zero-shot colour+shape (held-out)"] == pytest.approx(want[("colour+shape", "heldout compositions")])
    assert got["zero-shot colour+shape (seen)"] == pytest.approx(want[("colour+shape", "test compositions")])
    assert got["zero-shot colour (held-out)"] == pytest.approx(want[("colour", "heldout compositions")])
    assert got["zero-shot shape prompts (held-out)"] == pytest.approx(
        want[("shape (shape prompts)", "heldout compositions")]
    )
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    assert np.isfinite([r["metrics"][next(iter(r["metrics"]))] for r in rep["results"]]).all()


# -- cache keys, result names, damaged chunks, unusable data, argument checks ---------------------------------------
def _folder(tmp_path: Path, num: int = 47) -> Path:
    from visionfm.toyworld.export import export_imagefolder

    return export_imagefolder(tmp_path / "folder", "test", num, label="colour", image_size=32, progress=False)


def _zs_suite(folder: Path, path: Path) -> Path:
    spec = {"name": "fold", "datasets": {"f": {"source": "imagefolder", "path": str(folder)}},
            "tasks": [{"task": "zero_shot_classification", "dataset": "f", "templates": "single"}]}  # fmt: skip
    path.write_text(yaml.safe_dump(spec))
    return path


def _scores(report: dict) -> list:
    return [(r["name"], r["samples"], r["skipped"], r["metrics"], r.get("confusion")) for r in report["results"]]


def test_rerun_after_the_imagefolder_changed_scores_the_new_listing(clip_dir, tmp_path):
    from visionfm.cli import main

    folder = _folder(tmp_path)
    suite = _zs_suite(folder, tmp_path / "fold.yaml")
    args = ["eval", str(suite), "--model", str(clip_dir), "--batch-size", "8", "--chunk-size", "16", "--out"]
    assert main([*args, str(tmp_path / "out")]) == 0
    assert _results(tmp_path / "out")["results"][0]["samples"] == 47
    (folder / "zz-new").mkdir()  # one more class with one image: 48 samples, still 3 chunks of 16
    shutil.copy(sorted(folder.rglob("*.png"))[0], folder / "zz-new" / "extra.png")
    assert main([*args, str(tmp_path / "out")]) == 0
    rerun = _results(tmp_path / "out")
    assert rerun["results"][0]["samples"] == 48 and sum(rerun["results"][0]["confusion"][-1]) == 1
    assert main([*args, str(tmp_path / "fresh")]) == 0
    assert _scores(rerun) == _scores(_results(tmp_path / "fresh"))  # the same as a run with no cache


def test_rerun_with_another_chunk_size_counts_every_sample_once(clip_dir, tmp_path):
    suite = load_suite(_zs_suite(_folder(tmp_path), tmp_path / "fold.yaml"))
    first = Runner(suite, str(clip_dir), tmp_path / "out", batch_size=8, chunk_size=16).run()
    again = Runner(suite, str(clip_dir), tmp_path / "out", batch_size=8, chunk_size=10).run()
    assert first["results"][0]["samples"] == again["results"][0]["samples"] == 47
    assert _scores(again) == _scores(first)


def test_checkpoints_sharing_a_directory_name_get_their_own_results_files(clip_dir, tmp_path):
    from visionfm.cli import main

    suite = _zs_suite(_folder(tmp_path, 12), tmp_path / "fold.yaml")
    models = [tmp_path / "runs" / exp / "final" for exp in ("exp1", "exp2")]
    out = tmp_path / "out"
    for m in models:
        shutil.copytree(clip_dir, m)
        assert main(["eval", str(suite), "--model", str(m), "--out", str(out), "--batch-size", "8"]) == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and all(f.name.startswith("fold__final") for f in files), files
    assert sorted(json.loads(f.read_text())["model"] for f in files) == sorted(map(str, models))
    assert main(["eval", "--report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert str(models[0]) in md and str(models[1]) in md


def test_truncated_chunk_file_is_recomputed_with_a_warning(clip_dir, tmp_path, caplog):
    suite = load_suite(_zs_suite(_folder(tmp_path), tmp_path / "fold.yaml"))
    first = Runner(suite, str(clip_dir), tmp_path, batch_size=8, chunk_size=16).run()
    chunks = sorted((tmp_path / "cache").rglob("chunk_*.safetensors"))
    assert len(chunks) == 3
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # a half-written / truncated file
    finished = []
    with caplog.at_level("WARNING", logger="visionfm.eval.runner"):
        again = Runner(suite, str(clip_dir), tmp_path, batch_size=8, chunk_size=16, after_chunk=finished.append).run()
    assert _scores(again) == _scores(first) and len(finished) == 1  # only the damaged chunk was computed again
    assert any(chunks[1].name in r.getMessage() for r in caplog.records)


def test_unreadable_dataset_is_an_error_result_and_other_tasks_still_run(clip_dir, tmp_path, capsys):
    from visionfm.cli import main

    good = _folder(tmp_path, 12)
    bad = _folder(tmp_path / "b", 6)
    for f in bad.rglob("*.png"):
        f.write_bytes(b"not an image")
    spec = {"name": "mixed",
            "datasets": {"good": {"source": "imagefolder", "path": str(good)},
                         "bad": {"source": "imagefolder", "path": str(bad)}},
            "tasks": [{"task": "zero_shot_classification", "dataset": "good", "templates": "single"},
                      {"task": "knn", "train": "bad", "test": "good", "k": 3},
                      {"task": "zero_shot_classification", "dataset": "bad", "templates": "single"},
                      {"task": "linear_probe", "train": "bad", "test": "good", "epochs": 5},
                      {"name": "last", "task": "knn", "train": "good", "test": "good", "k": 3}]}  # fmt: skip
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    args = ["eval", str(tmp_path / "mixed.yaml"), "--model", str(clip_dir), "--out", str(out), "--batch-size", "8"]
    assert main(args) == 1
    printed = capsys.readouterr()
    res = _results(out)["results"]
    assert [("error" in r) for r in res] == [False, True, True, True, False]
    assert res[0]["metrics"]["acc1"] >= 0 and res[4]["metrics"]["acc1"] >= 0
    for r in res[1:4]:
        assert r["name"] in r["error"] and "'bad'" in r["error"] and r["metrics"] == {}, r
        assert r["name"] in printed.out and "error" in printed.out
    assert "3 of 5 tasks failed" in printed.err


def test_runner_rejects_non_positive_sizes(clip_dir, suite_file, capsys):
    from visionfm.cli import main

    for arg in ("batch_size", "chunk_size"):
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match=arg):
                Runner(load_suite(suite_file), str(clip_dir), "unused", **{arg: bad})
    with pytest.raises(ValueError, match="num_workers"):
        Runner(load_suite(suite_file), str(clip_dir), "unused", num_workers=-1)
    for flag in ("--chunk-size", "--batch-size"):
        assert main(["eval", str(suite_file), "--model", str(clip_dir), flag, "0"]) == 2
        assert flag.lstrip("-").replace("-", "_") in capsys.readouterr().err


def test_map_chunks_accepts_a_dataset_without_ids(clip_dir, tmp_path):
    import torch

    class Plan(torch.utils.data.Dataset):  # like a generation plan: no ids, no class names, no images
        labels = [0, 1, 1, 2, 0]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict:
            return {"index": i, "id": f"s{i}", "image": None, "label": self.labels[i], "captions": [], "target": None,
                    "error": None}  # fmt: skip

    runner = Runner(load_suite("toyworld"), str(clip_dir), tmp_path, batch_size=2, chunk_size=2)
    fn = lambda samples: {"twice": torch.tensor([2 * s["label"] for s in samples])}  # noqa: E731
    rows = runner.map_chunks("plan", Plan(), fn, "plan")
    assert rows["twice"].tolist() == [0, 2, 2, 4, 0] and rows["valid"].all()
    again = Runner(load_suite("toyworld"), str(clip_dir), tmp_path, batch_size=2, chunk_size=2, after_chunk=print)
    assert again.map_chunks("plan", Plan(), fn, "plan")["twice"].tolist() == [0, 2, 2, 4, 0]
    assert again._chunks_done == 0  # read back from the cache
