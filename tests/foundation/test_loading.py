"""load_encoder: name resolution, offline-first hub cache, overrides, dtype, and pickle safety."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import visionfm as vfm
from visionfm.foundation.loading import (
    CheckpointError,
    ModelNotAvailableError,
    ModelNotFoundError,
    PickleCheckpointError,
)
from visionfm.foundation.registry import ModelSpec, register_model
from visionfm.testing import tiny_checkpoint


@pytest.fixture(scope="module")
def oc_dir(tiny_root):
    return tiny_checkpoint("clip", "open_clip", root=tiny_root)


@pytest.fixture(scope="module")
def dino_dir(tiny_root):
    return tiny_checkpoint("dinov2", root=tiny_root)


def _fake_hub_cache(cache: Path, repo_id: str, files_from: Path) -> Path:
    """Lay files out exactly as huggingface_hub's cache does (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    shutil.copytree(files_from, snap, ignore=shutil.ignore_patterns(".complete"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelNotFoundError, match="dinov2-small"):
        vfm.load_encoder("dinov2-smal")


def test_unknown_override_lists_valid_options(oc_dir):
    with pytest.raises(TypeError, match="unknown option.*'foo'.*valid options"):
        vfm.load_encoder(oc_dir, foo=1)
    with pytest.raises(TypeError, match="timestep"):  # alias path validates before any download
        vfm.load_encoder("dit-xl-2-256", timestpe=5)


def test_bad_dtype_and_backend(oc_dir):
    with pytest.raises(ValueError, match="dtype 'fp8'"):
        vfm.load_encoder(oc_dir, dtype="fp8")
    with pytest.raises(ValueError, match="backend 'diffusers' is not available"):
        vfm.load_encoder(oc_dir, backend="diffusers")


def test_dtype_bf16(oc_dir, photos):
    enc32 = vfm.load_encoder(oc_dir, device="cpu")
    enc16 = vfm.load_encoder(oc_dir, device="cpu", dtype="bf16")
    assert enc16.dtype == torch.bfloat16
    f32, f16 = enc32.encode(photos[:2]), enc16.encode(photos[:2])
    assert f16.pooled.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(f32.pooled, f16.pooled.float())
    assert (cos > 0.99).all()


def test_not_a_checkpoint_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not in a format visionfm recognises.*notes.txt"):
        vfm.load_encoder(tmp_path)


def test_offline_not_cached_is_clear(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="not in the local Hugging Face cache.*offline"):
        vfm.load_encoder("facebook/dinov2-small", local_files_only=True, cache_dir=tmp_path)
    with pytest.raises(ModelNotAvailableError, match="timm/vit_base_patch16_clip_224.openai"):
        vfm.load_encoder("ViT-B-16/openai", local_files_only=True, cache_dir=tmp_path)


def test_unreachable_hub_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotAvailableError, match="neither in the local Hugging Face cache .* nor reachable"):
        vfm.load_encoder("someone/not-a-model", local_files_only=False, cache_dir=tmp_path)


def test_hub_id_served_from_cache_without_network(tmp_path, dino_dir, photos, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _fake_hub_cache(tmp_path, "facebook/dinov2-small", dino_dir)
    enc = vfm.load_encoder("dinov2-small", cache_dir=tmp_path, local_files_only=False, device="cpu")
    ref = vfm.load_encoder(dino_dir, device="cpu")
    assert enc.info.name == "dinov2-small" and enc.info.family == "dinov2"
    torch.testing.assert_close(enc.encode(photos[:1]).pooled, ref.encode(photos[:1]).pooled)


def test_open_clip_tag_served_from_cache(tmp_path, oc_dir, photos):
    _fake_hub_cache(tmp_path, "timm/vit_base_patch16_clip_224.openai", oc_dir)
    enc = vfm.load_encoder("ViT-B-16/openai", cache_dir=tmp_path, local_files_only=True, device="cpu")
    ref = vfm.load_encoder(oc_dir, device="cpu")
    assert enc.info.backend == "open_clip"
    torch.testing.assert_close(enc.encode(photos[:1]).pooled, ref.encode(photos[:1]).pooled)


def test_registered_alias_to_local_dir_and_duplicate_refused(oc_dir):
    register_model(ModelSpec(name="test-tiny-clip-local", family="clip", source=str(oc_dir), description="t"))
    assert vfm.load_encoder("test-tiny-clip-local", device="cpu").info.name == "test-tiny-clip-local"
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelSpec(name="test-tiny-clip-local", family="clip", source=str(oc_dir)))
    with pytest.raises(ValueError, match="unknown family"):
        register_model(ModelSpec(name="test-x", family="nope", source="a/b"))


