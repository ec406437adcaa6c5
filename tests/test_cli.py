"""The visionfm command line, through the console script and ``python -m visionfm``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import visionfm as vfm
from visionfm.cli import main
from visionfm.testing import tiny_checkpoint


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "backend", "source"]
    specs = vfm.list_models()
    assert len(specs) > 0
    rows = lines[2 : 2 + len(specs)]  # header, dashes, one row per model in registry order, then a blank line
    assert len(rows) == len(specs) and lines[2 + len(specs)] == ""
    for spec, row in zip(specs, rows, strict=True):
        assert row.split()[:2] == [spec.name, spec.family] and spec.source in row, spec.name
    assert f"{len(specs)} models in " in out


def test_models_filter_and_bad_family(capsys):
    assert main(["models", "--family", "sam"]) == 0
    out = capsys.readouterr().out
    assert "sam-vit-base" in out and "dinov2-small" not in out
    assert main(["models", "--family", "nope"]) == 2


def test_python_dash_m_is_the_same_cli():
    r = subprocess.run(
        [sys.executable, "-m", "visionfm", "models", "--family", "dinov2"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "facebook/dinov2-small" in r.stdout


def test_convert_and_info(tmp_path, tiny_root, capsys):
    src = tiny_checkpoint("clip", "open_clip", root=tiny_root)
    assert main(["convert", str(src), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert main(["info", str(tmp_path / "hf"), "--device", "cpu"]) == 0
    assert "transformers" in capsys.readouterr().out
    assert main(["info", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_run_zero_shot_classification(tmp_path, tiny_root, photos, capsys):
    import json

    from PIL import Image

    paths = []
    for i, p in enumerate(photos[:2]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(p).save(paths[-1])
    model = str(tiny_checkpoint("clip", "open_clip", root=tiny_root))
    args = ["run", "zero-shot-classification", *paths, "--model", model, "--labels", "cat", "dog", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["image", "label", "score"] and paths[1] in out
    records = json.loads((tmp_path / "out" / "zero-shot-classification.json").read_text())
    assert [r["image"] for r in records] == paths
    assert sum(d["score"] for d in records[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)
    assert main(["run", "zero-shot-classification", paths[0], "--model", model, "--device", "cpu"]) == 2


def test_run_mask_generation_writes_overlay_and_rle(tmp_path, tiny_root, photos, capsys):
    import json

    from PIL import Image

    path = str(tmp_path / "astronaut.png")
    Image.fromarray(photos[0]).save(path)
    model = str(tiny_checkpoint("sam", root=tiny_root))
    args = ["run", "mask-generation", path, "--model", model, "--points-per-side", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["image", "masks", "best", "IoU"]
    records = json.loads((tmp_path / "out" / "mask-generation.json").read_text())
    assert records[0]["image"] == path and len(records[0]["masks"]) == len(records[0]["scores"])
    assert Image.open(tmp_path / "out" / "astronaut_masks.png").size == (photos[0].shape[1], photos[0].shape[0])


def test_run_zero_shot_seg_and_grounding_write_maps_overlays_and_json(tmp_path, tiny_root, photos, capsys):
    import json

    import numpy as np
    from PIL import Image

    path = str(tmp_path / "chelsea.png")
    Image.fromarray(photos[1]).save(path)
    model = str(tiny_checkpoint("clip", "open_clip", root=tiny_root))
    out = tmp_path / "out"
    args = ["run", "zero-shot-seg", path, "--model", model, "--labels", "cat,sofa", "--device", "cpu"]
    assert main([*args, "--templates", "single", "--mode", "clearclip", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["image", "labels"]
    rec = json.loads((out / "zero-shot-seg.json").read_text())[0]
    assert rec["labels"] == ["background", "cat", "sofa"] and rec["protocol"]["mode"] == "clearclip"
    labels = np.asarray(Image.open(out / "chelsea_labels.png"))
    assert labels.shape == photos[1].shape[:2] and labels.max() <= 2
    assert Image.open(out / "chelsea_overlay.png").size == (photos[1].shape[1], photos[1].shape[0])
    b16 = str(tiny_checkpoint("clip-b16", root=tiny_root))  # a preset brings its method's settings and classes
    preset = ["run", "zero-shot-seg", path, "--model", b16, "--preset", "clearclip-voc20", "--templates", "single"]
    assert main([*preset, "--device", "cpu", "--out", str(tmp_path / "preset")]) == 0
    rec = json.loads((tmp_path / "preset" / "zero-shot-seg.json").read_text())[0]
    assert rec["protocol"]["preset"] == "clearclip-voc20" and rec["protocol"]["logit_scale"] == 50.0
    assert rec["labels"][0] == "aeroplane" and len(rec["labels"]) == 20
    assert main(["run", "grounding", path, "--model", model, "--labels", "a cat", "--preset", "naclip-voc21"]) != 0
    assert "--preset is a zero-shot-seg or generation option" in capsys.readouterr().err
    args = ["run", "grounding", path, "--model", model, "--labels", "a cat", "a sofa", "--device", "cpu"]
    assert main([*args, "--templates", "single", "--threshold", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["image", "phrase", "score", "box", "xyxy"]
    rec = json.loads((out / "grounding.json").read_text())[0]
    # the CLI writes what the pipeline finds: threshold 0 keeps every region, so at least one detection
    grounding = vfm.pipeline("grounding", model=model, device="cpu", templates="single")
    want = grounding([path], phrases=["a cat", "a sofa"], threshold=0)[0].to_dict()
    assert len(want) > 0 and len(rec["detections"]) == len(want)
    assert len(printed) == 2 + len(want) + 2 and printed[2 + len(want)] == ""  # one table row per detection
    for d, w, row in zip(rec["detections"], want, printed[2 : 2 + len(want)], strict=True):
        assert d["label"] == w["label"] and d["label"] in ("a cat", "a sofa") and f"  {d['label']}  " in row
        assert d["score"] == pytest.approx(w["score"], abs=1e-6) and f"{d['score']:.3f}" in row
        assert d["box"] == pytest.approx(w["box"], abs=1e-4) and d["mask"] == w["mask"]
    assert (out / "chelsea_grounding.png").exists()


def test_run_generation_writes_images_grid_and_json(tmp_path, tiny_root, capsys):
    import json

    from PIL import Image

    model = str(tiny_checkpoint("dit", root=tiny_root))
    args = ["run", "generation", "--model", model, "--labels", "goldfish,3", "--num-images", "2", "--steps", "2"]
    assert main([*args, "--device", "cpu", "--out", str(tmp_path / "g")]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["#", "class", "id", "seed"]
    rec = json.loads((tmp_path / "g" / "generation.json").read_text())[0]
    assert rec["labels"] == [1, 1, 3, 3] and rec["protocol"]["steps"] == 2
    assert len(list((tmp_path / "g").glob("0*_class*_seed*.png"))) == 4
    assert Image.open(tmp_path / "g" / "grid.png").size == (2 * 16, 2 * 16)
    assert main(["run", "mask-generation", "--model", model]) == 2  # image tasks need images


def test_run_generation_with_prompts_writes_images_grid_and_json(tmp_path, tiny_root, capsys):
    import json

    from PIL import Image

    model = str(tiny_checkpoint("pixart", root=tiny_root))
    args = ["run", "generation", "--model", model, "--prompts", "a red square; a blue circle, at night", "--steps", "2"]
    assert main([*args, "--num-images", "2", "--device", "cpu", "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "prompt", "seed"] and "a blue circle, at night" in out[4]
    rec = json.loads((tmp_path / "g" / "generation.json").read_text())[0]
    assert rec["prompts"] == ["a red square"] * 2 + ["a blue circle, at night"] * 2
    assert rec["protocol"]["kind"] == "text-to-image" and rec["protocol"]["steps"] == 2 and rec["seeds"] == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "g").glob("0*_prompt*_seed*.png"))[-1] == "0003_prompt1_seed3.png"
    assert Image.open(tmp_path / "g" / "grid.png").size == (2 * 16, 2 * 16)
    assert main(["run", "generation", "--model", model, "--labels", "goldfish", "--device", "cpu"]) == 2
    dit = str(tiny_checkpoint("dit", root=tiny_root))
    assert main(["run", "generation", "--model", dit, "--prompts", "a cat", "--device", "cpu"]) == 2


def test_run_zero_shot_seg_keeps_pictures_of_images_with_the_same_stem(tmp_path, tiny_root, photos, capsys):
    from PIL import Image

    paths = [tmp_path / "x" / "pic.png", tmp_path / "y" / "pic.jpg"]
    for p, photo in zip(paths, photos[:2]):
        p.parent.mkdir()
        Image.fromarray(photo).save(p)
    model = str(tiny_checkpoint("clip", "open_clip", root=tiny_root))
    out = tmp_path / "out"
    args = ["run", "zero-shot-seg", *map(str, paths), "--model", model, "--labels", "cat,sofa", "--device", "cpu"]
    assert main([*args, "--templates", "single", "--out", str(out)]) == 0
    capsys.readouterr()
    for kind in ("labels", "colours", "overlay"):
        files = sorted(out.glob(f"pic*_{kind}.png"))
        assert len(files) == 2, files
        sizes = {Image.open(f).size for f in files}
        assert sizes == {(p.shape[1], p.shape[0]) for p in photos[:2]}  # one picture per input image
