"""The toy self-supervised encoder (``ssl_pretrain``): its views, its Sinkhorn-Knopp targets, its checkpoints (a timm
conv-stem ViT the ``timm`` family loads; a transformers ViT the ``dino`` family loads), and the kNN protocol."""

from __future__ import annotations

import json

import pytest
import torch

import visionfm as vfm
from visionfm.cli import main
from visionfm.toyworld import ToyWorld
from visionfm.toyworld.ssl_pretrain import ToyViewsDataset, knn_accuracy, sinkhorn_knopp

TINY = ["model.width=32", "model.heads=2", "model.layers=1", "ssl.prototypes=16", "ssl.head_hidden=32",
        "ssl.bottleneck=8", "data.num_scenes=16", "data.local_crops=2", "train.max_steps=3", "train.batch_size=4",
        "train.num_workers=0", "train.save_every=2", "train.log_every=1"]  # fmt: skip


def test_views_are_deterministic_crops_of_the_right_sizes():
    world = ToyWorld("train", 8, seed=1)
    ds = ToyViewsDataset(world, local_crops=3, local_size=32, seed=0)
    glob, loc = ds[2]
    assert glob.shape == (2, 3, 64, 64) and loc.shape == (3, 3, 32, 32)
    assert torch.isfinite(glob).all() and not torch.equal(glob[0], glob[1])  # two different views
    again = ToyViewsDataset(world, local_crops=3, local_size=32, seed=0)[2]
    assert torch.equal(again[0], glob) and torch.equal(again[1], loc)
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], glob)  # a new epoch, new views
    with pytest.raises(ValueError, match="local_crops"):
        ToyViewsDataset(world, local_crops=-1)


def test_sinkhorn_knopp_targets_are_distributions_with_equal_prototype_mass():
    logits = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 5
    q = sinkhorn_knopp(logits, iterations=100)
    torch.testing.assert_close(q.sum(-1), torch.ones(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((16,), 64 / 16), atol=1e-2, rtol=0)
    same = sinkhorn_knopp(logits[:1].expand(64, -1))  # identical rows: nothing to tell apart, uniform targets
    torch.testing.assert_close(same, torch.full((64, 16), 1 / 16), atol=1e-4, rtol=0)


def test_dino_objective_writes_a_transformers_vit_the_dino_family_loads(tmp_path, photos):
    from transformers import ViTModel

    out = tmp_path / "dino"
    args = ["train", "recipes/toyworld_ssl.yaml", *TINY, "model.arch=vit", "ssl.objective=dino"]
    assert main([*args, f"train.output_dir={out}"]) == 0
    enc = vfm.load_encoder(out, device="cpu")
    assert enc.info.family == "dino" and enc.info.image_size == (64, 64) and enc.info.patch_size == 8
    ref = ViTModel.from_pretrained(out, add_pooling_layer=False).eval()
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        feats = enc(x)
        torch.testing.assert_close(feats.pooled, ref(pixel_values=x).last_hidden_state[:, 0], atol=1e-5, rtol=0)
    assert feats.patches.shape == (2, 8, 8, 32)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0 < r["teacher_entropy"] <= torch.log(torch.tensor(16.0)) + 1e-4 for r in rows)
    assert (out / "checkpoints" / "step_00000002").is_dir()


def test_default_recipe_writes_a_timm_conv_stem_vit_timm_reads_back(tmp_path, photos):
    import timm

    out = tmp_path / "ssl"
    assert main(["train", "recipes/toyworld_ssl.yaml", *TINY, f"train.output_dir={out}"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "visionfm_conv_stem_vit" and cfg["model_args"]["dynamic_img_size"] is True
    enc = vfm.load_encoder(out, device="cpu")
    assert enc.info.family == "timm" and enc.info.patch_size == 8
    ref = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = enc.preprocess(photos[:2])
    with torch.no_grad():
        feats = enc(x)
        torch.testing.assert_close(feats.pooled, ref.forward_head(ref.forward_features(x), pre_logits=True),
                                   atol=1e-5, rtol=0)  # fmt: skip
    assert feats.grid == (8, 8)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0 < r["teacher_entropy"] and r["loss"] > 0 for r in rows)  # DINO by default
    simclr = tmp_path / "simclr"
    assert (
        main(["train", "recipes/toyworld_ssl.yaml", *TINY, "ssl.objective=simclr", f"train.output_dir={simclr}"]) == 0
    )
    rows = [json.loads(r) for r in (simclr / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0 <= r["pair_acc"] <= 1 and r["loss"] > 0 for r in rows)
    assert vfm.load_encoder(simclr, device="cpu").info.family == "timm"
    bad = ["train", "recipes/toyworld_ssl.yaml", *TINY, "ssl.objective=byol", f"train.output_dir={tmp_path / 'x'}"]
    assert main(bad) == 2  # a clear error, not a crash


def test_knn_reads_labels_off_features_that_carry_them():
    """An oracle encoder whose pooled feature is the mean colour of the object pixels: kNN on colour is exact, on
    shape near chance — the protocol measures what the features hold."""
    import numpy as np

    from visionfm.foundation.encoder import Encoder
    from visionfm.foundation.features import EncoderInfo, Features
    from visionfm.foundation.preprocess import PreprocessConfig

    pp = PreprocessConfig(resize="none", resize_size=None, crop_size=None, mean=(0.0,) * 3, std=(1.0,) * 3,
                          rescale=1.0)  # fmt: skip

    class MeanColour(Encoder):
        def __init__(self) -> None:
            info = EncoderInfo(
                family="test",
                backend="test",
                name="mean-colour",
                embed_dim=3,
                width=3,
                patch_size=1,
                image_size=(64, 64),
                mean=(0.0,) * 3,
                std=(1.0,) * 3,
                has_text=False,
                num_layers=0,
            )
            super().__init__(info, pp)  # fmt: skip
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, layers=None):
            x = pixel_values.float()
            grey = x.mean(1, keepdim=True)
            fg = ((x - grey).abs().amax(1, keepdim=True) > 30).float()  # saturated pixels: the object
            pooled = (x * fg).sum((2, 3)) / fg.sum((2, 3)).clamp(min=1)
            return Features(
                pooled=pooled - pooled.mean(-1, keepdim=True), patches=x.new_zeros(len(x), 1, 1, 3), grid=(1, 1)
            )

    enc = MeanColour()
    assert knn_accuracy(enc, kind="colour", num_bank=120, num_query=60) == 1.0
    shape = knn_accuracy(enc, kind="shape", num_bank=120, num_query=60)
    assert shape < 0.5 and np.isfinite(shape)


# Floors under the shipped recipe's measured run (docs/toyworld.md, 2026-11-30): kNN shape 0.242 on seen compositions
# (0.040 on held-out ones, below chance: the encoder learned colour), colour 0.790. Issue 20 aimed at >= 0.90 on shape;
# the recipe does not reach it (the docs say what was tried). The floors sit under the measurement, above chance
# (1/6), so a regression fails.
SSL_FLOORS = {"shape test": 0.20, "colour test": 0.70}


@pytest.mark.slow
def test_toy_ssl_encoder_knn():
    """Trains the shipped recipe if it is not cached (about 13 minutes on 2 cores), then DINO's kNN protocol."""
    from visionfm.toyworld.models import ensure_toy_model

    path = ensure_toy_model("ssl")
    got = {f"{k} {s}": knn_accuracy(path, kind=k, query_split=s) for k in ("shape", "colour") for s in ("test",)}
    print(got)
    for key, floor in SSL_FLOORS.items():
        assert got[key] >= floor, (key, got[key])
