"""PEFT adapters on every family: trainability, identity at init, PEFT-format round trips, merging, errors.

The saved adapter is checked against the reference path: the base module loaded by its own library
(open_clip, transformers, diffusers) plus ``peft.PeftModel.from_pretrained``.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from torch import nn

import visionfm as vfm
from visionfm import adapters
from visionfm.foundation.loading import ModelNotAvailableError, PickleCheckpointError
from visionfm.testing import tiny_checkpoint

R = 4  # rank: keeps adapters under 10% of the tiny models' parameters
ADAPTER_KEYS = ("lora_", "hada_", "lokr_", "ia3_")
# case -> (tiny kind, backend, second method, its targets)
CASES = {
    "open_clip": ("clip", "open_clip", "loha", "mlp"),  # MHA attention: LoRA only
    "open_clip_resnet": ("clip-resnet", "open_clip", "ia3", "attention"),
    "hf_clip": ("clip", "transformers", "dora", "attention"),
    "siglip": ("siglip", "transformers", "lokr", "all"),
    "dinov2": ("dinov2", "transformers", "ia3", "all"),
    "sam": ("sam", "transformers", "dora", "all"),
    "dit": ("dit", "diffusers", "loha", "attention"),
}
COMBOS = [(c, "lora", "attention") for c in CASES] + [(c, m, t) for c, (_, _, m, t) in CASES.items()]
COMBO_IDS = [f"{c}-{m}-{t}" for c, m, t in COMBOS]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paths(tiny_root):
    return {c: tiny_checkpoint(kind, backend, root=tiny_root) for c, (kind, backend, _, _) in CASES.items()}


def load(paths, case: str):
    return vfm.load_encoder(paths[case], device="cpu")


def pixels(enc) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, *enc.info.image_size, generator=g).clamp(-1, 1)


def outputs(enc, x: torch.Tensor) -> torch.Tensor:
    """``pooled`` and ``patches`` of one forward, flattened into one vector."""
    with torch.no_grad():
        f = enc(x)
    return torch.cat([f.pooled.flatten(), f.patches.flatten()])


def perturb(enc, seed: int = 1) -> None:
    """Move every trainable (adapter) parameter away from its identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


def reference_encoder(case: str, path, enc):
    """The base module loaded by its own library, wrapped in our encoder class for the same forward."""
    from visionfm.foundation.clip import HFClipEncoder, OpenClipEncoder
    from visionfm.foundation.dinov2 import Dinov2Encoder
    from visionfm.foundation.dit import DiTEncoder
    from visionfm.foundation.sam import SamEncoder

    name, pp = enc.info.name, enc.preprocess_config
    if case.startswith("open_clip"):
        import open_clip

        return OpenClipEncoder(open_clip.create_model(f"local-dir:{path}").eval(), enc.tokenizer, pp, name)
    if case == "dit":
        from diffusers import DiTTransformer2DModel

        ref = DiTTransformer2DModel.from_pretrained(str(path), subfolder="transformer").eval()
        return DiTEncoder(enc.vae, ref, enc.scheduler, name=name, options={})
    import transformers

    cls = {"hf_clip": "CLIPModel", "siglip": "SiglipModel", "dinov2": "Dinov2Model", "sam": "SamModel"}[case]
    ref = getattr(transformers, cls).from_pretrained(path).eval()
    if case in ("hf_clip", "siglip"):
        return HFClipEncoder(ref, enc.tokenizer, pp, name)
    return (Dinov2Encoder if case == "dinov2" else SamEncoder)(ref, pp, name)


# -- targets ------------------------------------------------------------------------------------------
EXPECTED = {  # case -> (attention count, attention suffixes, mlp count, mlp suffixes)
    "open_clip": (2, {"attn"}, 4, {"c_fc", "c_proj"}),
    "open_clip_resnet": (4, {"q_proj", "k_proj", "v_proj", "c_proj"}, 0, set()),
    "hf_clip": (8, {"q_proj", "k_proj", "v_proj", "out_proj"}, 4, {"fc1", "fc2"}),
    "siglip": (8, {"q_proj", "k_proj", "v_proj", "out_proj"}, 4, {"fc1", "fc2"}),
    "dinov2": (8, {"q_proj", "k_proj", "v_proj", "o_proj"}, 4, {"fc1", "fc2"}),
    "sam": (4, {"qkv", "proj"}, 4, {"lin1", "lin2"}),
    "dit": (8, {"to_q", "to_k", "to_v", "0"}, 4, {"proj", "2"}),
}
IMAGE_ROOT = {"open_clip": "visual.", "open_clip_resnet": "visual.", "hf_clip": "vision_model.",
              "siglip": "vision_model.", "dinov2": "encoder.", "sam": "vision_encoder.", "dit": "transformer_blocks."}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_target_groups_per_family(paths, case):
    enc = load(paths, case)
    n_att, att, n_mlp, mlp = EXPECTED[case]
    names = adapters.target_modules(enc, "attention")
    assert len(names) == n_att and {n.rsplit(".", 1)[-1] for n in names} == att
    assert all(n.startswith(IMAGE_ROOT[case]) for n in names)
    if n_mlp:
        mlp_names = adapters.target_modules(enc, "mlp")
        assert len(mlp_names) == n_mlp and {n.rsplit(".", 1)[-1] for n in mlp_names} == mlp
        assert adapters.target_modules(enc, "all") == [n for n, _ in adapters.base_module(enc).named_modules()
                                                       if n in set(names) | set(mlp_names)]  # fmt: skip
    else:
        with pytest.raises(ValueError, match=r"ModifiedResNet.*valid groups.*attention"):
            adapters.target_modules(enc, "mlp")
    modules = dict(adapters.base_module(enc).named_modules())
    assert all(isinstance(modules[n], (nn.Linear, nn.MultiheadAttention)) for n in names)


