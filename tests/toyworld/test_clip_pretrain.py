"""The toy CLIP's pretraining task (``clip_pretrain``, registered by the toyworld) and its caption dataset."""

from __future__ import annotations

import open_clip
import pytest
import torch

import visionfm as vfm
from visionfm.cli import main
from visionfm.testing import TINY_TOY_CLIP_OVERRIDES

TINY = list(TINY_TOY_CLIP_OVERRIDES)


def test_clip_pretrain_output_loads_like_any_clip(tmp_path, photos):
    out = tmp_path / "run"
    assert main(["train", "recipes/toyworld_clip.yaml", *TINY, f"train.output_dir={out}"]) == 0
    enc = vfm.load_encoder(out, device="cpu")
    assert enc.info.backend == "open_clip" and enc.info.image_size == (64, 64)
    ref, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{out}")
    tok = open_clip.get_tokenizer(f"local-dir:{out}")
    assert tok.context_length == 24  # the recipe's context length, with the real open_clip BPE
    with torch.no_grad():
        from PIL import Image

        pixels = torch.stack([preprocess(Image.fromarray(p)) for p in photos[:2]])
        torch.testing.assert_close(enc.encode(photos[:2]).pooled, ref.eval().encode_image(pixels), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            enc.encode_text(["a red circle"]), ref.encode_text(tok(["a red circle"])), atol=1e-4, rtol=0
        )
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and (out / "checkpoints" / "step_00000004").is_dir()


def test_grayscale_augmentation_pairs_grey_images_with_shape_only_captions():
    from visionfm.foundation.preprocess import PreprocessConfig
    from visionfm.toyworld.clip_pretrain import ToyCaptionDataset
    from visionfm.toyworld.world import COLOURS, ToyWorld

    seen: list[str] = []

    def tokenizer(caps):
        seen.extend(caps)
        return torch.zeros(len(caps), 4, dtype=torch.long)

    pp = PreprocessConfig(resize="none", resize_size=None, crop_size=None, mean=(0.0,) * 3, std=(1.0,) * 3, rescale=1.0)
    world = ToyWorld("train", 40, max_objects=3)
    grey = ToyCaptionDataset(world, tokenizer, pp, grayscale_prob=1.0)
    for i in range(len(world)):
        pixels, _ = grey[i]
        assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])
        words = set(seen[-1].replace(",", " ").split())
        assert not words & set(COLOURS), seen[-1]
        assert {o.shape for o in world[i].objects} <= words
    colour = ToyCaptionDataset(world, tokenizer, pp, grayscale_prob=0.0)
    pixels, _ = colour[3]
    assert torch.equal(pixels.permute(1, 2, 0).to(torch.uint8), torch.from_numpy(world[3].image))
    assert seen[-1] in world[3].captions
    with pytest.raises(ValueError, match="grayscale_prob"):
        ToyCaptionDataset(world, tokenizer, pp, grayscale_prob=1.5)


