"""DiT feature extraction: parity with diffusers used directly, determinism, options, taps, gradients."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import visionfm
from visionfm.foundation.dit import DiTEncoder, detect
from visionfm.foundation.loading import PickleCheckpointError
from visionfm.testing import tiny_checkpoint

S = 16  # tiny model input: transformer sample_size 8 x VAE scale 2


@pytest.fixture(scope="module")
def dit_path(tiny_root):
    return tiny_checkpoint("dit", root=tiny_root)


@pytest.fixture(scope="module")
def encoder(dit_path):
    return visionfm.load_encoder(dit_path, device="cpu")


@pytest.fixture(scope="module")
def pipe(dit_path):
    from diffusers import DiTPipeline

    return DiTPipeline.from_pretrained(dit_path)


# -- an independent reference, written against diffusers / PIL only ---------------------------------------
def ref_pixels(photo: np.ndarray, size: int = S) -> torch.Tensor:
    """ADM-style centre crop: PIL bicubic resize of the short side to ``size``, crop at floor offsets, [-1, 1]."""
    img = Image.fromarray(photo)
    w, h = img.size
    if h <= w:
        new = (int(size * w / h), size)
    else:
        new = (size, int(size * h / w))
    arr = np.asarray(img.resize(new, Image.BICUBIC)).astype(np.float32)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    arr = arr[top : top + size, left : left + size]
    x = torch.from_numpy(arr).permute(2, 0, 1) / 255.0
    return (x - 0.5) / 0.5


def ref_features(pipe, pixels, *, timestep, block, class_label, seed, ensemble=1):
    """Block ``block`` output on the patch grid, averaged over ``ensemble`` seeded noise draws."""
    vae, transformer, scheduler = pipe.vae, pipe.transformer, pipe.scheduler
    b = pixels.shape[0]
    latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(ensemble):
        eps = torch.randn(latents.shape[1:], generator=g).expand_as(latents)
        t = torch.full((b,), timestep, dtype=torch.long)
        noisy = scheduler.add_noise(latents, eps, t)
        got: dict[str, torch.Tensor] = {}
        handle = transformer.transformer_blocks[block].register_forward_hook(lambda m, i, o, got=got: got.update(out=o))
        try:
            full = transformer(noisy, timestep=t, class_labels=torch.full((b,), class_label), return_dict=False)[0]
        finally:
            handle.remove()
        no_hook = transformer(noisy, timestep=t, class_labels=torch.full((b,), class_label), return_dict=False)[0]
        torch.testing.assert_close(full, no_hook, rtol=0, atol=0)  # the hook observes only
        assert full.shape == (b, transformer.config.out_channels, *latents.shape[-2:])
        hp = latents.shape[-2] // transformer.config.patch_size
        wp = latents.shape[-1] // transformer.config.patch_size
        outs.append(got["out"].reshape(b, hp, wp, -1))
    return torch.stack(outs).mean(0), noisy


# -- tests ------------------------------------------------------------------------------------------------
def test_detect_and_info(dit_path, encoder, tmp_path):
    assert detect(dit_path) == "diffusers"
    assert detect(tmp_path) is None
    # No model_index.json: a DiT transformer config next to a vae/ folder is enough.
    alt = tmp_path / "alt"
    shutil.copytree(dit_path, alt)
    (alt / "model_index.json").unlink()
    assert detect(alt) == "diffusers"
    shutil.rmtree(alt / "vae")
    assert detect(alt) is None

    assert isinstance(encoder, DiTEncoder)
    info = encoder.info
    assert (info.family, info.backend) == ("dit", "diffusers")
    assert info.embed_dim == info.width == 16
    assert info.patch_size == 4 and info.image_size == (S, S)
    assert info.num_layers == 2 and not info.has_text
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    # defaults: middle block, null class, t=100
    assert (encoder.layer, encoder.class_label, encoder.timestep, encoder.ensemble) == (1, 1000, 100, 1)
    assert encoder.vae is not None and encoder.transformer is not None and encoder.scheduler is not None


def test_preprocess_matches_pil_reference(encoder, photos):
    # wide and tall crops resizing to 19 px on the long side: floor((19 - 16) / 2) = 1 != round(1.5) = 2
    images = [*photos, photos[1][:, :360].copy(), photos[2][:360, :300].copy()]
    ours = encoder.preprocess(images)
    ref = torch.stack([ref_pixels(p) for p in images])
    assert ours.shape == (len(images), 3, S, S)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "opts, block, label",
    [
        ({}, 1, 1000),  # defaults: t=100, middle block, null class, seed 0
        ({"timestep": 250, "layer": 0, "class_label": 3, "noise_seed": 7}, 0, 3),
        ({"timestep": 600, "layer": -1, "noise_seed": 3, "ensemble": 3}, 1, 1000),
    ],
)
def test_parity_with_diffusers(dit_path, pipe, photos, opts, block, label):
    enc = visionfm.load_encoder(dit_path, device="cpu", **opts)
    pixels = torch.stack([ref_pixels(p) for p in photos])
    with torch.no_grad():
        want, noisy = ref_features(
            pipe,
            pixels,
            timestep=opts.get("timestep", 100),
            block=block,
            class_label=label,
            seed=opts.get("noise_seed", 0),
            ensemble=opts.get("ensemble", 1),
        )
    feats = enc.encode(photos)
    assert feats.grid == (4, 4) and feats.patches.shape == (len(photos), 4, 4, 16)
    torch.testing.assert_close(feats.patches, want, rtol=0, atol=1e-4)
    torch.testing.assert_close(feats.pooled, want.mean((1, 2)), rtol=0, atol=1e-4)
    assert feats.cls is None and feats.registers is None and feats.layers == {}
    # our early-stopped forward left no hooks behind, and the full transformer still runs on our weights
    assert all(not blk._forward_hooks for blk in enc.transformer.transformer_blocks)
    t = torch.full((len(photos),), opts.get("timestep", 100))
    with torch.no_grad():
        full = enc.transformer(noisy, timestep=t, class_labels=torch.full((len(photos),), label)).sample
        ref_full = pipe.transformer(noisy, timestep=t, class_labels=torch.full((len(photos),), label)).sample
    torch.testing.assert_close(full, ref_full, rtol=0, atol=1e-5)


def test_deterministic_and_batch_independent(encoder, photos):
    a = encoder.encode(photos)
    b = encoder.encode(photos)
    assert torch.equal(a.patches, b.patches) and torch.equal(a.pooled, b.pooled)
    one_by_one = visionfm.Features.cat([encoder.encode(p) for p in photos])
    torch.testing.assert_close(one_by_one.patches, a.patches, rtol=0, atol=1e-5)
    split = encoder.encode(photos, batch_size=3)
    torch.testing.assert_close(split.patches, a.patches, rtol=0, atol=1e-5)


def test_options_change_features(dit_path, encoder, photos):
    base = encoder.encode(photos[:2]).patches
    for opts in ({"timestep": 900}, {"noise_seed": 1}, {"class_label": 2}, {"layer": 0}):
        other = visionfm.load_encoder(dit_path, device="cpu", **opts).encode(photos[:2]).patches
        assert (other - base).abs().max() > 1e-3, opts


def test_bad_options(dit_path):
    with pytest.raises(TypeError, match="timestep"):
        visionfm.load_encoder(dit_path, device="cpu", timestpe=5)
    with pytest.raises(TypeError, match="timestep"):
        visionfm.load_encoder("dit-xl-2-256", device="cpu", timestpe=5)  # rejected before any download
    with pytest.raises(ValueError, match="timestep"):
        visionfm.load_encoder(dit_path, device="cpu", timestep=1000)
    with pytest.raises(ValueError, match="layer"):
        visionfm.load_encoder(dit_path, device="cpu", layer=2)
    with pytest.raises(ValueError, match="class_label"):
        visionfm.load_encoder(dit_path, device="cpu", class_label=1001)
    with pytest.raises(ValueError, match="ensemble"):
        visionfm.load_encoder(dit_path, device="cpu", ensemble=0)
    with pytest.raises(TypeError, match="noise_seed"):
        visionfm.load_encoder(dit_path, device="cpu", noise_seed=1.5)


def test_layer_taps(encoder, pipe, photos):
    feats = encoder.encode(photos[:2], layers=[0, -1])
    assert sorted(feats.layers) == [0, 1]
    for v in feats.layers.values():
        assert v.shape == (2, 4, 4, 16)
    assert torch.equal(feats.layers[1], feats.patches)  # layer 1 is the default (middle) block
    assert not torch.allclose(feats.layers[0], feats.layers[1])
    with torch.no_grad():
        want0, _ = ref_features(
            pipe, torch.stack([ref_pixels(p) for p in photos[:2]]), timestep=100, block=0, class_label=1000, seed=0
        )
    torch.testing.assert_close(feats.layers[0], want0, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="out of range"):
        encoder.encode(photos[:1], layers=[2])


def test_gradients_flow(encoder, photos):
    x = encoder.preprocess(photos[:2]).requires_grad_(True)
    encoder.zero_grad()
    feats = encoder(x, layers=[0])
    (feats.pooled.square().sum() + feats.layers[0].sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert encoder.vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert encoder.transformer.pos_embed.proj.weight.grad.abs().sum() > 0
    encoder.zero_grad()


def test_pickle_only_refused(dit_path, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    shutil.copytree(dit_path, d)
    st = d / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), d / "vae" / "diffusion_pytorch_model.bin")
    st.unlink()
    with pytest.raises(PickleCheckpointError):
        visionfm.load_encoder(d, device="cpu")
    enc = visionfm.load_encoder(d, device="cpu", allow_pickle=True)
    assert enc.info.family == "dit"


def test_tiny_checkpoint_is_a_real_dit_pipeline(dit_path, pipe):
    index = json.loads((dit_path / "model_index.json").read_text())
    assert index["_class_name"] == "DiTPipeline" and "id2label" in index
    assert (dit_path / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (dit_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert pipe.labels["goldfish"] == 1
    out = pipe(class_labels=[0, 1], num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, S, S, 3)


def test_aliases_registered():
    models = {m.name: m for m in visionfm.list_models()}
    for name, source in (("dit-xl-2-256", "facebook/DiT-XL-2-256"), ("dit-xl-2-512", "facebook/DiT-XL-2-512")):
        assert models[name].family == "dit" and models[name].source == source
        assert models[name].description
    assert {m.name for m in visionfm.list_models("dit")} >= {"dit-xl-2-256", "dit-xl-2-512"}
