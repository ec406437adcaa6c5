"""RADIO family: parity with transformers' ``RadioModel`` on a tiny random checkpoint, resolution snapping, and PEFT
adapters that load with plain ``peft``."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import radio  # registers the family (until families.py imports it)
from visionfm.testing import tiny_checkpoint

ATOL = 1e-4
PREFIX = 3 + 2  # 3 CLS tokens + 2 registers in the tiny checkpoint
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def path(tiny_root):
    return tiny_checkpoint("radio", root=tiny_root)


@pytest.fixture(scope="module")
def enc(path):
    return vfm.load_encoder(path, device="cpu")


@pytest.fixture(scope="module")
def model(path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path).eval()


def _grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return tokens[:, PREFIX:].reshape(tokens.shape[0], *grid, tokens.shape[-1])


def _check_against(f, out, grid):
    last = out.last_hidden_state
    torch.testing.assert_close(f.pooled, out.summary, atol=ATOL, rtol=0)
    torch.testing.assert_close(f.patches, out.features.reshape(-1, *grid, 32), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.patches, _grid(last, grid), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.cls, last[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(f.registers, last[:, 3:5], atol=ATOL, rtol=0)


def test_detect_and_info(enc, path, tmp_path):
    assert radio.detect(path) == "transformers"
    assert radio.detect(tmp_path) is None
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) == ["config.json", "model.safetensors"]
    i = enc.info
    assert isinstance(enc, radio.RadioEncoder) and not enc.training
    assert (i.family, i.backend, i.name, i.has_text) == ("radio", "transformers", str(path), False)
    # pooled is the summary: 2 of the 3 CLS tokens (summary_idxs [0, 2]) flattened
    assert (i.embed_dim, i.width, i.patch_size, i.image_size, i.num_layers, i.num_registers) == (
        64, 32, 16, (64, 64), 2, 2)  # fmt: skip
    assert i.mean == (0.0, 0.0, 0.0) and i.std == (1.0, 1.0, 1.0)


def test_preprocess_is_resize_crop_rescale_in_unit_range(enc, photos):
    import torchvision.transforms.v2.functional as tvF
    from torchvision.transforms import InterpolationMode

    from visionfm.data.images import load_images

    ours = enc.preprocess(photos)
    assert ours.shape == (4, 3, 64, 64) and ours.min() >= 0 and ours.max() <= 1
    for k, im in enumerate(load_images(photos)):
        h, w = im.shape[-2:]
        size = [64, int(64 * w / h)] if h <= w else [int(64 * h / w), 64]
        r = tvF.resize(im[None], size, interpolation=InterpolationMode.BICUBIC, antialias=True)[0]
        top, left = int((r.shape[-2] - 64) / 2), int((r.shape[-1] - 64) / 2)
        want = r[:, top : top + 64, left : left + 64].float() / 255
        torch.testing.assert_close(ours[k], want, atol=1e-6, rtol=0)
    # normalize() passes [0, 1] pixels through: the model conditions its input itself
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(enc.normalize(x), x, atol=0, rtol=0)


def test_features_match_reference(enc, model, photos):
    pixels = enc.preprocess(photos)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    f = enc.encode(photos)
    assert f.grid == (4, 4) and f.layers == {}
    assert f.pooled.shape == (4, 64) and f.cls.shape == (4, 32) and f.registers.shape == (4, 2, 32)
    assert f.patches.shape == (4, 4, 4, 32)
    _check_against(f, out, (4, 4))
    last = out.last_hidden_state
    torch.testing.assert_close(f.pooled, torch.cat([last[:, 0], last[:, 2]], -1), atol=ATOL, rtol=0)
    torch.testing.assert_close(f.pooled[:, :32], f.cls, atol=0, rtol=0)


def test_layers_match_hidden_states(enc, model):
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
        f = enc(x, layers=[0, -1])
    assert set(f.layers) == {0, 1}
    for i, t in f.layers.items():
        torch.testing.assert_close(t, _grid(out.hidden_states[i + 1], (4, 6)), atol=ATOL, rtol=0)
    # RADIO has no final norm: the last block's output is the patch features
    torch.testing.assert_close(f.layers[1], f.patches, atol=0, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        enc(x, layers=[2])


@pytest.mark.parametrize("size", [(64, 96), (96, 48), (128, 128), (32, 160)])
def test_any_patch_multiple_resolution_matches_model(enc, model, size, caplog):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.INFO, logger="visionfm.foundation.radio"), torch.no_grad():
        out = model(pixel_values=x)
        f = enc(x, layers=[0])
    grid = (size[0] // 16, size[1] // 16)
    assert f.grid == grid and f.layers[0].shape == (2, *grid, 32)
    _check_against(f, out, grid)
    assert "not a multiple of the patch" not in caplog.text  # nothing snapped


def test_snapping_resizes_to_nearest_patch_multiple_and_logs(path, model, caplog):
    enc = vfm.load_encoder(path, device="cpu")
    assert radio.snap(70, 16) == 64 and radio.snap(100, 16) == 96 and radio.snap(5, 16) == 16
    assert radio.snap_size((72, 88), 16) == (80, 96)  # ties round up
    x = torch.rand(1, 3, 70, 100, generator=torch.Generator().manual_seed(2))
    with caplog.at_level(logging.INFO, logger="visionfm.foundation.radio"), torch.no_grad():
        f = enc(x)
        enc(x)  # logged once per input size
    msgs = [r.getMessage() for r in caplog.records if "not a multiple of the patch" in r.getMessage()]
    assert len(msgs) == 1 and "input 70x100" in msgs[0] and "resized to 64x96" in msgs[0]
    assert f.grid == (4, 6)
    snapped = torch.nn.functional.interpolate(x, size=(64, 96), mode="bicubic", align_corners=False, antialias=True)
    with torch.no_grad():
        out = model(pixel_values=snapped)
    _check_against(f, out, (4, 6))


def test_default_preprocessing_logged_without_config(path, caplog):
    with caplog.at_level(logging.INFO, logger="visionfm.foundation.radio"):
        enc = vfm.load_encoder(path, device="cpu")
    assert "no preprocessor_config.json" in caplog.text
    assert enc.preprocess_config == radio.default_preprocess(64, 16)
    assert radio.default_preprocess(70, 16).crop_size == (64, 64)


def _with_processor(path, tmp_path, **cfg):
    d = tmp_path / "ckpt"
    shutil.copytree(path, d)
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    return d


def test_nvidia_processor_config_resizing_nothing_gives_default(path, tmp_path):
    """What nvidia/C-RADIOv4-H ships: a CLIPImageProcessor that resizes, crops and normalises nothing."""
    d = _with_processor(
        path, tmp_path, crop_size={"height": 512, "width": 512}, do_center_crop=False, do_convert_rgb=True,
        do_normalize=False, do_rescale=True, do_resize=False, image_processor_type="CLIPImageProcessor",
        processor_class="CLIPProcessor", resample=3, size={"shortest_edge": 512},
    )  # fmt: skip
    enc = vfm.load_encoder(d, device="cpu")
    assert enc.preprocess_config == radio.default_preprocess(64, 16)


def test_resizing_processor_config_is_followed_snapped_and_normalisation_dropped(path, tmp_path, photos, caplog):
    d = _with_processor(
        path, tmp_path, do_resize=True, size={"shortest_edge": 100}, do_center_crop=True,
        crop_size={"height": 70, "width": 90}, image_processor_type="CLIPImageProcessor", resample=3,
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="visionfm.foundation.radio"):
        enc = vfm.load_encoder(d, device="cpu")
    pp = enc.preprocess_config
    assert (pp.resize, pp.resize_size, pp.crop_size) == ("shortest_edge", 100, (64, 96))
    assert pp.mean == (0.0, 0.0, 0.0) and pp.std == (1.0, 1.0, 1.0)
    assert "ignoring the preprocessor config's normalisation" in caplog.text and "snapped" in caplog.text
    x = enc.preprocess(photos)
    assert x.shape == (4, 3, 64, 96) and x.min() >= 0 and x.max() <= 1
    assert enc.encode(photos[:1]).grid == (4, 6)


def test_aliases_registered():
    specs = {m.name: m for m in vfm.list_models(family="radio")}
    want = {
        "c-radiov4-h": "nvidia/C-RADIOv4-H",
        "c-radiov4-so400m": "nvidia/C-RADIOv4-SO400M",
        "c-radiov3-b": "nvidia/C-RADIOv3-B",
        "c-radiov3-l": "nvidia/C-RADIOv3-L",
        "c-radiov3-h": "nvidia/C-RADIOv3-H",
        "c-radiov3-g": "nvidia/C-RADIOv3-g",
    }
    assert {k: s.source for k, s in specs.items()} == want
    assert all(s.family == "radio" and s.backend == "transformers" and s.description for s in specs.values())


def test_gradients_flow(enc, photos):
    enc.zero_grad(set_to_none=True)
    f = enc(enc.preprocess(photos[:1]))
    assert f.pooled.requires_grad
    f.pooled.sum().backward()
    w = enc.model.embeddings.patch_projection.weight
    assert w.grad is not None and w.grad.abs().sum() > 0
    enc.zero_grad(set_to_none=True)


# -- PEFT ---------------------------------------------------------------------------------------------
def _outputs(enc, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = enc(x)
    return torch.cat([f.pooled.flatten(), f.patches.flatten(), f.registers.flatten()])


def test_target_groups(enc):
    from visionfm import adapters

    att = adapters.target_modules(enc, "attention")
    mlp = adapters.target_modules(enc, "mlp")
    assert len(att) == 8 and {n.rsplit(".", 1)[1] for n in att} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert len(mlp) == 4 and {n.rsplit(".", 1)[1] for n in mlp} == {"fc1", "fc2"}
    assert all(n.startswith("encoder.layer.") for n in att + mlp)


def test_lora_adapter_saves_and_loads_with_peft(enc, path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    from visionfm import adapters

    ours_enc = adapters.attach(vfm.load_encoder(path, device="cpu"), "lora", r=4, targets="all")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the adapters away from identity
        for p in ours_enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ours = _outputs(ours_enc, x)
    assert (ours - _outputs(enc, x)).abs().max() > 1e-4
    out = adapters.save(ours_enc, tmp_path / "adapter")
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"

    # reference: the transformers model with the adapter loaded by plain PEFT
    base = AutoModel.from_pretrained(path).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        ref = peft_model(pixel_values=x)
    ref_flat = torch.cat([ref.summary.flatten(), ref.features.flatten(), ref.last_hidden_state[:, 3:5].flatten()])
    torch.testing.assert_close(ref_flat, ours, rtol=0, atol=1e-6)

    fresh = adapters.load_adapter(vfm.load_encoder(path, device="cpu"), out)
    assert torch.equal(_outputs(fresh, x), ours)
