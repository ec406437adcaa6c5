"""DINO (v1) family: loading a transformers ViTModel directory, features, and DINO's position interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm.foundation.dense import resize_pos_embed
from visionfm.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def dino(tiny_root):
    return vfm.load_encoder(tiny_checkpoint("dino", root=tiny_root), device="cpu")


def test_loads_as_the_dino_family(dino):
    assert dino.info.family == "dino" and dino.info.patch_size == 8 and dino.info.image_size == (64, 64)
    assert dino.info.mean == (0.485, 0.456, 0.406) and not dino.info.has_text


def test_native_size_equals_transformers(dino):
    """At the native size the encoder is transformers' ViTModel forward (final layer norm, class token first)."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = dino(x, layers=[0])
        ref = dino.model(pixel_values=x, output_hidden_states=True)
    torch.testing.assert_close(feats.cls, ref.last_hidden_state[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.patches, ref.last_hidden_state[:, 1:].reshape(2, 8, 8, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(feats.layers[0], ref.hidden_states[1][:, 1:].reshape(2, 8, 8, -1), atol=1e-6, rtol=0)


def test_other_sizes_resize_positions_the_dino_way(dino):
    """DINO's interpolate_pos_encoding (scale factor (g + 0.1) / g0), not transformers' size= resize."""
    x = torch.randn(1, 3, 96, 72, generator=torch.Generator().manual_seed(1))
    emb = dino.model.embeddings
    table = emb.position_embeddings[0].detach()
    with torch.inference_mode():
        got = dino.embed(x)
        patches = emb.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([emb.cls_token.expand(1, -1, -1), patches], 1)
        want = tokens + resize_pos_embed(table, 1, (8, 8), (12, 9), "dino")
        other = emb(x, interpolate_pos_encoding=True)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (got - other).abs().max() > 1e-4  # transformers' own resize differs: the test can tell them apart
    assert dino(x).patches.shape == (1, 12, 9, 32)


def test_encode_real_photo(dino, photos):
    f = dino.encode(photos[0])
    assert f.patches.shape == (1, 8, 8, 32) and torch.isfinite(f.pooled).all()
    assert np.isfinite(F.normalize(f.pooled, dim=-1).numpy()).all()
