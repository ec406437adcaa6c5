"""The ``generation`` suite task, pixel-space DiTs, the toyworld DiT recipe, and FID-Inception parity with torchmetrics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from visionfm.eval.runner import Runner
from visionfm.eval.suite import load_suite, parse_suite
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dit_dir(tiny_root):
    return tiny_checkpoint("dit", root=tiny_root)


@pytest.fixture(scope="module")
def clip_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


def _suite(clip_dir, **task):
    t = {"name": "gen", "task": "generation", "reference": "real", "classes": [0, 3, 2], "num_per_class": 3,
         "steps": 3, "guidance_scale": 2.0, "seed": 5,
         "metrics": [{"metric": "fd", "encoder": str(clip_dir), "label": "clip"},
                     {"metric": "clip_score", "encoder": str(clip_dir), "label": "clip"},
                     {"metric": "inception_score", "encoder": str(clip_dir), "label": "clip", "splits": 3},
                     {"metric": "fid", "weights": "/nonexistent/inception.safetensors"}]}  # fmt: skip
    t.update(task)
    return parse_suite({"name": "gen", "datasets": {"real": {"source": "toyworld", "split": "test", "num": 13,
                                                             "image_size": 32}}, "tasks": [t]})  # fmt: skip


def _fd(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def test_generation_task_equals_a_direct_computation(dit_dir, clip_dir, tmp_path):
    import visionfm as vfm
    from visionfm.data.datasets import build_dataset

    res = Runner(_suite(clip_dir), str(dit_dir), tmp_path, batch_size=4, chunk_size=4).run()["results"][0]
    assert res["samples"] == 9 and res["skipped"] == 0 and res["reference_samples"] == 13
    m = res["metrics"]
    # the same images, made by the pipeline directly: class c's k-th image has seed 5 + its index in the plan
    gen = vfm.pipeline("generation", model=str(dit_dir), batch_size=4)
    ids = [0, 0, 0, 3, 3, 3, 2, 2, 2]
    with torch.inference_mode():
        images = np.concatenate([gen._decode(gen._sample(ids[i : i + 4], list(range(5 + i, 5 + min(i + 4, 9))), 3, 2.0,
                                                         False)) for i in range(0, 9, 4)])  # fmt: skip
    clip = vfm.load_encoder(str(clip_dir), device="cpu")
    fake = clip.encode(list(images), progress=False).pooled.double().numpy()
    real_ds = build_dataset("real", {"source": "toyworld", "split": "test", "num": 13, "image_size": 32})
    real = clip.encode([real_ds[i]["image"] for i in range(13)], progress=False).pooled.double().numpy()
    assert m["FD-clip"] == pytest.approx(_fd(fake, real), rel=1e-5)
    names = [gen.encoder.id2label[i].split(",")[0].strip() for i in ids]
    text = clip.encode_text([f"a photo of a {n}." for n in names]).double().numpy()
    cos = (fake * text).sum(1) / np.linalg.norm(fake, axis=1) / np.linalg.norm(text, axis=1)
    assert m["CLIPScore-clip"] == pytest.approx(np.maximum(100 * cos, 0).mean(), rel=1e-5)
    assert 1.0 <= m["IS-clip"] <= 1000.0
    # FID without local weights is reported as unavailable, the rest still ran
    assert "FID" not in m and "unavailable" in res["protocol"]["metrics"]["FID"]
    p = res["protocol"]
    assert (p["steps"], p["guidance_scale"], p["seed"], p["num_samples"]) == (3, 2.0, 5, 9)
    assert p["metrics"]["FD-clip"]["encoder_sha256"] and p["metrics"]["FD-clip"]["feature"] == "Features.pooled"


def test_saved_reference_stats_are_reused_without_the_dataset(dit_dir, clip_dir, tmp_path):
    first = Runner(_suite(clip_dir), str(dit_dir), tmp_path / "a", batch_size=4, chunk_size=4).run()["results"][0]
    stats = first["protocol"]["metrics"]["FD-clip"]["reference_stats"]
    suite = _suite(clip_dir, reference_stats={"FD-clip": stats}, metrics=[{"metric": "fd", "encoder": str(clip_dir),
                                                                            "label": "clip"}])  # fmt: skip
    del suite.tasks[0]["reference"]
    again = Runner(suite, str(dit_dir), tmp_path / "b", batch_size=4, chunk_size=4).run()["results"][0]
    assert again["metrics"]["FD-clip"] == pytest.approx(first["metrics"]["FD-clip"], rel=1e-9)
    assert again["reference_samples"] is None and again["protocol"]["metrics"]["FD-clip"]["reference_samples"] == 13


def test_generation_resumes_and_never_regenerates_finished_chunks(dit_dir, clip_dir, tmp_path):
    suite = _suite(clip_dir, metrics=[{"metric": "fd", "encoder": str(clip_dir), "label": "clip"}])
    full = Runner(suite, str(dit_dir), tmp_path / "full", batch_size=4, chunk_size=4).run()["results"][0]

    class Stop(Exception):
        pass

    def die(n):
        if n == 2:
            raise Stop

    out = tmp_path / "killed"
    with pytest.raises(Stop):
        Runner(suite, str(dit_dir), out, batch_size=4, chunk_size=4, after_chunk=die).run()
    runner = Runner(suite, str(dit_dir), out, batch_size=4, chunk_size=4)
    calls = []
    orig = runner.encoder.transformer.forward
    runner.encoder.transformer.forward = lambda *a, **k: calls.append(len(a[0])) or orig(*a, **k)
    resumed = runner.run()["results"][0]
    assert resumed["metrics"] == full["metrics"]
    assert sum(calls) == 1 * 2 * 3  # only the last chunk (1 image x cfg doubling x 3 steps) was generated again


def test_generation_task_errors_name_the_problem(dit_dir, clip_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'fod'"):
        Runner(_suite(clip_dir, metrics=[{"metric": "fod"}]), str(dit_dir), tmp_path).run()
    with pytest.raises(ValueError, match="needs a DiT or PixArt generator"):
        Runner(_suite(clip_dir), str(clip_dir), tmp_path).run()
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        Runner(_suite(clip_dir, classes=["zebra"]), str(dit_dir), tmp_path).run()


def test_shipped_generation_suites_parse_and_take_overrides():
    s = load_suite("toyworld-generation", overrides={"set": ["tasks.generation.num_per_class=2",
                                                             "datasets.real-test.num=50"]})  # fmt: skip
    assert (
        s.tasks[0]["num_per_class"] == 2 and s.datasets["real-test"]["num"] == 50 and len(s.tasks[0]["classes"]) == 30
    )
    g = load_suite("generation", overrides={"set": ["datasets.imagenet-val.path=/data/val", "tasks.0.preset=paper"]})
    assert g.datasets["imagenet-val"]["path"] == "/data/val" and g.tasks[0]["preset"] == "paper"
    with pytest.raises(ValueError, match="no dataset 'nope'"):
        load_suite("generation", overrides={"set": ["datasets.nope.path=x"]})


def test_fid_inception_matches_torchmetrics_extractor(tmp_path):
    from torchmetrics.image.fid import NoTrainInceptionV3

    from visionfm.eval.generation_metrics import InceptionFeatures, write_random_inception_weights

    st = tmp_path / "inception.safetensors"
    write_random_inception_weights(st, pickle_copy=True)
    x = torch.randint(0, 256, (3, 3, 40, 56), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ours = InceptionFeatures(st)(x)
    pool, logits = (NoTrainInceptionV3("inception-v3-compat", [f], antialias=False,
                                       feature_extractor_weights_path=str(tmp_path / "inception.pth"))(x)
                    for f in ("2048", "logits_unbiased"))  # fmt: skip
    assert torch.equal(ours["pool"], pool) and torch.equal(ours["logits_unbiased"], logits)
    assert ours["pool"].std() > 0
    with pytest.raises(ValueError, match="pickle"):
        InceptionFeatures(tmp_path / "inception.pth")
    with pytest.raises(ValueError, match="uint8"):
        InceptionFeatures(st)(x.float())


@pytest.mark.slow
def test_fid_equals_torchmetrics_fid(tmp_path):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from visionfm.eval.generation_metrics import (
        FeatureStats,
        InceptionFeatures,
        frechet_distance_from_stats,
        write_random_inception_weights,
    )

    st = tmp_path / "inception.safetensors"
    write_random_inception_weights(st, pickle_copy=True)
    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (24, 3, 48, 48), generator=g, dtype=torch.uint8)
    fake = (real.float() * 0.7 + 30).clamp(0, 255).to(torch.uint8)
    tm = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(tmp_path / "inception.pth"),
                                  antialias=False)  # fmt: skip
    tm.update(real, real=True)
    tm.update(fake, real=False)
    net = InceptionFeatures(st)
    a, b = FeatureStats(), FeatureStats()
    for i in range(0, 24, 8):  # streamed in batches
        a.update(net(fake[i : i + 8])["pool"])
        b.update(net(real[i : i + 8])["pool"])
    assert frechet_distance_from_stats(a, b) == pytest.approx(float(tm.compute()), rel=2e-3)


def test_pixel_space_dit_round_trip(tmp_path):
    from diffusers import DDIMScheduler

    import visionfm as vfm
    from visionfm.foundation.dit import save_pixel_dit
    from visionfm.training.dit_train import build_transformer

    torch.manual_seed(0)
    tr = build_transformer({"sample_size": 16, "patch_size": 4, "num_layers": 2, "num_attention_heads": 2,
                            "attention_head_dim": 8}, num_classes=3)  # fmt: skip
    d = save_pixel_dit(tmp_path / "pix", tr, DDIMScheduler(), {0: "red", 1: "green", 2: "blue"})
    assert not (d / "vae").exists() and json.loads((d / "model_index.json").read_text())["vae"] == [None, None]
    enc = vfm.load_encoder(str(d), device="cpu")
    assert enc.info.family == "dit" and enc.info.image_size == (16, 16) and enc.info.patch_size == 4
    feats = enc.encode([np.zeros((20, 20, 3), np.uint8)] * 2, progress=False)
    assert feats.patches.shape == (2, 4, 4, 16)
    out = vfm.pipeline("generation", model=str(d))(labels=["green", 2], steps=2, progress=False)
    assert [im.size for im in out.images] == [(16, 16)] * 2 and out.names == ["green", "blue"]
    with torch.inference_mode():  # the identity VAE: the decoded image is the denoised sample
        gen = vfm.pipeline("generation", model=str(d))
        lat = gen._sample([1], [0], 2, 4.0, False)
    assert np.array_equal(gen._decode(lat)[0], np.asarray(out.images[0]))


def test_dit_recipe_trains_resumes_and_generates(tmp_path):
    import visionfm as vfm
    from visionfm.training.recipes import run_recipe

    recipe = {
        "task": "dit",
        "model": {"sample_size": 16, "patch_size": 4, "num_layers": 1, "num_attention_heads": 2,
                  "attention_head_dim": 8},
        "data": {"source": "toyworld", "split": "train", "num": 24, "image_size": 32, "label": "colour", "hflip": True},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "batch_size": 8, "save_every": 2,
                  "log_every": 1, "progress": False},
    }  # fmt: skip
    out = run_recipe(recipe)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    enc = vfm.load_encoder(str(out), device="cpu")
    assert sorted(enc.id2label.values()) == sorted(["red", "green", "blue", "yellow", "purple", "orange"])
    res = vfm.pipeline("generation", model=str(out))(labels=["red"], steps=2, progress=False)
    assert res.images[0].size == (16, 16)
    # a longer run resumes from step 4's checkpoint instead of starting again
    recipe["train"]["max_steps"] = 6
    run_recipe(recipe)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_cli_eval_generation_prints_raw_values(dit_dir, clip_dir, tmp_path):
    import yaml

    suite = _suite(clip_dir, metrics=[{"metric": "fd", "encoder": str(clip_dir), "label": "clip"}])
    raw = {"name": "gen", "datasets": suite.datasets, "tasks": suite.tasks}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "visionfm", "eval", str(tmp_path / "s.yaml"), "--model", str(dit_dir),
                           "--out", str(tmp_path / "o"), "--set", "tasks.gen.num_per_class=1", "--batch-size", "4"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FD-clip" in proc.stdout and "%" not in proc.stdout.split("FD-clip")[1].splitlines()[0]
    res = json.loads(next((tmp_path / "o").glob("*.json")).read_text())["results"][0]
    assert res["samples"] == 3


def test_text_to_image_generation_task_scores_each_image_against_its_prompt(tiny_root, clip_dir, tmp_path):
    import visionfm as vfm

    pix = tiny_checkpoint("pixart", root=tiny_root)
    prompts = ["a red square", "a blue circle"]
    suite = _suite(clip_dir, classes=None, prompts=prompts, num_per_prompt=2, steps=2, guidance_scale=3.0,
                   metrics=[{"metric": "fd", "encoder": str(clip_dir), "label": "clip"},
                            {"metric": "clip_score", "encoder": str(clip_dir), "label": "clip"}])  # fmt: skip
    del suite.tasks[0]["classes"]
    res = Runner(suite, str(pix), tmp_path, batch_size=3, chunk_size=3).run()["results"][0]
    assert res["samples"] == 4 and res["protocol"]["kind"] == "text-to-image" and res["protocol"]["prompts"] == prompts
    out = vfm.pipeline("generation", model=str(pix), batch_size=3)(prompts=prompts, num_images_per_prompt=2, steps=2,
                                                                     guidance_scale=3.0, seed=5, output_type="np")  # fmt: skip
    clip = vfm.load_encoder(str(clip_dir), device="cpu")
    img = clip.encode(out.images, progress=False).pooled.double().numpy()
    txt = clip.encode_text(out.prompts).double().numpy()
    cos = (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    assert res["metrics"]["CLIPScore-clip"] == pytest.approx(np.maximum(100 * cos, 0).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="needs 'prompts'"):
        Runner(_suite(clip_dir), str(pix), tmp_path / "x").run()
