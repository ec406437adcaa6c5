"""pipeline("generation", cache=...): block-residual step caching (visionfm.foundation.step_cache) on DiT and PixArt.

The tiny checkpoints have 2 blocks, which ``keep_first=1, keep_last=1`` would leave nothing to cache, so these tests
rewrite their transformers with 6 blocks (same config otherwise, seeded random weights).
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

import visionfm as vfm
from visionfm.foundation.step_cache import StepCache, cached_blocks, parse_cache
from visionfm.pipelines import generation as generation_module
from visionfm.testing import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = 6


def _deepen(src, dst, cls_name: str):
    """A copy of the tiny pipeline at ``src`` whose transformer has ``LAYERS`` blocks."""
    import diffusers

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "transformer" / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    torch.manual_seed(0)
    transformer = getattr(diffusers, cls_name).from_config({**cfg, "num_layers": LAYERS})
    shutil.rmtree(dst / "transformer")
    transformer.save_pretrained(str(dst / "transformer"), safe_serialization=True)
    return dst


@pytest.fixture(scope="module", params=["dit", "pixart"])
def case(request, tiny_root, tmp_path_factory):
    """``(pipeline, call kwargs)`` for a 6-block DiT (class labels) and a 6-block PixArt (prompts)."""
    kind = request.param
    cls_name = {"dit": "DiTTransformer2DModel", "pixart": "PixArtTransformer2DModel"}[kind]
    path = _deepen(tiny_checkpoint(kind, root=tiny_root), tmp_path_factory.mktemp(kind) / f"{kind}6", cls_name)
    gen = vfm.pipeline("generation", model=str(path), device="cpu", batch_size=2)
    if kind == "dit":
        kwargs = {"labels": [1, 3], "num_images_per_label": 2}
    else:
        kwargs = {"prompts": ["a red square", "a blue cat"], "num_images_per_prompt": 2}
    return gen, {**kwargs, "seed": 0, "output_type": "np", "progress": False}


def _blocks(gen) -> nn.ModuleList:
    return gen.encoder.transformer.transformer_blocks


def _stack(result) -> np.ndarray:
    return np.stack(result.images)


def _is_full(i: int, steps: int, interval: int, warmup: int) -> bool:
    """The schedule, written out independently of StepCache.is_full."""
    return i < warmup or (i - warmup) % interval == 0 or i == steps - 1


# -- (a) off is the uncached code path, bit for bit ------------------------------------------------------------
def test_off_is_bit_identical(case, monkeypatch):
    gen, kw = case
    preds: list[torch.Tensor] = []
    hook = gen.encoder.transformer.register_forward_hook(
        lambda _m, _i, out: preds.append((out[0] if isinstance(out, tuple) else out.sample).clone())
    )

    def never(*_a, **_k):
        raise AssertionError("cached_blocks entered with caching off")

    try:
        with monkeypatch.context() as m:
            m.setattr(generation_module, "cached_blocks", never)
            runs = [gen(**kw, steps=5), gen(**kw, steps=5, cache=None), gen(**kw, steps=5, cache=1),
                    gen(**kw, steps=5, cache=False), gen(**kw, steps=5, cache={"interval": 1})]  # fmt: skip
    finally:
        hook.remove()
    n = len(preds) // len(runs)  # denoiser calls per run (steps x batches)
    assert n == 5 * 2
    for r, run in enumerate(runs):
        assert run.protocol["cache"] is None
        assert torch.equal(torch.from_numpy(_stack(run)), torch.from_numpy(_stack(runs[0]))), r
        for k in range(n):  # every denoiser output of every step, bit for bit
            assert torch.equal(preds[r * n + k], preds[k]), (r, k)
    assert all("forward" not in b.__dict__ for b in _blocks(gen))


# -- (b) block evaluations follow the schedule; the protocol agrees -------------------------------------------
@pytest.mark.parametrize("steps, cache, interval, warmup", [(6, 2, 2, 1), (7, "fast", 2, 1), (9, 3, 3, 1),
                                                            (7, {"interval": 2, "warmup": 0}, 2, 0)])  # fmt: skip
def test_block_evaluations_follow_the_schedule(case, steps, cache, interval, warmup):
    gen, kw = case
    blocks = _blocks(gen)
    calls = {"first": 0, "middle": 0, "last": 0}

    def counter(name):
        def hook(*_):
            calls[name] += 1

        return hook

    # a hook on a block's attention fires only when the block really runs (the block's own hooks fire either way)
    hooks = [blocks[0].attn1.register_forward_hook(counter("first")),
             blocks[LAYERS // 2].attn1.register_forward_hook(counter("middle")),
             blocks[-1].attn1.register_forward_hook(counter("last"))]  # fmt: skip
    try:
        out = gen(**kw, steps=steps, cache=cache)
    finally:
        for h in hooks:
            h.remove()
    full = sum(_is_full(i, steps, interval, warmup) for i in range(steps))
    batches = 2  # 4 images, batch_size 2
    assert calls == {"first": steps * batches, "middle": full * batches, "last": steps * batches}
    assert full < steps
    assert out.protocol["cache"] == {"method": "block-residual", "interval": interval, "keep_first": 1, "keep_last": 1,
                                     "warmup": warmup, "full_steps": full, "cached_steps": steps - full}  # fmt: skip


def test_controller_stats_count_blocks_and_steps(case, monkeypatch):
    gen, kw = case
    steps = 6
    full = sum(_is_full(i, steps, 2, 1) for i in range(steps))
    seen = []
    real = generation_module.cached_blocks

    @contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as ctl:
            seen.append(ctl)
            yield ctl

    monkeypatch.setattr(generation_module, "cached_blocks", spy)
    gen(**kw, steps=steps, cache=StepCache(interval=2))
    assert len(seen) == 2  # one context per batch
    middle = LAYERS - 2
    for ctl in seen:
        s = ctl.stats
        assert (s.full_steps, s.cached_steps) == (full, steps - full)
        assert s.cached_blocks == (steps - full) * middle
        assert s.full_blocks == full * LAYERS + (steps - full) * 2
    assert all("forward" not in b.__dict__ for b in _blocks(gen))


# -- (c) cached differs from uncached but stays close -----------------------------------------------------------
def test_cached_output_is_close_to_uncached(case, monkeypatch):
    gen, kw = case
    # 6 unguided steps: over 20-50 guided steps the cached images of the random tiny DiT are as far from the
    # uncached ones as another seed's (random weights: its block residuals change a lot from step to step)
    call = {**kw, "steps": 6, "guidance_scale": 1.0}
    latents: list[torch.Tensor] = []  # compared before the uint8 rounding of the images
    decode = gen._decode
    monkeypatch.setattr(gen, "_decode", lambda z: latents.append(z.double().clone()) or decode(z))
    gen(**call)
    gen(**call, cache=2)
    full, cached = latents[0], latents[1]

    # the strawman: the same schedule and kept blocks, but a zero residual for the middle blocks on cached steps
    class Zeros(dict):
        def __setitem__(self, key, value):
            super().__setitem__(key, torch.zeros_like(value))

    real = generation_module.cached_blocks

    @contextmanager
    def zero_residuals(*args, **kwargs):
        with real(*args, **kwargs) as ctl:
            ctl._residuals = Zeros()
            yield ctl

    monkeypatch.setattr(generation_module, "cached_blocks", zero_residuals)
    gen(**call, cache=2)
    zero = latents[2]
    monkeypatch.undo()

    def rms(a, b):
        return float((a - b).pow(2).mean().sqrt())

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

    assert rms(cached, full) > 1e-4 * rms(full, 0 * full)  # some step really was cached
    assert rms(cached, full) < 0.5 * rms(zero, full), (rms(cached, full), rms(zero, full))
    assert cos(cached, full) > 0.95, cos(cached, full)


# -- (d) bad values ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["slow", "Fast", 0, -2, 2.5, [2], {"intervall": 2}, {"interval": 0},
                                 {"keep_first": -1}, {"warmup": True}, object()])  # fmt: skip
def test_bad_cache_values_raise(case, bad):
    gen, kw = case
    with pytest.raises(ValueError, match="cache"):
        parse_cache(bad)
    with pytest.raises(ValueError, match="cache"):
        gen(**kw, steps=2, cache=bad)


def test_parse_cache_forms():
    assert parse_cache(None) is None and parse_cache(False) is None and parse_cache(1) is None
    assert parse_cache(True) == parse_cache("fast") == StepCache(interval=2) == parse_cache(np.int64(2))
    assert parse_cache(4) == StepCache(interval=4)
    assert parse_cache({"interval": 3, "keep_last": 2}) == StepCache(interval=3, keep_last=2)
    cfg = StepCache(interval=5, warmup=3)
    assert parse_cache(cfg) is cfg and parse_cache(StepCache(interval=1)) is None
    with pytest.raises(ValueError, match="cache: interval"):
        StepCache(interval=0)


def test_construction_sets_the_default(case):
    gen, kw = case
    default = vfm.pipeline("generation", model=gen.encoder, batch_size=2, cache="fast")
    assert default.cache == StepCache(interval=2)
    on = default(**kw, steps=4)
    assert on.protocol["cache"]["interval"] == 2
    off = default(**kw, steps=4, cache=False)  # a call turns the default off
    assert off.protocol["cache"] is None
    assert np.array_equal(_stack(off), _stack(gen(**kw, steps=4)))
    assert np.array_equal(_stack(on), _stack(gen(**kw, steps=4, cache=2)))
    with pytest.raises(ValueError, match="cache"):
        vfm.pipeline("generation", model=gen.encoder, cache="sometimes")


# -- (e) forwards restored, also on error; module tree and state_dict untouched --------------------------------
def test_forwards_restored_after_a_call_and_on_error(case, monkeypatch):
    gen, kw = case
    blocks = _blocks(gen)
    tr = gen.encoder.transformer
    keys = list(tr.state_dict())
    modules = [n for n, _ in tr.named_modules()]
    ref = _stack(gen(**kw, steps=4))
    gen(**kw, steps=4, cache=2)
    assert all("forward" not in b.__dict__ for b in blocks)
    assert all(not b._forward_hooks for b in blocks)
    assert list(tr.state_dict()) == keys and [n for n, _ in tr.named_modules()] == modules

    victim = blocks[2]  # a middle block: its own instance forward must come back, not the cache's wrapper
    real = type(victim).forward.__get__(victim)
    calls = {"n": 0}

    def boom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("denoiser failed mid-run")
        return real(*args, **kwargs)

    monkeypatch.setattr(victim, "forward", boom, raising=False)
    with pytest.raises(RuntimeError, match="mid-run"):
        gen(**kw, steps=6, cache=2)
    assert victim.__dict__["forward"] is boom
    assert all("forward" not in b.__dict__ for i, b in enumerate(blocks) if i != 2)
    assert all(not b._forward_hooks for b in blocks)
    monkeypatch.undo()
    assert "forward" not in victim.__dict__
    assert np.array_equal(_stack(gen(**kw, steps=4)), ref)  # nothing left behind


# -- the mechanism, on a toy block list ------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k
        self.runs = 0

    def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.runs += 1
        return hidden_states + self.k * scale * torch.tanh(hidden_states)


def test_cached_step_returns_input_plus_stored_residual():
    blocks = nn.ModuleList([_Block(0.5), _Block(1.0), _Block(2.0), _Block(3.0)])
    cfg = StepCache(interval=2, keep_first=1, keep_last=1, warmup=1)
    x0 = torch.randn(2, 5, 3)

    def run(x, scale=1.0):
        for b in blocks:
            x = b(x, scale=scale)
        return x

    with cached_blocks(blocks, cfg, num_steps=4) as ctl:
        assert [ctl.step(0), ctl.step(1), ctl.step(2), ctl.step(3)] == [True, True, False, True]
        ctl.step(1)  # full: every block runs and blocks 1 and 2 store their residuals
        run(x0)
        h0 = blocks[0](x0)
        res1 = blocks[1].k * torch.tanh(h0)  # block 1's residual on that step
        ctl.step(2)  # cached
        runs = [b.runs for b in blocks]
        h = x0 + 0.1
        assert torch.allclose(blocks[1](h, scale=2.0), h + res1)  # input + stored residual, whatever the arguments
        assert [b.runs for b in blocks] == runs  # the middle block did not run
        assert torch.equal(blocks[0](h), h + 0.5 * torch.tanh(h))  # a kept block runs
        small = h[:1]  # another shape than the stored residual: the block runs
        assert torch.equal(blocks[2](small), small + 2.0 * torch.tanh(small)) and blocks[2].runs == runs[2] + 1
        ctl.step(3)  # the last step is full
        run(h)
        assert blocks[1].runs == runs[1] + 1
        assert ctl.stats.cached_blocks == 1
    assert all("forward" not in b.__dict__ for b in blocks)
