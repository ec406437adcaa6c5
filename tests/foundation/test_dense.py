"""Dense CLIP features (last-block attention surgery) against slow references written from the formulas.

The references below split the raw weights by hand and loop over heads and tokens; they share no code
with ``visionfm.foundation.dense``. Tiny random checkpoints have near-uniform attention and zero biases,
so the last attention block is perturbed first: otherwise the modes barely differ and a swapped q/k or a
dropped bias would go unnoticed.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import visionfm as vfm
from visionfm.foundation import dense
from visionfm.foundation.dense import DENSE_MODES, check_mode, dense_features
from visionfm.testing import tiny_checkpoint

BACKENDS = ("open_clip-vit", "open_clip-resnet", "transformers-clip", "transformers-siglip")
_CKPT = {
    "open_clip-vit": ("clip", "open_clip"),
    "open_clip-resnet": ("clip-resnet", "open_clip"),
    "transformers-clip": ("clip", "transformers"),
    "transformers-siglip": ("siglip", "transformers"),
}
# (native, non-native) input sizes; the non-native ones are non-square to pin the row-major grid order.
SIZES = {
    "open_clip-vit": ((48, 48), (72, 56)),
    "open_clip-resnet": ((64, 64), (96, 128)),
    "transformers-clip": ((48, 48), (72, 56)),
    "transformers-siglip": ((32, 32), (48, 40)),
}
PATCH = {"open_clip-vit": 8, "open_clip-resnet": 32, "transformers-clip": 8, "transformers-siglip": 8}
ATOL = 1e-4


def _perturb(modules: list[torch.nn.Module], scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def encoders(tiny_root) -> dict:
    out = {}
    for name, (kind, backend) in _CKPT.items():
        enc = vfm.load_encoder(tiny_checkpoint(kind, backend, root=tiny_root), device="cpu")
        if name == "open_clip-vit":
            v = enc.model.visual
            _perturb([v.transformer.resblocks[-1], v.ln_post], 0.12, 1)
        elif name == "open_clip-resnet":
            pool = enc.model.visual.attnpool
            _perturb([pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj], 0.15, 2)
            with torch.no_grad():  # its inputs are tiny (std ~0.06); give the tokens some spread
                pool.positional_embedding.add_(torch.randn(pool.positional_embedding.shape) * 0.5)
        else:
            vm = enc.model.vision_model
            mods = [vm.encoder.layers[-1], vm.post_layernorm] + ([vm.head] if name.endswith("siglip") else [])
            _perturb(mods, 0.12, 3)
        out[name] = enc
    return out


def _pixels(size: tuple[int, int], n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _proxy(n: int, seed: int = 1) -> torch.Tensor:
    """Proxy patch features on their own grid (5x7, 24 channels), smooth enough to give a varied affinity."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 24, 3, 4, generator=g)
    f = F.interpolate(base, size=(5, 7), mode="bilinear", align_corners=False) + 0.3 * torch.randn(
        n, 24, 5, 7, generator=g
    )
    return f.permute(0, 2, 3, 1).contiguous()


