"""Token merging: the Features contract on every ViT family, exact restoration invariants, bit-identical when off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import visionfm as vfm
from visionfm.foundation.token_merging import TokenMerging, TokenMergingSites, apply_token_merging
from visionfm.testing import tiny_checkpoint

SEQUENCE_KINDS = ["aimv2", "clip", "clip-timm-vit", "dino", "dinov2-registers", "dinov3", "radio", "siglip", "student",
                  "timm-vit"]  # fmt: skip
MLP_KINDS = ["sam", "sam2", "sam3"]


def _features(enc, x, layers):
    with torch.no_grad():
        return enc(x, layers=layers)


def _assert_same_layout(a, b):
    assert a.grid == b.grid
    assert a.pooled.shape == b.pooled.shape and a.patches.shape == b.patches.shape
    for name in ("cls", "registers"):
        va, vb = getattr(a, name), getattr(b, name)
        assert (va is None) == (vb is None)
        if va is not None:
            assert va.shape == vb.shape
    assert sorted(a.layers) == sorted(b.layers) and a.layers
    for k in a.layers:
        assert a.layers[k].shape == b.layers[k].shape


@pytest.mark.parametrize("kind", SEQUENCE_KINDS + MLP_KINDS)
def test_contract_kept_and_tokens_reduced(kind):
    enc = vfm.load_encoder(tiny_checkpoint(kind), device="cpu")
    torch.manual_seed(0)
    x = torch.randn(2, 3, *enc.info.image_size)
    layers = [0, enc.info.num_layers - 1]
    base = _features(enc, x, layers)
    tm = apply_token_merging(enc, 0.5)
    sites = enc.token_merging_sites()
    seen: list[int] = []
    target = sites.blocks[-1] if sites.mode == "sequence" else getattr(sites.blocks[-1], sites.mlp_attr)

    def count(_m, args, kwargs):
        t = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
        seen.append(t.shape[1] if sites.mode == "sequence" else t[0].numel() // t.shape[-1])

    h = target.register_forward_pre_hook(count, with_kwargs=True)
    merged = _features(enc, x, layers)
    h.remove()
    _assert_same_layout(base, merged)
    full = base.grid[0] * base.grid[1] + (sites.prefix if sites.mode == "sequence" else 0)
    assert seen and seen[0] < full, f"{kind}: the last block saw {seen[0]} tokens of {full}"
    assert not torch.equal(base.patches, merged.patches)
    cos = nn.functional.cosine_similarity(base.pooled, merged.pooled).min()
    assert cos > 0.5, f"{kind}: pooled cosine {cos:.3f}"
    tm.remove()
    again = _features(enc, x, layers)
    assert torch.equal(again.patches, base.patches) and torch.equal(again.pooled, base.pooled)


@pytest.mark.parametrize("kind", ["clip", "dinov2", "sam"])
def test_off_is_bit_identical_to_a_plain_load(kind):
    path = tiny_checkpoint(kind)
    plain = vfm.load_encoder(path, device="cpu")
    off = vfm.load_encoder(path, device="cpu", token_merging=None, quantize=None, speed=None)
    x = torch.randn(2, 3, *plain.info.image_size)
    a, b = _features(plain, x, [0]), _features(off, x, [0])
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.patches, b.patches)
    assert torch.equal(a.layers[0], b.layers[0])
    assert off.speed_options == {} and off.token_merging is None


@pytest.mark.parametrize("kind", ["clip-resnet", "dinov3-convnext", "siglip2-naflex", "edgetam"])
def test_families_without_vit_blocks_refuse_clearly(kind):
    with pytest.raises(ValueError, match="token merging is not available"):
        vfm.load_encoder(tiny_checkpoint(kind), device="cpu", token_merging=0.5)


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (1.5, ValueError), ("8", TypeError), (True, TypeError)])
def test_bad_values_name_the_argument(value, error):
    with pytest.raises(error, match="token_merging"):
        vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu", token_merging=value)


# -- the algorithm on identity blocks: exact invariants ----------------------------------------------------------------
def _run(blocks, x):
    for b in blocks:
        x = b(x)
    return x


def test_sequence_duplicates_are_restored_exactly():
    torch.manual_seed(0)
    pairs = torch.randn(2, 8, 16)
    tokens = pairs.repeat_interleave(2, dim=1)  # tokens 2k and 2k+1 identical: A/B partners
    x = torch.cat([torch.randn(2, 1, 16), tokens], dim=1)
    blocks = nn.ModuleList([nn.Identity() for _ in range(2)])  # one merge, of every pair
    tm = TokenMerging(TokenMergingSites(blocks=blocks, prefix=1), 8)
    out = _run(blocks, x)
    assert out.shape == x.shape
    assert int(tm._map.max()) + 1 == 8
    torch.testing.assert_close(out, x)
    tm.remove()


def test_sequence_unmerged_tokens_are_size_weighted_group_means():
    torch.manual_seed(1)
    x = torch.randn(3, 2 + 30, 8)  # two prefix tokens, 30 patches
    blocks = nn.ModuleList([nn.Identity() for _ in range(4)])
    tm = TokenMerging(TokenMergingSites(blocks=blocks, prefix=2), 5)
    out = _run(blocks, x)
    groups = tm._map  # [B, 30]: the final token each patch went into
    assert groups.shape == (3, 30)
    assert int(groups.max()) + 1 == 30 - 3 * 5  # three merges of 5 tokens
    torch.testing.assert_close(out[:, :2], x[:, :2])
    for b in range(3):
        for g in groups[b].unique():
            members = (groups[b] == g).nonzero().squeeze(1)
            expect = x[b, 2 + members].mean(0)
            torch.testing.assert_close(out[b, 2 + members], expect.expand(len(members), -1), atol=1e-5, rtol=1e-5)


def test_sequence_first_layout_and_rotary_tables_follow_tokens():
    torch.manual_seed(2)
    seen = {}

    class Rec(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.i = i

        def forward(self, x, pos=None):
            seen[self.i] = (x.shape, pos[0].shape)
            return x

    blocks = nn.ModuleList([Rec(i) for i in range(3)])
    tm = TokenMerging(TokenMergingSites(blocks=blocks, prefix=1, batch_first=False, rope_kwarg="pos"), 3)
    x = torch.randn(1 + 12, 2, 4)  # [N, B, C]
    cos = torch.arange(12.0)[:, None].expand(12, 6)  # row k holds the position k
    for b in blocks:
        x = b(x, pos=(cos, cos))
    assert seen[0] == (torch.Size([13, 2, 4]), torch.Size([12, 6]))
    assert seen[1] == (torch.Size([10, 2, 4]), torch.Size([2, 1, 9, 6]))
    assert seen[2][0] == torch.Size([7, 2, 4])
    assert x.shape == (13, 2, 4)
    # each current token's table row is the original position of a patch that it stands for
    for b in range(2):
        rows = tm._slice_rope((cos,))[0][b, 0, :, 0].long()
        for cur, pos in enumerate(rows.tolist()):
            assert tm._map[b, pos] == cur


def test_mlp_mode_merges_inside_cells_and_restores_the_grid():
    torch.manual_seed(3)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Identity()

        def forward(self, x):
            return self.mlp(x)

    blocks = nn.ModuleList([Block()])
    x = torch.randn(2, 5, 7, 4)  # odd sides: the last row and column are left as they are
    tm = TokenMerging(TokenMergingSites(blocks=blocks, mode="mlp"), 6)
    out = blocks[0](x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, 4], x[:, 4])
    torch.testing.assert_close(out[:, :, 6], x[:, :, 6])
    changed = (out - x).abs().amax(-1) > 1e-6
    assert int(changed.sum()) >= 6 * 2  # per image: six merged tokens and their destinations
    # in every 2x2 cell the changed tokens share one value: the mean of themselves and the cell's top-left token
    for b in range(2):
        for i in range(0, 4, 2):
            for j in range(0, 6, 2):
                cell, orig = out[b, i : i + 2, j : j + 2].reshape(4, -1), x[b, i : i + 2, j : j + 2].reshape(4, -1)
                moved = (cell - orig).abs().amax(-1) > 1e-6
                if moved.any():
                    group = moved.clone()
                    group[0] = True
                    torch.testing.assert_close(cell[group], orig[group].mean(0).expand(int(group.sum()), -1))
    tm.remove()
    torch.testing.assert_close(blocks[0](x), x)


def test_mlp_mode_duplicate_cells_are_exact_and_ratio_is_bounded():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Linear(4, 4)

        def forward(self, x):
            return self.mlp(x)

    torch.manual_seed(4)
    blocks = nn.ModuleList([Block()])
    coarse = torch.randn(1, 3, 3, 4)
    x = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)  # each 2x2 cell constant
    want = blocks[0](x)
    TokenMerging(TokenMergingSites(blocks=blocks, mode="mlp"), 0.75)
    torch.testing.assert_close(blocks[0](x), want)
    with pytest.raises(ValueError, match="at most 0.75"):
        TokenMerging(TokenMergingSites(blocks=blocks, mode="mlp"), 0.8)


# -- under encode, the pipelines and the eval runner --------------------------------------------------------------------
def test_encode_and_zero_shot_seg_keep_full_resolution_outputs():
    path = tiny_checkpoint("clip-b16-12layer")  # more than two blocks: tokens are merged before the last
    images = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    plain = vfm.load_encoder(path, device="cpu")
    fast = vfm.load_encoder(path, device="cpu", token_merging=0.4)
    a, b = plain.encode(images, batch_size=2), fast.encode(images, batch_size=2)
    assert a.patches.shape == b.patches.shape and a.pooled.shape == b.pooled.shape
    seg_a = vfm.pipeline("zero-shot-seg", model=path, device="cpu")(images[0], labels=["a", "b"])
    seg_b = vfm.pipeline("zero-shot-seg", model=path, device="cpu", token_merging=0.4)(images[0], labels=["a", "b"])
    assert seg_a.label_map.shape == seg_b.label_map.shape == (48, 64)
    assert seg_a.probs.shape == seg_b.probs.shape


def test_eval_fingerprint_tells_merged_models_apart():
    from visionfm.eval.keys import model_fingerprint

    path = tiny_checkpoint("dinov2")
    plain = vfm.load_encoder(path, device="cpu")
    merged = vfm.load_encoder(path, device="cpu", token_merging=2)
    assert model_fingerprint(plain) == model_fingerprint(vfm.load_encoder(path, device="cpu"))
    assert model_fingerprint(plain) != model_fingerprint(merged)


def test_eval_suite_runs_with_speed_options_and_records_them(tmp_path):
    from visionfm.eval.runner import Runner
    from visionfm.eval.suite import parse_suite

    suite = parse_suite({
        "name": "tm",
        "datasets": {"test": {"source": "toyworld", "split": "test", "num": 8, "seed": 3, "label": "shape"}},
        "tasks": [{"name": "zs", "task": "zero_shot_classification", "dataset": "test", "templates": ["a {}."]}],
    })  # fmt: skip
    path = str(tiny_checkpoint("clip"))
    plain = Runner(suite, path, tmp_path / "a", batch_size=4, chunk_size=4)
    merged = Runner(suite, path, tmp_path / "b", batch_size=4, chunk_size=4, load_options={"token_merging": 0.5})
    assert merged.encoder.speed_options["token_merging"] == 0.5 and plain.encoder.speed_options == {}
    assert merged.fingerprint != plain.fingerprint
    result = merged.run()["results"][0]
    assert result["samples"] == 8 and "error" not in result


def test_cli_speed_arguments_reach_load_encoder():
    from visionfm.cli import _speed_options, build_parser

    args = build_parser().parse_args(["eval", "toyworld", "--model", "m", "--token-merging", "8", "--quantize", "int8"])
    assert _speed_options(args) == {"token_merging": 8, "quantize": "int8"}
    args = build_parser().parse_args(["run", "zero-shot-seg", "x.png", "--token-merging", "0.5", "--speed", "fast"])
    assert _speed_options(args) == {"speed": "fast", "token_merging": 0.5}


@pytest.fixture(scope="module")
def deep_clips(tmp_path_factory):
    """CLIPs with more than two blocks (so merging happens before the last one), in each dense tower's format."""
    from visionfm.foundation.clip import convert_checkpoint

    deep = tiny_checkpoint("clip-b16-12layer")
    hf = convert_checkpoint(deep, tmp_path_factory.mktemp("hf") / "clip12", to="transformers")
    return {"open_clip": deep, "timm": tiny_checkpoint("clip-timm-vit"), "transformers": hf}


@pytest.mark.parametrize("tower", ["open_clip", "timm", "transformers"])
@pytest.mark.parametrize("mode", ["maskclip", "sclip"])
def test_dense_modes_run_their_last_block_on_the_full_grid(deep_clips, tower, mode):
    from visionfm.foundation.dense import dense_features

    path = deep_clips[tower]
    plain = vfm.load_encoder(path, device="cpu")
    merged = vfm.load_encoder(path, device="cpu", token_merging=0.5)
    assert len(merged.token_merging_sites().blocks) > 2
    torch.manual_seed(0)
    x = torch.randn(2, 3, *plain.info.image_size)
    with torch.no_grad():
        a, b = dense_features(plain, x, mode), dense_features(merged, x, mode)
    assert a.shape == b.shape
    assert not torch.equal(a, b)
    cos = nn.functional.cosine_similarity(a.flatten(0, 2), b.flatten(0, 2)).mean()
    assert cos > 0.5, f"{tower} {mode}: mean patch cosine {cos:.3f}"
