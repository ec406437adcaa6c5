"""The offline demo (fast, with a tiny recipe) and the toyworld CLIP's zero-shot accuracy (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import visionfm as vfm
from visionfm.testing import TINY_TOY_CLIP_OVERRIDES, TINY_TOY_SAM_OVERRIDES, TINY_TOY_SSL_OVERRIDES
from visionfm.toyworld.demo import evaluate, run_demo
from visionfm.toyworld.models import ensure_toy_clip, ensure_toy_model, toy_clip_dir

TINY = list(TINY_TOY_CLIP_OVERRIDES)
TINY_ZOO = {"clip": TINY, "ssl": list(TINY_TOY_SSL_OVERRIDES), "sam": list(TINY_TOY_SAM_OVERRIDES)}

# Issue 20 aims at >= 0.95 seen colour+shape, >= 0.70 held-out colour+shape and >= 0.99 colour; the shipped conv-stem
# ViT recipe measured 0.608, 0.363 and 1.0 with seed 0, and over seeds 0-2 0.611 +- 0.032 seen and 0.411 +- 0.105
# held-out (0.338 to 0.532; docs/toyworld.md, 2026-11-30). The floors sit under the lowest of the three seeds, far above
# chance (1/36 and 1/6), so a regression fails the test while the docs report the gap to the aims.
FLOORS = {
    ("colour+shape", "heldout compositions"): 0.25,
    ("shape (colour-marginal)", "heldout compositions"): 0.25,
    ("colour", "heldout compositions"): 0.95,
    ("colour+shape", "test compositions"): 0.50,
}


def test_demo_trains_once_then_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONFM_CACHE", str(tmp_path / "cache"))
    results, page = run_demo(tmp_path / "out", num=36, overrides=TINY_ZOO)
    assert [(r.task, r.images) for r in results] == [
        ("colour+shape", "heldout compositions"),
        ("shape (colour-marginal)", "heldout compositions"),
        ("shape (shape prompts)", "heldout compositions"),
        ("colour", "heldout compositions"),
        ("colour+shape", "test compositions"),
    ]
    assert [r.num_classes for r in results] == [36, 6, 6, 6, 36]
    assert all(0.0 <= r.top1 <= 1.0 and r.n == 36 for r in results)
    out = tmp_path / "out"
    assert page == out / "index.html"
    html = page.read_text()
    pictures = ["zero_shot_heldout.png", "zero_shot_seg.png", "grounding.png", "auto_masks.png"]
    for name in pictures:  # every picture exists and the page shows it
        assert f"src='{name}'" in html
        assert np.asarray(Image.open(out / name)).ndim == 3
    assert html.count("<tr>") == 1 + len(results) and f"{100 * results[0].top1:.1f}%" in html
    grid = np.asarray(Image.open(out / "zero_shot_heldout.png"))
    assert grid.shape[0] > 6 * 128 and grid.shape[1] == 6 * 128
    seg = np.asarray(Image.open(out / "zero_shot_seg.png"))
    assert (
        seg.shape[1] == 5 * 160 and seg.shape[0] >= 4 * 160
    )  # 4 scenes x (scene, colour pred/truth, shape pred/truth)
    report = json.loads((out / "zero_shot.json").read_text())
    assert report["results"][0]["chance"] == pytest.approx(1 / 36) and sorted(report["models"]) == [
        "clip",
        "sam",
        "ssl",
    ]
    stamps = {k: ensure_toy_model(k, overrides=v) for k, v in TINY_ZOO.items()}
    stamps = {k: [p.stat().st_mtime_ns for p in sorted(d.glob("*.safetensors"))] for k, d in stamps.items()}
    assert all(stamps.values())
    run_demo(tmp_path / "out2", num=8, overrides=TINY_ZOO)  # second run: cache hits, no training
    again = {k: [p.stat().st_mtime_ns for p in sorted(ensure_toy_model(k, overrides=v).glob("*.safetensors"))]
             for k, v in TINY_ZOO.items()}  # fmt: skip
    assert again == stamps


def test_clip_only_demo_writes_the_zero_shot_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONFM_CACHE", str(tmp_path / "cache"))
    results, image = run_demo(tmp_path / "out", num=12, overrides=TINY, zoo=False)
    assert image.name == "zero_shot_heldout.png" and len(results) == 5
    assert not (tmp_path / "out" / "index.html").exists() and not list((tmp_path / "cache").glob("toyworld-sam-*"))


def test_toyworld_clip_alias_before_training(tmp_path, monkeypatch):
    spec = [m for m in vfm.list_models("clip") if m.name == "toyworld-clip"][0]
    monkeypatch.setenv("VISIONFM_CACHE", str(tmp_path))  # the alias follows the cache at load time
    assert spec.locate() == str(toy_clip_dir()) and str(tmp_path) in spec.locate()
    if not toy_clip_dir().exists():
        with pytest.raises(OSError, match="does not exist yet.*visionfm demo"):
            vfm.load_encoder("toyworld-clip")


@pytest.mark.slow
def test_toyworld_clip_zero_shot_accuracy():
    """Trains the real recipe if it is not cached (about 10 minutes on 2 cores), then measures zero-shot top-1."""
    enc = vfm.load_encoder(ensure_toy_clip(), device="cpu")
    results = {(r.task, r.images): r.top1 for r in evaluate(enc, num=600)[0]}
    print(json.dumps({f"{k[0]} / {k[1]}": round(v, 4) for k, v in results.items()}, indent=1))
    for key, floor in FLOORS.items():
        assert results[key] >= floor, (key, results[key])