class _Payload:
    """Unpickling this runs code that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled_open_clip_dir(src: Path, dst: Path, payload: object | None) -> Path:
    dst.mkdir()
    shutil.copy(src / "open_clip_config.json", dst)
    sd = load_file(str(src / "open_clip_model.safetensors"))
    obj = {"state_dict": sd, "evil": payload} if payload is not None else sd
    torch.save(obj, dst / "open_clip_pytorch_model.bin")
    return dst


def test_pickle_refused_without_opt_in(oc_dir, tmp_path):
    marker = tmp_path / "pwned"
    d = _pickled_open_clip_dir(oc_dir, tmp_path / "ckpt", _Payload(marker))
    with pytest.raises(PickleCheckpointError, match="refusing to load pickle checkpoint.*allow_pickle=True"):
        vfm.load_encoder(d)
    assert not marker.exists()


def test_malicious_pickle_not_run_even_with_opt_in(oc_dir, tmp_path):
    marker = tmp_path / "pwned"
    d = _pickled_open_clip_dir(oc_dir, tmp_path / "ckpt", _Payload(marker))
    with pytest.raises(pickle.UnpicklingError):
        vfm.load_encoder(d, allow_pickle=True)
    assert not marker.exists()


def test_plain_pickle_state_dict_loads_with_opt_in(oc_dir, tmp_path, photos):
    d = _pickled_open_clip_dir(oc_dir, tmp_path / "ckpt", None)
    enc = vfm.load_encoder(d, allow_pickle=True, device="cpu")
    ref = vfm.load_encoder(oc_dir, device="cpu")
    torch.testing.assert_close(enc.encode(photos[:1]).pooled, ref.encode(photos[:1]).pooled)


def test_transformers_pickle_dir_refused(dino_dir, tmp_path):
    d = tmp_path / "hfpickle"
    d.mkdir()
    shutil.copy(dino_dir / "config.json", d)
    torch.save(load_file(str(dino_dir / "model.safetensors")), d / "pytorch_model.bin")
    with pytest.raises(PickleCheckpointError, match="pytorch_model.bin"):
        vfm.load_encoder(d)


def test_malformed_config_names_file(tmp_path, oc_dir):
    d = tmp_path / "bad"
    shutil.copytree(oc_dir, d)
    (d / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="open_clip_config.json"):
        vfm.load_encoder(d)
    json.loads((oc_dir / "open_clip_config.json").read_text())  # the original is untouched


def test_adapter_hook_comes_from_the_adapters_package(monkeypatch, tiny_root):
    import visionfm.adapters as adapters
    from visionfm.foundation import hooks

    assert hooks.get_hook("adapter_loader", needed_for="x", provider="visionfm.adapters") is adapters.load_adapter
    monkeypatch.delitem(hooks._HOOKS, "adapter_loader")
    with pytest.raises(RuntimeError, match=r"load_encoder\(adapter=...\) needs visionfm.adapters"):
        vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), adapter="some/adapter", device="cpu")
    with pytest.raises(ValueError, match="unknown hook"):
        hooks.register_hook("nope", print)


# -- damaged checkpoints: every error names the file and what was expected -------------------------------------------
def _damaged_copy(src: Path, dst: Path, edit) -> Path:
    """Copy checkpoint ``src`` to ``dst`` and rewrite its ``model.safetensors`` state dict with ``edit(sd)``."""
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    edit(sd)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize(
    ("kind", "backend", "victim"),
    [
        ("dinov2", None, "encoder.layer.1.mlp.fc1.weight"),
        ("dinov2-registers", None, "embeddings.register_tokens"),
        ("clip", "transformers", "vision_model.encoder.layers.0.self_attn.q_proj.weight"),
        ("siglip", None, "vision_model.head.probe"),
        ("sam", None, "mask_decoder.iou_prediction_head.layers.0.weight"),
    ],
)
def test_missing_tensor_is_refused(kind, backend, victim, tiny_root, tmp_path):
    src = tiny_checkpoint(kind, backend, root=tiny_root)
    d = _damaged_copy(src, tmp_path / "ckpt", lambda sd: sd.pop(victim))
    with pytest.raises(CheckpointError, match=rf"ckpt.*model\.safetensors.*missing 1 tensor.*{re.escape(victim)}"):
        vfm.load_encoder(d, device="cpu")
    vfm.load_encoder(src, device="cpu")  # the intact checkpoint still loads (nothing spurious is reported missing)


@pytest.mark.parametrize("kind", ["owlv2", "grounding-dino"])
def test_detector_missing_tensor_is_refused(kind, tiny_root, tmp_path):
    from visionfm.foundation.detectors import OpenVocabDetector

    src = tiny_checkpoint(kind, root=tiny_root)
    victim = sorted(k for k in load_file(str(src / "model.safetensors")) if k.endswith(".weight"))[-1]
    d = _damaged_copy(src, tmp_path / "ckpt", lambda sd: sd.pop(victim))
    with pytest.raises(CheckpointError, match=rf"ckpt.*model\.safetensors.*missing 1 tensor.*{re.escape(victim)}"):
        OpenVocabDetector.load(d, device="cpu")
    OpenVocabDetector.load(src, device="cpu")  # the intact checkpoint loads


def test_wrong_shape_tensor_is_named(dino_dir, tmp_path):
    key = "encoder.layer.0.norm1.weight"
    d = _damaged_copy(dino_dir, tmp_path / "ckpt", lambda sd: sd.__setitem__(key, torch.zeros(7)))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors.*{re.escape(key)}.*\(7,\).*expected.*\(32,\)"):
        vfm.load_encoder(d, device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_corrupt_weights_file_is_named(damage, tiny_root, tmp_path):
    for kind, backend, fname in [("dinov2", None, "model.safetensors"),
                                 ("clip", "open_clip", "open_clip_model.safetensors")]:  # fmt: skip
        d = tmp_path / kind
        shutil.copytree(tiny_checkpoint(kind, backend, root=tiny_root), d)
        data = (d / fname).read_bytes()
        new = {"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(4096)}[damage]
        (d / fname).write_bytes(new)
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(d / fname))}.*not a valid safetensors file"):
            vfm.load_encoder(d, device="cpu")


def test_malformed_config_json_reports_line(dino_dir, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(dino_dir, d)
    (d / "config.json").write_text('{\n  "model_type": "dinov2",\n  "hidden_size": 32,,\n}\n')
    with pytest.raises(ValueError, match=r"config\.json.*invalid JSON at line 3") as e:
        vfm.load_encoder(d, device="cpu")
    assert "not in a format" not in str(e.value)


def test_open_clip_missing_tensor_names_file(oc_dir, tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "ckpt"
    shutil.copytree(oc_dir, d)
    sd = load_file(str(d / "open_clip_model.safetensors"))
    sd.pop("text_projection")
    save_file(sd, str(d / "open_clip_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"(?s)open_clip_model\.safetensors.*text_projection"):
        vfm.load_encoder(d, device="cpu")