def test_explicit_targets_stay_in_the_image_tower_unless_named(paths):
    enc = load(paths, "hf_clip")
    assert adapters.target_modules(enc, "q_proj") == [
        f"vision_model.encoder.layers.{i}.self_attn.q_proj" for i in (0, 1)
    ]
    text = "text_model.encoder.layers.0.self_attn.q_proj"
    assert adapters.target_modules(enc, [text]) == [text]
    assert adapters.target_modules(enc, r"text_model\..*\.q_proj") == [
        f"text_model.encoder.layers.{i}.self_attn.q_proj" for i in (0, 1)
    ]
    adapters.attach(enc, "lora", r=R, targets=[text, "mlp.fc1"])
    assert sorted(enc.adapter_config.target_modules) == sorted(
        [text, "vision_model.encoder.layers.0.mlp.fc1", "vision_model.encoder.layers.1.mlp.fc1"]
    )


# -- attach --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "method", "targets"), COMBOS, ids=COMBO_IDS)
def test_attach_trains_only_adapters_and_starts_as_identity(paths, case, method, targets):
    enc = load(paths, case)
    x = pixels(enc)
    before = outputs(enc, x)
    assert adapters.attach(enc, method, r=R, targets=targets) is enc
    assert adapters.peft_adapters._method_of(enc.adapter_config) == method
    assert enc.adapter_config.base_model_name_or_path == enc.info.name
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all(any(k in n for k in ADAPTER_KEYS) for n, _ in trainable)
    n_train, n_total = adapters.trainable_parameters(enc)
    assert 0 < n_train < 0.1 * n_total
    assert not enc.training  # the encoder's eval mode is kept, new adapter modules included
    assert all(not m.training for m in enc.modules())

    torch.testing.assert_close(outputs(enc, x), before, rtol=0, atol=1e-6)  # identity at init

    f = enc(x)  # every adapter parameter takes part in the forward (none silently bypassed)
    (f.pooled.square().sum() + f.patches.square().sum()).backward()
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing

    perturb(enc)
    assert (outputs(enc, x) - before).abs().max() > 1e-4


