"""Learned behaviour of the toyworld experiments with the toy CLIP (slow: trains it if it is not cached)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_toyworld_dense_modes_beat_vanilla():
    """Learned behaviour (docs/zero_shot_seg.md): with the toy CLIP, maskclip beats vanilla on colour mIoU."""
    from visionfm.toyworld.models import ensure_toy_clip
    from visionfm.toyworld.seg import run

    ensure_toy_clip()
    rep = run(modes=("vanilla", "maskclip"), kinds=("colour",), splits=("heldout",), num=60, num_val=20, pamr=True)
    miou = {(r["mode"], r["refine"]): r["mIoU"] for r in rep["results"]}
    assert miou[("maskclip", None)] > miou[("vanilla", None)] + 0.04
    assert miou[("maskclip", "pamr")] > miou[("maskclip", None)]


@pytest.mark.slow
def test_toyworld_grounding_dense_modes_beat_vanilla():
    """Learned behaviour: with the toy CLIP, box AP of maskclip + PAMR beats vanilla on held-out scenes."""
    from visionfm.toyworld.grounding import run
    from visionfm.toyworld.models import ensure_toy_clip

    ensure_toy_clip()
    rep = run(modes=("vanilla", "maskclip+pamr"), splits=("heldout",), num=40, num_val=20)
    ap = {r["mode"]: r["box_AP"] for r in rep["results"]}
    assert ap["maskclip+pamr"] > ap["vanilla"] + 0.05
