"""Student family: bit-exact save/load, the Features contract, the CLIP teacher's text tower, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import visionfm as vfm
from visionfm.foundation import student as st
from visionfm.foundation.loading import PickleCheckpointError
from visionfm.testing import tiny_checkpoint
from visionfm.testing.student import tiny_config, write_tiny_student

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def _registered():
    # The lead registers the family from families.py; calling register() again is a no-op either way.
    st.register()
    assert vfm.foundation.registry.get_family("student").name == "student"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An in-memory random student and the directory it was saved to."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = st.build_student(tiny_config()).eval()
    return enc, st.save_student(enc, tmp_path_factory.mktemp("student") / "s")


@pytest.fixture(scope="module")
def loaded(saved):
    return vfm.load_encoder(saved[1], device="cpu")


@pytest.fixture(scope="module")
def clip_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


@pytest.fixture(scope="module")
def text_student(clip_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("student-text") / "s"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        write_tiny_student(d, text_from=clip_dir)
    return d


def _pixels(b: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# -- 1. round trip ------------------------------------------------------------------------------------
def test_load_encoder_round_trip_is_bit_exact(saved, loaded):
    enc, path = saved
    assert st.detect(path) == "torch"
    assert isinstance(loaded, st.StudentEncoder)
    assert loaded.info.family == "student" and loaded.info.backend == "torch"
    assert loaded.config == enc.config
    sd_a, sd_b = enc.state_dict(), loaded.state_dict()
    assert list(sd_a) == list(sd_b)
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    x = _pixels()
    with torch.no_grad():
        fa, fb = enc(x, layers=[0, -1]), loaded(x, layers=[0, -1])
        for name in ("pooled", "patches", "cls", "registers"):
            assert torch.equal(getattr(fa, name), getattr(fb, name)), name
        assert all(torch.equal(fa.layers[i], fb.layers[i]) for i in (0, 1))
        for teacher in enc.teachers:
            (sa, pa), (sb, pb) = enc.adaptor(x, teacher), loaded.adaptor(x, teacher)
            assert torch.equal(pa, pb)
            assert (sa is None and sb is None) or torch.equal(sa, sb)


def test_save_from_modules_matches_encoder(saved, tmp_path):
    enc, _ = saved
    out = st.save_student((enc.student, dict(enc.adaptors.items())), tmp_path / "m")
    doc = json.loads((out / st.CONFIG_NAME).read_text())
    assert doc["format"] == "visionfm-student/1"
    again = st.load_student(out)
    assert again.config == enc.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in enc.state_dict().items())
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "student_config.json"]


# -- 2. features contract -----------------------------------------------------------------------------
def test_features_contract(loaded):
    i = loaded.info
    assert (i.embed_dim, i.width, i.patch_size, i.image_size) == (32, 32, 8, (32, 32))
    assert (i.num_layers, i.num_registers) == (2, 2)
    assert not i.has_text
    x = _pixels(2)
    with torch.no_grad():
        f = loaded(x, layers=[-1, 0])
    assert tuple(f.pooled.shape) == (2, 32) and tuple(f.patches.shape) == (2, 4, 4, 32) and f.grid == (4, 4)
    assert tuple(f.cls.shape) == (2, 32) and tuple(f.registers.shape) == (2, 2, 32)
    assert sorted(f.layers) == [0, 1] and all(tuple(t.shape) == (2, 4, 4, 32) for t in f.layers.values())
    with torch.no_grad():  # taps are raw block outputs: the final norm of the last one gives the patches
        torch.testing.assert_close(loaded.student.norm(f.layers[1]), f.patches)
        # pooled is the CLIP adaptor's summary of the class token
        torch.testing.assert_close(loaded.adaptor(f, "clip")[0], f.pooled)
    with pytest.raises(ValueError, match="out of range"):
        loaded(x, layers=[2])


def test_non_native_size_and_encode(loaded, photos):
    with torch.no_grad():
        f = loaded(_pixels(2, 48, 40), layers=[0])
        summary, dense = loaded.adaptor(f, "dino")
    assert f.grid == (6, 5) and tuple(f.patches.shape) == (2, 6, 5, 32) and tuple(f.layers[0].shape) == (2, 6, 5, 32)
    assert tuple(summary.shape) == (2, 24) and tuple(dense.shape) == (2, 6, 5, 24)
    assert loaded.adaptor(f, "sam")[0] is None
    feats = loaded.encode(photos[:2])
    assert tuple(feats.pooled.shape) == (2, 32) and feats.grid == (4, 4)


def test_batch_independence(loaded):
    x = _pixels(3)
    with torch.no_grad():
        full = loaded(x, layers=[0])
        for b in range(3):
            one = loaded(x[b : b + 1], layers=[0])
            for name in ("pooled", "patches", "cls", "registers"):
                torch.testing.assert_close(getattr(one, name)[0], getattr(full, name)[b], atol=1e-5, rtol=0)
            torch.testing.assert_close(one.layers[0][0], full.layers[0][b], atol=1e-5, rtol=0)


def test_without_clip_adaptor_pooled_is_cls():
    cfg = st.StudentConfig(
        image_size=16, patch_size=8, width=16, depth=1, heads=2, adaptors={"dino": st.AdaptorConfig(8, 8, 16, "dino")}
    )
    enc = st.build_student(cfg).eval()
    with torch.no_grad():
        f = enc(_pixels(1, 16, 16))
    assert enc.info.embed_dim == 16 and torch.equal(f.pooled, f.cls) and f.registers is None
    with pytest.raises(TypeError, match="no 'clip' adaptor"):
        enc.dense_features(_pixels(1, 16, 16))
    with pytest.raises(TypeError, match="no text tower"):
        enc.encode_text("a cat")


# -- 3. text through the CLIP teacher ------------------------------------------------------------------
def test_encode_text_and_zero_shot(text_student, clip_dir, photos):
    enc = vfm.load_encoder(text_student, device="cpu")
    clip = vfm.load_encoder(clip_dir, device="cpu")
    assert enc.info.has_text and enc.info.embed_dim == clip.info.embed_dim
    texts = ["a photo of a cat", "a dog", "coffee"]
    assert torch.equal(enc.encode_text(texts), clip.encode_text(texts))
    assert enc.logit_scale == clip.logit_scale and enc.logit_bias == clip.logit_bias
    with torch.no_grad():
        dense = enc.dense_features(_pixels(2))
    assert tuple(dense.shape) == (2, 4, 4, clip.info.embed_dim)

    clf = vfm.pipeline("zero-shot-classification", model=str(text_student), device="cpu")
    out = clf(photos[:2], labels=["cat", "astronaut", "coffee"])
    assert len(out) == 2
    for res in out:
        assert {r["label"] for r in res} <= {"cat", "astronaut", "coffee"}
        assert abs(sum(r["score"] for r in res) - 1) < 1e-4


def test_relative_text_from_resolves_against_student_dir(clip_dir, tmp_path):
    cfg = tiny_config(text_from="teacher_clip", clip_dim=32)
    d = st.save_student(st.build_student(cfg), tmp_path / "s")
    shutil.copytree(clip_dir, d / "teacher_clip")
    enc = st.load_student(d)
    assert enc.text_source == str(d / "teacher_clip")
    assert tuple(enc.encode_text(["a cat"]).shape) == (1, 32)


# -- 4. errors ------------------------------------------------------------------------------------------
def test_missing_weights(saved, tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    shutil.copy(saved[1] / st.CONFIG_NAME, d)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        vfm.load_encoder(d, device="cpu")


def test_pickle_only_refused(saved, tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    shutil.copy(saved[1] / st.CONFIG_NAME, d)
    torch.save(saved[0].state_dict(), d / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match="pickle"):
        vfm.load_encoder(d, device="cpu")
    for allow in (False, True):  # safetensors only, even when the caller opts in to pickles
        with pytest.raises(PickleCheckpointError):
            vfm.load_encoder(d, device="cpu", allow_pickle=allow)


def test_unknown_teacher_lists_known(loaded):
    with pytest.raises(KeyError, match=r"siglip.*\['clip', 'dino', 'sam'\]"):
        loaded.adaptor(_pixels(1), "siglip")


def test_bad_configs_and_mismatched_weights(saved, tmp_path):
    with pytest.raises(ValueError, match="patch_dim == summary_dim"):
        st.AdaptorConfig(summary_dim=16, patch_dim=8, kind="clip")
    with pytest.raises(ValueError, match="kind"):
        st.AdaptorConfig(8, 8, kind="vit")
    with pytest.raises(ValueError, match="no adaptor has kind='clip'"):
        st.StudentConfig(adaptors={"dino": st.AdaptorConfig(8, 8)}, text_from="x")
    with pytest.raises(ValueError, match="teacher names"):
        st.StudentConfig(adaptors={"a.b": st.AdaptorConfig(8, 8)})
    with pytest.raises(ValueError, match="unknown student config keys"):
        st.StudentConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="backend"):
        write_tiny_student(tmp_path / "x", backend="onnx")

    d = tmp_path / "s"
    shutil.copytree(saved[1], d)
    doc = json.loads((d / st.CONFIG_NAME).read_text())
    doc["config"]["depth"] = 3
    (d / st.CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"missing \['student\.blocks\.2"):
        vfm.load_encoder(d, device="cpu")
    doc["format"] = "visionfm-student/99"
    (d / st.CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="visionfm-student/1"):
        vfm.load_encoder(d, device="cpu")


def test_register_is_idempotent():
    assert st.register() is st.register()
