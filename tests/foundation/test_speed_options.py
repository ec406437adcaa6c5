"""Speed options of load_encoder: torch.compile and channels_last give the eager, NCHW outputs."""

from __future__ import annotations

import pytest
import torch

import visionfm as vfm
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_compiled_encoder_matches_eager(tiny_root):
    d = tiny_checkpoint("dinov2", root=tiny_root)
    eager = vfm.load_encoder(d, device="cpu")
    compiled = vfm.load_encoder(d, device="cpu", compile={"dynamic": False})
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = eager(x), compiled(x)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5) and torch.allclose(a.patches, b.patches, atol=1e-5)
    with pytest.raises(TypeError, match="compile must be"):
        vfm.load_encoder(d, device="cpu", compile="yes")


def test_channels_last_matches(tiny_root):
    d = tiny_checkpoint("sam", root=tiny_root)  # convolutions in the patch embedding and the neck
    ref = vfm.load_encoder(d, device="cpu")
    cl = vfm.load_encoder(d, device="cpu", channels_last=True)
    convs = [m for m in cl.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    x = ref.preprocess([torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)])
    with torch.inference_mode():
        assert torch.allclose(ref(x).patches, cl(x).patches, atol=1e-5)
