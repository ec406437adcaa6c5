"""Recipes: loading, overrides, and a short toyworld CLIP pretraining run that loads like any CLIP."""

from __future__ import annotations

import pytest

from visionfm.testing import TINY_TOY_CLIP_OVERRIDES
from visionfm.training.recipes import apply_overrides, load_recipe, recipe_hash, run_recipe

TINY = list(TINY_TOY_CLIP_OVERRIDES)


def test_builtin_recipe_loads_and_overrides():
    r = load_recipe("toyworld_clip")
    assert r["task"] == "clip_pretrain" and r["data"]["split"] == "train"
    r2 = apply_overrides(r, ["train.max_steps=7", "model.vision_cfg.width=48", "train.lr=1e-4"])
    assert r2["train"]["max_steps"] == 7 and r2["model"]["vision_cfg"]["width"] == 48 and r2["train"]["lr"] == 1e-4
    assert r["train"]["max_steps"] != 7  # the original is not modified
    assert recipe_hash(r) != recipe_hash(r2)
    assert recipe_hash(r) == recipe_hash(apply_overrides(r, ["train.output_dir=elsewhere"]))


def test_recipe_errors():
    with pytest.raises(FileNotFoundError, match="built-in recipes.*toyworld_clip"):
        load_recipe("no_such_recipe")
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({"task": "x"}, ["train.max_steps"])
    with pytest.raises(ValueError, match="unknown recipe task"):
        run_recipe({"task": "nope"})
    with pytest.raises(ValueError, match="unknown train option"):
        run_recipe(load_recipe("toyworld_clip", [*TINY, "train.bogus=1", "train.output_dir=/tmp/x"]))