# -- save / reference load / load_adapter -------------------------------------------------------------
@pytest.mark.parametrize(("case", "method", "targets"), COMBOS, ids=COMBO_IDS)
def test_saved_adapter_loads_with_peft_and_load_adapter(paths, case, method, targets, tmp_path):
    from peft import PeftModel

    enc = adapters.attach(load(paths, case), method, r=R, targets=targets)
    perturb(enc)
    x = pixels(enc)
    ours = outputs(enc, x)
    out = adapters.save(enc, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir() if p.name != "README.md") == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == enc.info.name
    assert cfg["peft_type"] == {"dora": "LORA"}.get(method, method.upper())

    # reference: the base module loaded by open_clip / transformers / diffusers, adapter by PEFT
    ref = reference_encoder(case, paths[case], enc)
    ref_base = adapters.base_module(ref)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        pm = PeftModel.from_pretrained(ref_base, str(out))
    if case == "open_clip_resnet":  # its attention pool bypasses unmerged adapters: PEFT users merge first
        pm.merge_and_unload()
        torch.testing.assert_close(outputs(ref, x), ours, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(outputs(ref, x), ours, rtol=0, atol=1e-6)

    # our loader on a freshly loaded encoder reproduces the outputs exactly
    fresh = adapters.load_adapter(load(paths, case), out)
    assert torch.equal(outputs(fresh, x), ours)
    assert adapters.trainable_parameters(fresh)[0] == 0  # inference by default
    assert fresh.adapter_config.target_modules == enc.adapter_config.target_modules
    again = adapters.load_adapter(load(paths, case), out, trainable=True)
    assert adapters.trainable_parameters(again) == adapters.trainable_parameters(enc)


def test_pickle_only_adapter_is_refused_unless_allowed(paths, tmp_path):
    from safetensors.torch import load_file

    enc = adapters.attach(load(paths, "dinov2"), "lora", r=R)
    perturb(enc)
    x = pixels(enc)
    src = adapters.save(enc, tmp_path / "st")
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    shutil.copy(src / "adapter_config.json", pkl)
    torch.save(load_file(str(src / "adapter_model.safetensors")), pkl / "adapter_model.bin")
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True"):
        adapters.load_adapter(load(paths, "dinov2"), pkl)
    fresh = adapters.load_adapter(load(paths, "dinov2"), pkl, allow_pickle=True)
    assert torch.equal(outputs(fresh, x), outputs(enc, x))


def test_load_adapter_errors(paths, tmp_path):
    enc = adapters.attach(load(paths, "dinov2"), "lora", r=R)
    out = adapters.save(enc, tmp_path / "a")
    with pytest.raises(ValueError, match="sam.*matches no module|matches no module.*sam"):
        adapters.load_adapter(load(paths, "sam"), out)
    with pytest.raises(ValueError, match="already has a lora adapter"):
        adapters.load_adapter(enc, out)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        adapters.load_adapter(load(paths, "dinov2"), paths["dinov2"])
    with pytest.raises(ModelNotAvailableError):
        adapters.load_adapter(load(paths, "dinov2"), "no-such-org/no-such-adapter", local_files_only=True)


# -- merge ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "method", "targets"), COMBOS, ids=COMBO_IDS)
def test_merge_keeps_outputs_and_removes_adapter_layers(paths, case, method, targets):
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain_keys = set(load(paths, case).state_dict())
    enc = adapters.attach(load(paths, case), method, r=R, targets=targets)
    perturb(enc)
    x = pixels(enc)
    unmerged = outputs(enc, x)
    assert adapters.merge(enc) is enc
    torch.testing.assert_close(outputs(enc, x), unmerged, rtol=0, atol=1e-5)
    assert not any(isinstance(m, BaseTunerLayer) for m in enc.modules())
    assert set(enc.state_dict()) == plain_keys
    assert enc.adapter_config is None
    adapters.attach(enc, "lora", r=R)  # stacking: a new adapter on the merged weights
    torch.testing.assert_close(outputs(enc, x), unmerged, rtol=0, atol=1e-5)


# -- training ------------------------------------------------------------------------------------------
def _base_weights_unchanged(enc, snapshot: dict[str, torch.Tensor]) -> None:
    seen = set()
    for name, p in enc.named_parameters():
        if any(k in name for k in ADAPTER_KEYS):
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(p, snapshot[key]), key
        seen.add(key)
    assert seen == set(snapshot)


@pytest.mark.parametrize("case", ["dinov2", "open_clip"])
def test_training_moves_only_adapters(paths, case):
    enc = load(paths, case)
    snapshot = {n: p.detach().clone() for n, p in enc.named_parameters()}
    adapters.attach(enc, "lora", r=R, targets="all").train()
    x = pixels(enc)
    target = torch.randn_like(enc(x).pooled.detach())
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = (enc(x).pooled - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    enc.encode(torch.zeros(3, 8, 8, dtype=torch.uint8))  # inference mode must not leave inference tensors behind
    _base_weights_unchanged(enc, snapshot)
    assert not any(p.is_inference() for p in enc.parameters())


# -- errors --------------------------------------------------------------------------------------------
def test_clear_errors(paths):
    enc = load(paths, "dinov2")
    with pytest.raises(ValueError, match=r"unknown adapter method 'lorra'.*did you mean 'lora'"):
        adapters.attach(enc, "lorra")
    with pytest.raises(ValueError, match=r"'atention'.*dinov2.*valid groups.*attention.*mlp"):
        adapters.attach(enc, targets="atention")
    with pytest.raises(ValueError, match=r"no_such_proj.*match no module of dinov2"):
        adapters.attach(enc, targets=["no_such_proj"])
    with pytest.raises(ValueError, match="cannot adapt"):
        adapters.target_modules(enc, ["encoder.layer.0.attention"])
    with pytest.raises(TypeError, match="unknown LoraConfig option"):
        adapters.attach(enc, "lora", not_an_option=1)
    with pytest.raises(TypeError, match="attach"):
        adapters.attach(enc, "lora", target_modules=["x"])
    with pytest.raises(ValueError, match="ia3 has no rank"):
        adapters.attach(enc, "ia3", alpha=4)
    with pytest.raises(ValueError, match="no adapter to save"):
        adapters.save(enc, "unused")
    with pytest.raises(ValueError, match="no adapter to merge"):
        adapters.merge(enc)
    adapters.attach(enc, "lora", r=R)
    with pytest.raises(ValueError, match="already has a lora adapter.*merge"):
        adapters.attach(enc, "dora", r=R)

    oc = load(paths, "open_clip")
    with pytest.raises(ValueError, match="MultiheadAttention.*method='lora'"):
        adapters.attach(oc, "dora")
    with pytest.raises(ValueError, match="silently ignored"):
        adapters.target_modules(oc, ["visual.transformer.resblocks.0.attn.out_proj"])
    assert adapters.trainable_parameters(oc)[0] > 0  # failed attaches left the encoder untouched
