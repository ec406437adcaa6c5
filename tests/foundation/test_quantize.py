"""Post-training quantization (visionfm.foundation.quantize): int8 dynamic / static on the CPU, torchao weight-only."""

from __future__ import annotations

import copy
import io
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visionfm as vfm
from visionfm.foundation.dense import dense_features
from visionfm.foundation.quantize import (
    QUANTIZE_MODES,
    Int8DynamicLinear,
    Int8MultiheadAttention,
    Int8StaticLinear,
    ProjectedMultiheadAttention,
    quantize_encoder,
)
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

CPU_MODES = ("int8", "int8-static", "int8-weight")


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def _cos_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest cosine between matching rows (e.g. per image)."""
    return F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1).min().item()


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128), nn.Linear(128, 10)).eval()


def _quantize(model: nn.Module, mode: str, calibration: torch.Tensor, **kw):
    if mode.endswith("-weight"):
        pytest.importorskip("torchao")  # the "quant" extra (in "dev")
    return quantize_encoder(model, mode, calibration=calibration if mode == "int8-static" else None, **kw)


def _per_channel_error_bound(w: torch.Tensor) -> torch.Tensor:
    """Half a quantization step of symmetric per-channel int8 (scale max|w| / 127.5), per row, as [out, 1]."""
    return (w.abs().amax(dim=1, keepdim=True) / 127.5) / 2 + 1e-7


# -- Int8DynamicLinear ---------------------------------------------------------------------------------------------
def test_int8_dynamic_linear_matches_torch_dynamic_quantization():
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    lin = nn.Linear(96, 80)
    ours = Int8DynamicLinear.from_float(lin)
    ref = quantize_dynamic(nn.Sequential(copy.deepcopy(lin)), {nn.Linear: per_channel_dynamic_qconfig})[0]
    x = torch.randn(3, 7, 96)
    xt = torch.randn(7, 3, 96).transpose(0, 1)  # non-contiguous
    with torch.inference_mode():
        assert ours(x).shape == (3, 7, 80)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
        assert torch.allclose(ours(xt), ref(xt.contiguous()), atol=1e-6)
        assert torch.allclose(ours(x[0, 0]), ref(x[0, :1])[0], atol=1e-6)  # [C] input (torch's module needs 2-D)
        assert _cos(ours(x), lin(x)) > 0.999
    assert (ours.in_features, ours.out_features) == (96, 80)
    assert torch.equal(ours.bias, lin.bias.detach())
    assert torch.equal(ours.weight, ref.weight().dequantize())  # same int8 weight and scales as torch's
    assert ((ours.weight - lin.weight.detach()).abs() <= _per_channel_error_bound(lin.weight.detach())).all()
    with pytest.raises(AttributeError):
        ours.weight = torch.zeros(80, 96)
    assert Int8DynamicLinear.from_float(nn.Linear(96, 80, bias=False)).bias is None


def test_int8_linears_save_load_and_deepcopy():
    torch.manual_seed(0)
    lin, x = nn.Linear(64, 72), torch.randn(5, 64)
    with torch.inference_mode():
        y = lin(x)
    for q in (Int8DynamicLinear.from_float(lin), Int8StaticLinear.from_float(lin, (-4.0, 4.0), (-3.0, 3.0))):
        buf = io.BytesIO()
        torch.save(q.state_dict(), buf)
        fresh = type(q)(64, 72)  # empty: everything comes from the state dict
        fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
        with torch.inference_mode():
            assert torch.equal(fresh(x), q(x)) and torch.equal(copy.deepcopy(q)(x), q(x))
            assert _cos(q(x), y) > 0.999
        assert torch.equal(fresh.weight, q.weight)


def test_int8_static_linear_uses_the_calibrated_ranges():
    torch.manual_seed(0)
    lin = nn.Linear(128, 96)
    x = torch.randn(4, 9, 128)
    with torch.inference_mode():
        y = lin(x)
        q = Int8StaticLinear.from_float(lin, (x.min().item(), x.max().item()), (y.min().item(), y.max().item()))
        out = q(x)
    assert out.shape == y.shape and out.dtype == torch.float32
    assert _cos(out, y) > 0.999
    assert 0 < q.input_scale and 0 <= q.input_zero_point <= 127 and 0 <= q.output_zero_point <= 255
    # an output range half the true one clips: the static scale is fixed, unlike the dynamic one
    with torch.inference_mode():
        half = Int8StaticLinear.from_float(
            lin, (x.min().item(), x.max().item()), (y.min().item() / 2, y.max().item() / 2)
        )
        assert half(x).max() <= y.max() / 2 + half.output_scale


# -- attention -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_torch(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(96, 4, batch_first=batch_first).eval()
    ref = copy.deepcopy(mha)
    fp = ProjectedMultiheadAttention.from_float(copy.deepcopy(mha))
    q8 = Int8MultiheadAttention.from_float(mha)

    def seq(n: int) -> torch.Tensor:
        return torch.randn(2, n, 96) if batch_first else torch.randn(n, 2, 96)

    x, y, z = seq(10), seq(6), seq(10)
    u = x[0] if batch_first else x[:, 0]
    causal = torch.triu(torch.ones(10, 10, dtype=torch.bool), diagonal=1)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[1, -3:] = True
    cases = [
        ((x, x, x), {}),
        ((x, x, x), {"need_weights": False}),
        ((x, x, x), {"attn_mask": causal, "need_weights": False, "is_causal": True}),
        ((x, x, x), {"attn_mask": causal.float() * -1e4}),  # additive mask
        ((x, x, x), {"key_padding_mask": pad, "average_attn_weights": False}),
        ((x, x, x), {"attn_mask": causal.repeat(2 * 4, 1, 1), "key_padding_mask": pad}),  # [B * heads, L, S]
        ((y, x, x), {}),  # cross-attention, key is value
        ((y, x, z), {"key_padding_mask": pad}),  # all three different
        ((u, u, u), {}),  # unbatched [L, E]
    ]
    with torch.inference_mode():
        for args, kw in cases:
            (a, wa), (b, wb), (c, wc) = ref(*args, **kw), fp(*args, **kw), q8(*args, **kw)
            assert a.shape == b.shape == c.shape, kw
            assert torch.allclose(a, b, atol=1e-5), kw
            assert _cos(a, c) > 0.999, kw
            if kw.get("need_weights", True):
                assert wa.shape == wb.shape == wc.shape
                assert torch.allclose(wa, wb, atol=1e-5) and torch.allclose(wa, wc, atol=2e-2), kw
            else:
                assert wa is wb is wc is None
    for attr in ("embed_dim", "num_heads", "head_dim", "batch_first", "_qkv_same_embed_dim", "kdim", "vdim"):
        assert getattr(q8, attr) == getattr(ref, attr), attr
    assert isinstance(q8.out_proj, Int8DynamicLinear) and isinstance(q8.in_proj, Int8DynamicLinear)
    assert torch.equal(q8.in_proj_weight, q8.in_proj.weight)
    w = ref.in_proj_weight.detach()
    assert ((q8.in_proj_weight - w).abs() <= _per_channel_error_bound(w)).all()
    assert torch.equal(q8.in_proj_bias, ref.in_proj_bias.detach())
    with pytest.raises(AttributeError):
        q8.in_proj_weight = w
    with pytest.raises(RuntimeError, match="attn_mask"), torch.inference_mode():
        q8(x, x, x, is_causal=True)


def test_multihead_attention_with_separate_key_value_sizes():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(96, 4, kdim=64, vdim=80, batch_first=True).eval()
    q8 = Int8MultiheadAttention.from_float(copy.deepcopy(mha))
    q, k, v = torch.randn(2, 5, 96), torch.randn(2, 9, 64), torch.randn(2, 9, 80)
    with torch.inference_mode():
        assert _cos(mha(q, k, v)[0], q8(q, k, v)[0]) > 0.999
    assert q8.in_proj_weight is None and q8.k_proj_weight.shape == (96, 64) and q8.v_proj_weight.shape == (96, 80)
    assert q8.in_proj_bias.shape == (288,)


# -- quantize_encoder on small models ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", CPU_MODES)
def test_quantize_sequential(mode):
    model = _mlp()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 16, 128)
    report = _quantize(model, mode, x)
    with torch.inference_mode():
        assert _cos(model(x), ref(x)) > 0.99
    assert report["mode"] == mode and report["linear_converted"] == 2 and report["attention_converted"] == 0
    assert list(report["kept_float"]) == ["3"] and "min_features=64" in report["kept_float"]["3"]
    assert type(model[3]) is nn.Linear
    expected = {"int8": Int8DynamicLinear, "int8-static": Int8StaticLinear}.get(mode)
    if expected is not None:
        assert isinstance(model[0], expected) and isinstance(model[2], expected)
    else:
        assert type(model[0].weight).__name__ == "Int8Tensor"
    for i in (0, 2):
        w, w0 = model[i].weight, ref[i].weight.detach()
        w = w.dequantize() if type(w) not in (torch.Tensor, nn.Parameter) else w
        assert w.shape == w0.shape and ((w - w0).abs() <= _per_channel_error_bound(w0)).all()
    # weights: 2 x 128 x 256 float32 -> int8 (+ per-channel scales); the small head and all biases unchanged
    assert report["weight_bytes_before"] == sum(p.numel() * 4 for p in ref.parameters())
    assert report["weight_bytes_after"] < report["weight_bytes_before"] * 0.35


def test_quantize_skip_predicate_and_min_features():
    model = _mlp()
    report = quantize_encoder(model, "int8", skip=lambda name, m: name == "2", min_features=8)
    assert report["linear_converted"] == 2 and report["kept_float"] == {"2": "named by skip"}
    assert isinstance(model[3], Int8DynamicLinear) and type(model[2]) is nn.Linear


@pytest.mark.parametrize("mode", CPU_MODES)
def test_quantize_attention_modules(mode):
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {"a": nn.MultiheadAttention(64, 2, batch_first=True), "b": nn.MultiheadAttention(64, 2), "small": nn.MultiheadAttention(32, 2)}
    ).eval()  # fmt: skip
    ref = copy.deepcopy(model)
    x = torch.randn(2, 12, 64)

    def run(m: nn.ModuleDict) -> torch.Tensor:
        return torch.cat([m["a"](x, x, x)[0], m["b"](x.transpose(0, 1), *[x.transpose(0, 1)] * 2)[0].transpose(0, 1)])

    report = _quantize(_Caller(model, run), mode, x)  # int8-static calibrates through both attentions
    with torch.inference_mode():
        assert _cos(run(model), run(ref)) > 0.99
    assert report["attention_converted"] == 2 and report["linear_converted"] == 4
    assert list(report["kept_float"]) == ["model.small"] and "min_features=64" in report["kept_float"]["model.small"]
    assert type(model["small"]) is nn.MultiheadAttention
    kind = Int8MultiheadAttention if mode == "int8" else ProjectedMultiheadAttention
    assert type(model["a"]) is kind and model["b"].batch_first is False
    for k in ("a", "b"):
        w, w0 = model[k].in_proj_weight, ref[k].in_proj_weight.detach()
        assert type(w) is torch.Tensor and ((w - w0).abs() <= _per_channel_error_bound(w0)).all()


class _Caller(nn.Module):
    """Wraps a ModuleDict with the function that runs it, so int8-static can calibrate through it."""

    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model, self._fn = model, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(self.model)


def test_int8_static_keeps_what_calibration_does_not_reach():
    model = nn.ModuleDict({"used": nn.Linear(64, 64), "unused": nn.Linear(64, 64)})

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers["used"](x)

    net = Net()
    report = quantize_encoder(net, "int8-static", calibration=torch.randn(3, 64))
    assert report["linear_converted"] == 1
    assert report["kept_float"] == {"layers.unused": "not run by the calibration batch"}
    assert isinstance(model["used"], Int8StaticLinear) and type(model["unused"]) is nn.Linear


def test_errors_name_the_argument(monkeypatch):
    model = _mlp()
    with pytest.raises(ValueError, match="mode must be one of"):
        quantize_encoder(model, "int3")
    with pytest.raises(ValueError, match="calibration="):
        quantize_encoder(model, "int8-static")
    with pytest.raises(ValueError, match="calibration is used by mode='int8-static' only"):
        quantize_encoder(model, "int8", calibration=torch.randn(1, 128))
    for mode in ("int8", "int8-static"):
        with pytest.raises(ValueError, match="needs float32 weights.*bfloat16.*dtype='fp32'"):
            _quantize(copy.deepcopy(model).bfloat16(), mode, torch.randn(2, 128))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # a CUDA model without a GPU
        on_cuda = nn.Linear(128, 128, device="cuda")
    with pytest.raises(ValueError, match="runs on CPU; on CUDA use 'int8-weight' or 'int4-weight'"):
        quantize_encoder(on_cuda, "int8")
    with pytest.raises(ValueError, match="int4-weight runs on CUDA"):
        quantize_encoder(model.bfloat16(), "int4-weight")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # torchao not installed
    with pytest.raises(ImportError, match=r'pip install "visionfm\[quant\]"'):
        quantize_encoder(_mlp(), "int8-weight")
    assert QUANTIZE_MODES == ("int8", "int8-static", "int8-weight", "int4-weight")


# -- tiny real encoders: the Features contract is kept ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["clip", "dinov2", "siglip"])
@pytest.mark.parametrize("mode", CPU_MODES)
def test_quantized_encoders_keep_features(tiny_root, kind, mode):
    enc = vfm.load_encoder(tiny_checkpoint(kind, root=tiny_root), device="cpu")
    ref = copy.deepcopy(enc)
    pixels = enc.preprocess([torch.randint(0, 256, (3, 60, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)) for i in range(3)])  # fmt: skip
    n_mha = sum(isinstance(m, nn.MultiheadAttention) for m in enc.modules())
    report = _quantize(enc, mode, pixels, min_features=16)  # the tiny towers are 32-64 wide
    if mode == "int8-static" and kind == "clip":  # calibrated on images: the text tower's two blocks stay in float
        assert report["attention_converted"] == n_mha - 2
        assert all(r == "not run by the calibration batch" for r in report["kept_float"].values())
        assert sorted(report["kept_float"]) == [f"model.transformer.resblocks.{i}.{m}" for i in (0, 1) for m in ("attn", "mlp.c_fc", "mlp.c_proj")]  # fmt: skip
        assert type(enc.model.transformer.resblocks[0].attn) is nn.MultiheadAttention
    else:  # open_clip's ViT blocks and text tower; SigLIP's pooling head
        assert report["attention_converted"] == n_mha
    assert report["linear_converted"] > 0 and report["weight_bytes_after"] < report["weight_bytes_before"]
    with torch.inference_mode():
        a, b = ref(pixels, layers=[0]), enc(pixels, layers=[0])
    assert b.grid == a.grid and b.pooled.shape == a.pooled.shape and b.patches.shape == a.patches.shape
    assert b.layers[0].shape == a.layers[0].shape
    assert _cos_rows(b.pooled, a.pooled) > 0.99 and _cos_rows(b.patches, a.patches) > 0.99
    if kind == "clip":  # the text tower (quantized too) and code that reads the attention weights directly
        if mode != "int8-static":  # int8-static calibrates on images: the text tower stays in float
            assert not [n for n in report["kept_float"] if n.startswith("model.transformer")]
        with torch.inference_mode():
            assert _cos_rows(enc.encode_text(["a cat", "a dog"]), ref.encode_text(["a cat", "a dog"])) > 0.99
            da, db = dense_features(ref, pixels, "sclip"), dense_features(enc, pixels, "sclip")
        assert db.shape == da.shape and _cos_rows(db, da) > 0.99


def test_attention_weights_read_from_int4_tensors_without_dequantize():
    """torchao's int4 tensors have no ``dequantize``: ``in_proj_weight`` is read through the kernel. Checked on the
    CPU with torchao's prototype int4 CPU tensor (the tinygemm CUDA tensor is the same case, see the GPU test)."""
    pytest.importorskip("torchao")
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(128, 2, batch_first=True).eval().bfloat16()
    ref = copy.deepcopy(mha)
    attn = ProjectedMultiheadAttention.from_float(mha)
    quantize_(attn, PrototypeInt4WeightOnlyConfig(group_size=128, set_inductor_config=False))
    assert type(attn.in_proj.weight).dequantize is torch.Tensor.dequantize  # no dequantize of its own
    w, w0 = attn.in_proj_weight, ref.in_proj_weight.detach()
    assert w.shape == w0.shape and w.dtype == torch.bfloat16 and _cos(w, w0) > 0.99
    x = torch.randn(2, 8, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.allclose(attn.in_proj(x), F.linear(x, w, attn.in_proj_bias), atol=1e-2, rtol=1e-2)
        assert _cos(attn(x, x, x)[0], ref(x, x, x)[0]) > 0.99


# -- CUDA (torchao weight-only) ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["int8-weight", "int4-weight"])
def test_weight_only_on_cuda(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256), nn.Linear(200, 64))
    model = model.eval().to("cuda", torch.bfloat16)
    ref = copy.deepcopy(model)
    mha = nn.MultiheadAttention(256, 4, batch_first=True).eval().to("cuda", torch.bfloat16)
    mha_ref = copy.deepcopy(mha)
    holder = nn.ModuleDict({"mlp": model, "attn": mha})
    report = quantize_encoder(holder, mode)
    x = torch.randn(4, 16, 256, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        assert _cos(model[:3](x), ref[:3](x)) > 0.99
        assert _cos(holder["attn"](x, x, x)[0], mha_ref(x, x, x)[0]) > 0.99
    assert report["attention_converted"] == 1
    if mode == "int4-weight":  # 200 input features: not a multiple of the group size
        assert report["linear_converted"] == 4 and "group size" in report["kept_float"]["mlp.3"]
    else:
        assert report["linear_converted"] == 5 and not report["kept_float"]
    w = holder["attn"].in_proj_weight
    assert w.dtype == torch.bfloat16 and w.shape == (768, 256)
    with pytest.raises(ValueError, match="needs bfloat16"):
        quantize_encoder(nn.Linear(256, 256).cuda(), "int4-weight")
    with pytest.raises(ValueError, match="on CUDA use 'int8-weight' or 'int4-weight'"):
        quantize_encoder(nn.Linear(256, 256).cuda(), "int8")
