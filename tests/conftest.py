"""Shared fixtures: real photos from scikit-image and tiny checkpoints written once per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """Real photographs of different sizes and aspect ratios, HWC uint8 RGB."""
    import skimage.data as d

    cam = d.camera()
    return [d.astronaut(), d.chelsea(), d.coffee(), np.stack([cam] * 3, -1)[:300, :420].copy()]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> object:
    """Directory holding this session's tiny checkpoints."""
    return tmp_path_factory.mktemp("tiny")