def test_two_processes_train_bit_identical_weights(tmp_path):
    """Toy CLIP pretraining is deterministic run to run: two separate processes (fresh interpreters, so hash seeds,
    allocator state and data-loader workers all differ) give bit-equal weights and the same logged losses. The full
    recipe was checked the same way (docs/toyworld.md: two 1500-step runs, equal weights)."""
    import hashlib
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    digests, losses = [], []
    for i in range(2):
        out = tmp_path / f"run{i}"
        cmd = [sys.executable, "-m", "visionfm", "train", "recipes/toyworld_clip.yaml", *TINY,
               f"train.output_dir={out}", "train.num_workers=1"]  # fmt: skip
        env = dict(os.environ, PYTHONHASHSEED=str(i), PYTHONWARNINGS="ignore")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        sd = load_file(str(out / "open_clip_model.safetensors"))
        h = hashlib.sha256()
        for k in sorted(sd):
            h.update(k.encode() + sd[k].numpy().tobytes())
        digests.append(h.hexdigest())
        losses.append([json.loads(r)["loss"] for r in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert digests[0] == digests[1]


def test_hard_negatives_are_false_one_edit_captions_without_held_out_pairs():
    import numpy as np

    from visionfm.toyworld.clip_pretrain import hard_negative
    from visionfm.toyworld.world import HELDOUT_PAIRS, ToyWorld, parse_caption

    world = ToyWorld("train", 200, min_objects=1, max_objects=3, seed=4)
    held = {f"{c} {s}" for c, s in HELDOUT_PAIRS}
    rng = np.random.default_rng(0)
    n, swaps, false, with_pairs = 0, 0, 0, 0
    for k in range(len(world)):
        scene = world[k]
        true_pairs = {f"{o.colour} {o.shape}" for o in scene.objects}
        for cap in scene.captions:
            neg = hard_negative(cap, rng)
            if neg is None:
                continue
            n += 1
            a, b = cap.split(" "), neg.split(" ")
            assert neg != cap and len(a) == len(b)
            changed = [i for i in range(len(a)) if a[i] != b[i] and a[i].strip(",:") not in ("a", "an")]
            assert 1 <= len(changed) <= 2, (cap, neg)
            swaps += len(changed) == 2
            pairs = set(parse_caption(neg)["pairs"])
            assert not pairs & held, (cap, neg)
            if parse_caption(cap)["pairs"]:
                assert parse_caption(neg)["pairs"] != parse_caption(cap)["pairs"], (cap, neg)
                false += not pairs <= true_pairs  # false of the scene (unless another object has the new pair)
                with_pairs += 1
            words = neg.replace(",", " ").replace(":", " ").split()
            for art, nxt in zip(words, words[1:]):
                if art in ("a", "an"):
                    assert (art == "an") == (nxt[0] in "aeiou"), neg
    assert n > 500 and swaps > 20  # most captions get a negative, and multi-object ones get binding swaps
    assert false >= 0.9 * with_pairs


def test_hard_negative_training_runs_and_logs_a_finite_loss(tmp_path):
    import json

    out = tmp_path / "neg"
    assert (
        main(["train", "recipes/toyworld_clip.yaml", *TINY, "data.hard_negatives=true", f"train.output_dir={out}"]) == 0
    )
    last = json.loads((out / "train_summary.json").read_text())["last_metrics"]
    assert torch.isfinite(torch.tensor(last["loss"])) and last["loss"] > 0
    assert vfm.load_encoder(out, device="cpu").encode_text(["a red circle"]).shape[-1] == 32


def test_background_captions_name_the_background_tone_truly():
    import numpy as np

    from visionfm.foundation.preprocess import PreprocessConfig
    from visionfm.toyworld.clip_pretrain import ToyCaptionDataset, background_tone
    from visionfm.toyworld.world import ToyWorld

    seen: list[str] = []

    def tokenizer(caps):
        seen.extend(caps)
        return torch.zeros(len(caps), 4, dtype=torch.long)

    pp = PreprocessConfig(resize="none", resize_size=None, crop_size=None, mean=(0.0,) * 3, std=(1.0,) * 3, rescale=1.0)
    world = ToyWorld("train", 60, max_objects=2, seed=3)
    ds = ToyCaptionDataset(world, tokenizer, pp, background_prob=0.5)
    tones = []
    for i in range(len(world)):
        ds[i]
        scene, cap = world[i], seen[-1]
        if cap.endswith(" grey background"):
            tone = cap.split(" ")[-3]
            level = scene.image[scene.instance == 0].astype(np.float32).mean()
            assert tone == background_tone(scene) == ("dark" if level < 128 else "light")
            assert cap.removesuffix(f" on a {tone} grey background") in scene.captions
            tones.append(tone)
        else:
            assert cap in scene.captions
    assert 15 <= len(tones) <= 45 and set(tones) == {"dark", "light"}  # about half, both tones occur
    with pytest.raises(ValueError, match="background_prob"):
        ToyCaptionDataset(world, tokenizer, pp, background_prob=1.5)


def test_toy_recipes_refuse_another_source_or_image_size():
    from visionfm.toyworld.datasets import training_world_args

    assert training_world_args({"seed": 3}, 64, "ssl_pretrain") == {"seed": 3, "image_size": 64}
    with pytest.raises(ValueError, match="ssl_pretrain supports data.source: toyworld"):
        training_world_args({"source": "coco"}, 64, "ssl_pretrain")
    with pytest.raises(
        ValueError, match=r"sam_pretrain: data.image_size \(32\) must equal the model's image size \(64\)"
    ):
        training_world_args({"image_size": 32}, 64, "sam_pretrain")
