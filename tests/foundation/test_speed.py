"""load_encoder's speed options together: quantize through load_encoder, the speed='fast' preset, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import visionfm as vfm
from visionfm.foundation import speed
from visionfm.testing import tiny_checkpoint


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).min())


def test_quantize_int8_through_load_encoder_keeps_the_contract():
    path = tiny_checkpoint("clip-b16")
    plain = vfm.load_encoder(path, device="cpu")
    q = vfm.load_encoder(path, device="cpu", quantize="int8")
    assert q.quantize_report["linear_converted"] > 0
    assert q.speed_options == {"speed": None, "token_merging": None, "quantize": "int8", "dtype": "torch.float32"}
    x = torch.randn(2, 3, *plain.info.image_size)
    with torch.no_grad():
        a, b = plain(x, layers=[0]), q(x, layers=[0])
    assert a.patches.shape == b.patches.shape and a.grid == b.grid and a.layers[0].shape == b.layers[0].shape
    assert not torch.equal(a.pooled, b.pooled)
    assert _cos(a.pooled, b.pooled) > 0.99


def test_fast_preset_on_a_cpu_without_bf16_is_int8_and_token_merging(monkeypatch):
    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    enc = vfm.load_encoder(tiny_checkpoint("clip-b16"), device="cpu", speed="fast")
    assert enc.speed_options["quantize"] == "int8"
    assert enc.speed_options["token_merging"] == speed.FAST_TOKEN_MERGING
    assert enc.token_merging is not None and enc.dtype == torch.float32


def test_fast_preset_on_a_cpu_with_amx_is_bf16(monkeypatch):
    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "avx512_bf16"}))
    enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu", speed="fast")
    assert enc.dtype == torch.bfloat16 and enc.speed_options["quantize"] is None
    assert enc.token_merging is not None


def test_explicit_options_win_over_the_preset(monkeypatch):
    monkeypatch.setattr(speed, "cpu_flags", lambda: frozenset())
    enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu", speed="fast", token_merging=0, quantize=None)
    assert enc.token_merging is None and enc.speed_options["quantize"] == "int8"
    enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu", speed="fast", token_merging=2)
    assert enc.speed_options["token_merging"] == 2


def test_fast_preset_skips_token_merging_where_a_family_has_no_vit_blocks():
    enc = vfm.load_encoder(tiny_checkpoint("clip-resnet"), device="cpu", speed="fast")
    assert enc.token_merging is None and enc.speed_options["token_merging"] is None
    with pytest.raises(ValueError, match="token merging is not available"):
        vfm.load_encoder(tiny_checkpoint("clip-resnet"), device="cpu", token_merging=0.5)


def test_fast_generation_caches_steps_and_records_it():
    pipe = vfm.pipeline("generation", model=tiny_checkpoint("dit"), device="cpu", speed="fast")
    assert pipe.encoder.speed_options["speed"] == "fast"
    res = pipe(labels=[0], steps=4, seed=0, progress=False)
    assert res.protocol["cache"]["interval"] == speed.FAST_CACHE
    assert pipe(labels=[0], steps=4, seed=0, progress=False, cache=False).protocol["cache"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speed": "slow"}, "speed='slow' is not a speed preset"),
        ({"quantize": "int3"}, "quantize='int3' is not a mode"),
        ({"quantize": "int8-static"}, "needs calibration"),
        ({"quantize": "int8", "calibration": [np.zeros((8, 8, 3), np.uint8)]}, "only used by quantize='int8-static'"),
    ],
)
def test_bad_speed_options_fail_before_loading(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vfm.load_encoder("/nonexistent/never-read", device="cpu", **kwargs)


def test_static_int8_calibrates_on_images():
    path = tiny_checkpoint("clip-b16")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    enc = vfm.load_encoder(path, device="cpu", quantize="int8-static", calibration=images)
    plain = vfm.load_encoder(path, device="cpu")
    assert enc.quantize_report["linear_converted"] > 0
    a, b = plain.encode(images), enc.encode(images)
    assert _cos(a.pooled, b.pooled) > 0.98
