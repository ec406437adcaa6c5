"""The toy SAM recipe (``sam_pretrain``): its prompts, its checkpoint (a transformers SAM every SAM path loads), and,
behind ``-m slow``, the trained model's point-prompt IoU and automatic-mask AP on held-out scenes."""

from __future__ import annotations

import pytest
import torch

import visionfm as vfm
from visionfm.cli import main
from visionfm.toyworld import ToyWorld
from visionfm.toyworld.sam_pretrain import ToySamDataset

TINY = ["model.width=16", "model.heads=1", "model.layers=1", "model.global_layers=[0]", "model.neck=32",
        "data.num_scenes=16", "train.max_steps=3", "train.batch_size=4", "train.num_workers=0"]  # fmt: skip


def test_prompts_point_into_their_object_or_the_background():
    world = ToyWorld("train", 30, seed=2, max_objects=4)
    ds = ToySamDataset(world, prompts=6, background_prob=0.3, box_jitter=2.0, seed=0)
    n_bg = n_obj = 0
    for i in range(len(ds)):
        item, scene = ds[i], world[i]
        for (x, y), pm, box, bm in zip(item["points"].tolist(), item["point_masks"], item["boxes"], item["box_masks"],
                                       strict=True):  # fmt: skip
            yi, xi = int(y), int(x)
            if pm.any():  # an object point: inside its visible mask, and that mask is one of the scene's
                assert pm[yi, xi] and any(torch.equal(pm, torch.from_numpy(m)) for m in scene.masks)
                n_obj += 1
            else:
                assert scene.instance[yi, xi] == 0
                n_bg += 1
            k = [j for j, m in enumerate(scene.masks) if torch.equal(bm, torch.from_numpy(m))]
            assert len(k) == 1 and (box - torch.from_numpy(scene.boxes[k[0]])).abs().max() <= 2.0 + 1e-5
    assert n_bg > 10 and n_obj > 100
    again = ToySamDataset(world, prompts=6, background_prob=0.3, seed=0)[3]
    assert torch.equal(again["points"], ds[3]["points"])  # deterministic in (seed, index, epoch)


@pytest.mark.parametrize("patch", [4, 8])  # patch 8: 32 x 32 low-resolution masks, resized to the image for the loss
def test_recipe_writes_a_sam_checkpoint_every_sam_path_loads(tmp_path, photos, patch):
    from transformers import SamModel, SamProcessor

    out = tmp_path / "sam"
    assert main(["train", "recipes/toyworld_sam.yaml", *TINY, f"model.patch_size={patch}", "model.window=4",
                 f"train.output_dir={out}"]) == 0  # fmt: skip
    assert SamModel.from_pretrained(out).config.vision_config.patch_size == patch
    enc = vfm.load_encoder(out, device="cpu")
    assert enc.info.family == "sam" and enc.info.image_size == (64, 64)
    ref, proc = SamModel.from_pretrained(out).eval(), SamProcessor.from_pretrained(out)
    inputs = proc(images=photos[0], return_tensors="pt")
    torch.testing.assert_close(enc.preprocess([photos[0]]), inputs["pixel_values"], atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(enc(inputs["pixel_values"]).patches.permute(0, 3, 1, 2),
                                   ref.get_image_embeddings(inputs["pixel_values"]), atol=1e-5, rtol=0)  # fmt: skip
    sam = vfm.pipeline("mask-generation", model=str(out), device="cpu")
    res = sam(photos[0], points=[[100, 120]])
    assert res.masks.shape == (1, *photos[0].shape[:2])


@pytest.mark.slow
def test_trained_toy_sam_segments_held_out_scenes():
    """The shipped recipe (trained if not cached: about 7.5 minutes on 2 cores), then docs/toyworld.md's evaluation on
    200 held-out scenes."""
    from visionfm.toyworld.models import ensure_toy_model
    from visionfm.toyworld.sam_pretrain import evaluate

    got = evaluate(ensure_toy_model("sam"))
    assert got["point_miou"] >= POINT_MIOU_FLOOR and got["box_miou"] >= BOX_MIOU_FLOOR, got
    assert got["mask_ap"] >= MASK_AP_FLOOR, got


# Floors under the measured runs of the shipped recipe (patch 8; docs/toyworld.md: 2026-11-29 point mIoU 0.727, box
# mIoU 0.743, mask AP 0.453 on 200 held-out scenes; retrained on 2026-11-30 with identical numbers), with room for run-to-run spread, which was not
# measured (one seed). They are BELOW issue 20's aims (point IoU >= 0.85, mask AP >= 0.50), which this recipe does not
# reach; the docs say so.
POINT_MIOU_FLOOR = 0.65
BOX_MIOU_FLOOR = 0.65
MASK_AP_FLOOR = 0.35