# ---------------------------------------------------------------------------------------------------
# slow reference, written from the formulas
# ---------------------------------------------------------------------------------------------------
def _interp_table(table: torch.Tensor, native: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """``[h0*w0, C]`` grid rows to ``[h*w, C]``, bicubic, as transformers/SCLIP/ClearCLIP do."""
    if tuple(native) == tuple(grid):
        return table
    c = table.shape[-1]
    img = table.reshape(1, native[0], native[1], c).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=grid, mode="bicubic", align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(-1, c)


def _ref_parts(name: str, enc, x: torch.Tensor) -> dict:
    """Input of the last attention and the raw pieces of that block, extracted by hand for each backend."""
    if name == "open_clip-vit":
        v = enc.model.visual
        p = v.patch_size[0]
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        patches = F.conv2d(x, v.conv1.weight, stride=p).flatten(2).transpose(1, 2)
        pos = v.positional_embedding
        seq = torch.cat(
            [
                (v.class_embedding + pos[0]).expand(x.shape[0], 1, -1),
                patches + _interp_table(pos[1:], v.grid_size, grid),
            ],
            dim=1,
        )
        seq = v.ln_pre(seq)
        for blk in v.transformer.resblocks[:-1]:
            seq = blk(seq)
        blk = v.transformer.resblocks[-1]
        w = blk.attn.embed_dim
        wi, bi = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        return dict(
            x=seq,
            grid=grid,
            prefix=1,
            norm=blk.ln_1,
            q=(wi[:w], bi[:w]),
            k=(wi[w : 2 * w], bi[w : 2 * w]),
            v=(wi[2 * w :], bi[2 * w :]),
            o=(blk.attn.out_proj.weight, blk.attn.out_proj.bias),
            heads=blk.attn.num_heads,
            tail=lambda s, a: (lambda y: y + blk.mlp(blk.ln_2(y)))(s + a),
            head=lambda t: v.ln_post(t) @ v.proj,
        )
    if name == "open_clip-resnet":
        v = enc.model.visual
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        grid = tuple(fmap.shape[-2:])
        toks = fmap.flatten(2).transpose(1, 2)
        pool = v.attnpool
        pos = pool.positional_embedding
        side = int(round(math.sqrt(pos.shape[0] - 1)))
        seq = torch.cat([toks.mean(1, keepdim=True) + pos[0], toks + _interp_table(pos[1:], (side, side), grid)], dim=1)
        lin = lambda m: (m.weight, m.bias)  # noqa: E731
        return dict(
            x=seq,
            x_maskclip=torch.cat([toks.mean(1, keepdim=True), toks], dim=1),  # MaskCLIP's R50 head: no positions
            grid=grid,
            prefix=1,
            norm=lambda t: t,
            q=lin(pool.q_proj),
            k=lin(pool.k_proj),
            v=lin(pool.v_proj),
            o=lin(pool.c_proj),
            heads=pool.num_heads,
            tail=None,
            head=lambda t: t,
        )
    vm = enc.model.vision_model
    emb = vm.embeddings
    p = emb.patch_size
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    patches = F.conv2d(x, emb.patch_embedding.weight, emb.patch_embedding.bias, stride=p).flatten(2).transpose(1, 2)
    table = emb.position_embedding.weight
    side = emb.image_size // p
    if name == "transformers-clip":
        seq = torch.cat(
            [
                (emb.class_embedding + table[0]).expand(x.shape[0], 1, -1),
                patches + _interp_table(table[1:], (side, side), grid),
            ],
            dim=1,
        )
        seq = vm.pre_layrnorm(seq)
        prefix = 1

        def head(t):
            return enc.model.visual_projection(vm.post_layernorm(t))
    else:
        seq = patches + _interp_table(table, (side, side), grid)
        prefix = 0

        def head(t):  # SigLIP's attention-pool head applied to each token alone: a loop over tokens
            t = vm.post_layernorm(t)
            return torch.stack([vm.head(t[:, i : i + 1]) for i in range(t.shape[1])], dim=1)

    for layer in vm.encoder.layers[:-1]:
        out = layer(seq, None)
        seq = out[0] if isinstance(out, tuple) else out
    last = vm.encoder.layers[-1]
    sa = last.self_attn
    lin = lambda m: (m.weight, m.bias)  # noqa: E731
    return dict(
        x=seq,
        grid=grid,
        prefix=prefix,
        norm=last.layer_norm1,
        q=lin(sa.q_proj),
        k=lin(sa.k_proj),
        v=lin(sa.v_proj),
        o=lin(sa.out_proj),
        heads=sa.num_heads,
        tail=lambda s, a: (lambda y: y + last.mlp(last.layer_norm2(y)))(s + a),
        head=head,
    )


def _row_softmax(m: torch.Tensor) -> torch.Tensor:
    e = torch.exp(m - m.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _ref_proxy_weights(proxy: torch.Tensor, grid: tuple[int, int], beta=1.2, gamma=3.0) -> torch.Tensor:
    """ProxyCLIP weights for one image ``proxy [h', w', C]``, token by token."""
    f = F.interpolate(proxy.permute(2, 0, 1)[None], size=grid, mode="bilinear", align_corners=False)[0]
    f = f.flatten(1).T  # [N, C]
    n = f.shape[0]
    sim = torch.empty(n, n)
    for i in range(n):
        for j in range(n):
            sim[i, j] = torch.dot(f[i], f[j]) / (f[i].norm() * f[j].norm())
    logits = (sim - beta * sim.mean()) * gamma
    rows = []
    for i in range(n):
        keep = logits[i] >= 0
        keep[i] = True
        r = torch.where(keep, logits[i], torch.full_like(logits[i], -float("inf")))
        rows.append(torch.softmax(r, dim=0))
    return torch.stack(rows)


def _ref_gaussian(grid: tuple[int, int], prefix: int, sigma: float) -> torch.Tensor:
    h, w = grid
    n = prefix + h * w
    g = torch.zeros(n, n)
    for i in range(h * w):
        for j in range(h * w):
            d2 = (i // w - j // w) ** 2 + (i % w - j % w) ** 2
            g[prefix + i, prefix + j] = math.exp(-d2 / (2 * sigma**2))
    return g


def reference(
    name: str, enc, x: torch.Tensor, mode: str, proxy=None, sigma: float = 5.0, proxy_grid: bool = True
) -> torch.Tensor:
    """``[B, h, w, D]`` dense features computed head by head from the raw weights. ``proxy_grid``: ProxyCLIP's
    layout, CLIP's values resized (bilinear) to the proxy grid and the output on that grid."""
    r = _ref_parts(name, enc, x)
    seq, prefix, (gh, gw) = r["x"] if mode != "maskclip" else r.get("x_maskclip", r["x"]), r["prefix"], r["grid"]
    out_grid = tuple(proxy.shape[1:3]) if mode == "proxy" and proxy_grid else (gh, gw)
    hid = r["norm"](seq)
    width = hid.shape[-1]
    nh = r["heads"]
    d = width // nh
    outs = []
    for head in range(nh):
        sl = slice(head * d, (head + 1) * d)
        q = hid @ r["q"][0][sl].T + r["q"][1][sl]
        k = hid @ r["k"][0][sl].T + r["k"][1][sl]
        v = hid @ r["v"][0][sl].T + r["v"][1][sl]
        s = 1 / math.sqrt(d)
        if mode == "vanilla":
            w = _row_softmax(q @ k.transpose(1, 2) * s)
        elif mode == "maskclip":
            w = torch.eye(v.shape[1]).expand(v.shape[0], -1, -1)
        elif mode == "sclip":
            w = _row_softmax(q @ q.transpose(1, 2) * s) + _row_softmax(k @ k.transpose(1, 2) * s)
        elif mode == "clearclip":
            w = _row_softmax(q @ q.transpose(1, 2) * s)
        elif mode == "naclip":
            w = _row_softmax(k @ k.transpose(1, 2) * s + _ref_gaussian((gh, gw), prefix, sigma))
        elif mode == "proxy":
            w = torch.stack([_ref_proxy_weights(proxy[b], out_grid) for b in range(x.shape[0])])
            v = v[:, prefix:]
            if out_grid != (gh, gw):  # each value channel resized from the CLIP grid to the proxy grid
                vmap = v.transpose(1, 2).reshape(v.shape[0], -1, gh, gw)
                vmap = F.interpolate(vmap, size=out_grid, mode="bilinear", align_corners=False)
                v = vmap.flatten(2).transpose(1, 2)
        outs.append(w @ v)
    attn_out = torch.cat(outs, dim=-1) @ r["o"][0].T + r["o"][1]
    if mode == "proxy":
        seq, prefix = seq[:, prefix:], 0
    if mode in ("vanilla", "sclip") and r["tail"] is not None:
        y = r["tail"](seq, attn_out)
    else:
        y = attn_out
    y = r["head"](y)[:, prefix:]
    return y.reshape(x.shape[0], *out_grid, -1)


# ---------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("native", [True, False], ids=["native", "resized"])
@pytest.mark.parametrize("mode", DENSE_MODES)
@pytest.mark.parametrize("name", BACKENDS)
def test_modes_match_reference(encoders, name, mode, native):
    enc = encoders[name]
    size = SIZES[name][0 if native else 1]
    x = _pixels(size)
    proxy = _proxy(2) if mode == "proxy" else None
    with torch.no_grad():
        out = dense_features(enc, x, mode, proxy_features=proxy)
        ref = reference(name, enc, x, mode, proxy)
    grid = (size[0] // PATCH[name], size[1] // PATCH[name]) if mode != "proxy" else (5, 7)  # proxy: its grid
    assert out.shape == (2, *grid, enc.info.embed_dim)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("native", [True, False], ids=["native", "resized"])
@pytest.mark.parametrize("name", BACKENDS)
def test_proxy_on_the_clip_grid_matches_reference(encoders, name, native):
    """``proxy_grid=False``: the proxy's features resized to CLIP's grid, the output on CLIP's grid."""
    enc = encoders[name]
    size = SIZES[name][0 if native else 1]
    x = _pixels(size)
    proxy = _proxy(2)
    with torch.no_grad():
        out = dense_features(enc, x, "proxy", proxy_features=proxy, proxy_grid=False)
        ref = reference(name, enc, x, "proxy", proxy, proxy_grid=False)
    assert out.shape == (2, size[0] // PATCH[name], size[1] // PATCH[name], enc.info.embed_dim)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=1e-4)


def test_modes_differ(encoders):
    """The perturbed weights make every mode distinct (so the reference comparisons can fail)."""
    enc = encoders["open_clip-vit"]
    x = _pixels(SIZES["open_clip-vit"][0])
    with torch.no_grad():
        outs = {m: dense_features(enc, x, m, proxy_features=_proxy(2) if m == "proxy" else None, proxy_grid=False)
                for m in DENSE_MODES}  # fmt: skip
    for a in DENSE_MODES:
        for b in DENSE_MODES:
            if a < b:
                assert (outs[a] - outs[b]).abs().max() > 1e-2, (a, b)


def test_naclip_sigma_is_used(encoders):
    enc = encoders["open_clip-vit"]
    x = _pixels((72, 56))
    with torch.no_grad():
        a = dense_features(enc, x, "naclip", naclip_sigma=1.0)
        b = dense_features(enc, x, "naclip", naclip_sigma=5.0)
        ref = reference("open_clip-vit", enc, x, "naclip", sigma=1.0)
    torch.testing.assert_close(a, ref, atol=ATOL, rtol=1e-4)
    assert (a - b).abs().max() > 1e-3


def test_vanilla_open_clip_matches_encoder_forward(encoders):
    enc = encoders["open_clip-vit"]
    x = _pixels((48, 48), n=3)
    with torch.no_grad():
        feats = enc(x)
        out = dense_features(enc, x, "vanilla")
        tokens, prefix, _ = dense._dense_tokens(enc, x, "vanilla")
        ref_img = enc.model.encode_image(x)
    torch.testing.assert_close(out, feats.patches @ enc.model.visual.proj, atol=ATOL, rtol=1e-4)
    assert prefix == 1
    torch.testing.assert_close(tokens[:, 0], feats.pooled, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 0], ref_img, atol=ATOL, rtol=1e-4)


def test_vanilla_transformers_clip_matches_encoder_forward(encoders):
    enc = encoders["transformers-clip"]
    x = _pixels((48, 48), n=3)
    with torch.no_grad():
        feats = enc(x)
        out = dense_features(enc, x, "vanilla")
        tokens, _, _ = dense._dense_tokens(enc, x, "vanilla")
    torch.testing.assert_close(out, enc.model.visual_projection(feats.patches), atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(tokens[:, 0], feats.pooled, atol=ATOL, rtol=1e-4)


def test_vanilla_resnet_is_the_attention_pool_for_every_query(encoders):
    """Token 0 (the mean token) is exactly the pooled embedding; patch tokens are attnpool's other queries."""
    enc = encoders["open_clip-resnet"]
    pool = enc.model.visual.attnpool
    x = _pixels((64, 64), n=3)
    with torch.no_grad():
        feats = enc(x)
        tokens, prefix, grid = dense._dense_tokens(enc, x, "vanilla")
        out = dense_features(enc, x, "vanilla")
        fmap = feats.patches.permute(0, 3, 1, 2)
        seq = fmap.flatten(2).permute(2, 0, 1)
        seq = torch.cat([seq.mean(0, keepdim=True), seq]) + pool.positional_embedding[:, None]
        all_q, _ = F.multi_head_attention_forward(
            seq, seq, seq, seq.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            None, None, False, 0.0, pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight,
        )  # fmt: skip
    assert prefix == 1 and grid == (2, 2)
    torch.testing.assert_close(tokens[:, 0], feats.pooled, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(out, all_q[1:].transpose(0, 1).reshape(3, 2, 2, -1), atol=ATOL, rtol=1e-4)


def test_vanilla_siglip_is_the_head_on_each_token(encoders):
    enc = encoders["transformers-siglip"]
    head = enc.model.vision_model.head
    x = _pixels((32, 32), n=2)
    with torch.no_grad():
        feats = enc(x)
        out = dense_features(enc, x, "vanilla")
        flat = feats.patches.flatten(1, 2)
        per_token = torch.stack([head(flat[:, i : i + 1]) for i in range(flat.shape[1])], dim=1)
    torch.testing.assert_close(out, per_token.reshape(out.shape), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_native_size_needs_no_interpolation(encoders, name):
    """At the native size the last-block input is bit-equal to the model's own, un-interpolated path."""
    enc = encoders[name]
    x = _pixels(SIZES[name][0])
    with torch.no_grad():
        tower = dense._tower(enc, x)
        tokens = tower.tokens if tower.pos is None else tower.tokens + tower.pos
        if name == "open_clip-vit":
            v = enc.model.visual
            own = v._embeds(x)
            for blk in v.transformer.resblocks[:-1]:
                own = blk(own)
        elif name == "open_clip-resnet":
            v = enc.model.visual
            fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x))))).flatten(2).transpose(1, 2)
            own = torch.cat([fmap.mean(dim=1, keepdim=True), fmap], dim=1) + v.attnpool.positional_embedding
        else:
            vm = enc.model.vision_model
            own = vm.embeddings(x)  # no interpolate_pos_encoding: the stored table
            own = vm.pre_layrnorm(own) if name == "transformers-clip" else own
            for layer in vm.encoder.layers[:-1]:
                out = layer(own, None)
                own = out[0] if isinstance(out, tuple) else out
    assert torch.equal(tokens, own)
    pos = torch.randn(1 + 36, 8)
    assert dense.resize_pos_embed(pos, 1, (6, 6), (6, 6)) is pos


@pytest.mark.parametrize("name", BACKENDS)
def test_non_native_size(encoders, name):
    enc = encoders[name]
    big = tuple(int(s * 1.5) // PATCH[name] * PATCH[name] for s in SIZES[name][0])
    out = dense_features(enc, _pixels(big, n=1), "maskclip")
    assert out.shape == (1, big[0] // PATCH[name], big[1] // PATCH[name], enc.info.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mode", DENSE_MODES)
@pytest.mark.parametrize("name", BACKENDS)
def test_batch_independence(encoders, name, mode):
    enc = encoders[name]
    x = _pixels(SIZES[name][1], n=3, seed=5)
    proxy = _proxy(3, seed=6) if mode == "proxy" else None
    with torch.inference_mode():
        batch = dense_features(enc, x, mode, proxy_features=proxy)
        for i in range(3):
            one = dense_features(enc, x[i : i + 1], mode, proxy_features=None if proxy is None else proxy[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], one, atol=1e-5, rtol=1e-5)


def test_gradients_flow(encoders):
    enc = encoders["transformers-clip"]
    x = _pixels((48, 40), n=2).requires_grad_(True)
    proxy = _proxy(2).requires_grad_(True)
    dense_features(enc, x, "proxy", proxy_features=proxy).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert proxy.grad is not None and torch.isfinite(proxy.grad).all()


def test_float64_matches_float32(encoders):
    enc = encoders["open_clip-vit"]
    enc64 = copy.deepcopy(enc).to(torch.float64)
    x = _pixels((72, 56))
    proxy = _proxy(2)
    for mode in ("naclip", "proxy", "sclip"):
        p = proxy if mode == "proxy" else None
        with torch.no_grad():
            a = dense_features(enc, x, mode, proxy_features=p)
            b = dense_features(enc64, x.double(), mode, proxy_features=None if p is None else p.double())
        assert b.dtype == torch.float64
        torch.testing.assert_close(a.double(), b, atol=ATOL, rtol=1e-4)


def test_proxy_with_constant_features_is_maskclip(encoders):
    """A constant proxy masks every off-diagonal affinity: each patch attends to itself, as in MaskCLIP."""
    enc = encoders["open_clip-vit"]
    x = _pixels((48, 48))
    with torch.no_grad():
        proxy = dense_features(enc, x, "proxy", proxy_features=torch.ones(2, 3, 3, 4), proxy_grid=False)
        mask = dense_features(enc, x, "maskclip")
    assert torch.isfinite(proxy).all()
    torch.testing.assert_close(proxy, mask, atol=ATOL, rtol=1e-4)


def test_proxy_from_dinov2(encoders, tiny_root):
    dino = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    enc = encoders["open_clip-vit"]
    x = _pixels((72, 56))
    with torch.inference_mode():
        proxy = dino(F.interpolate(x, size=(56, 42), mode="bilinear")).patches
        out = dense_features(enc, x, "proxy", proxy_features=proxy, proxy_grid=False)
        on_proxy = dense_features(enc, x, "proxy", proxy_features=proxy)
    assert out.shape == (2, 9, 7, enc.info.embed_dim) and torch.isfinite(out).all()
    assert on_proxy.shape == (2, *proxy.shape[1:3], enc.info.embed_dim) and torch.isfinite(on_proxy).all()


def test_errors(encoders, tiny_root):
    enc = encoders["open_clip-vit"]
    x = _pixels((48, 48))
    assert check_mode("sclip") == "sclip"
    with pytest.raises(ValueError, match="maskclip, sclip, clearclip, naclip, proxy"):
        check_mode("gem")
    with pytest.raises(ValueError, match="unknown dense mode 'gem'"):
        dense_features(enc, x, "gem")
    with pytest.raises(ValueError, match="needs proxy_features"):
        dense_features(enc, x, "proxy")
    with pytest.raises(ValueError, match="batch size 3"):
        dense_features(enc, x, "proxy", proxy_features=torch.randn(3, 4, 4, 8))
    with pytest.raises(ValueError, match=r"\[B, h', w', C'\]"):
        dense_features(enc, x, "proxy", proxy_features=torch.randn(2, 16, 8))
    with pytest.raises(ValueError, match="only used by mode='proxy'"):
        dense_features(enc, x, "maskclip", proxy_features=torch.randn(2, 4, 4, 8))
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        dense_features(enc, _pixels((50, 48)), "maskclip")
    with pytest.raises(ValueError, match="naclip_sigma"):
        dense_features(enc, x, "naclip", naclip_sigma=0.0)
    dino = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    with pytest.raises(TypeError, match="family 'dinov2'"):
        dense_features(dino, x, "maskclip")
    with pytest.raises(TypeError, match="needs a visionfm encoder"):
        dense_features(torch.nn.Linear(2, 2), x, "maskclip")
