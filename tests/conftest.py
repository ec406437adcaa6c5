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


@pytest.fixture(scope="module")
def one_thread():
    """One thread for torch and for numpy/scipy's BLAS while a module's tests run. On a shared 2-core machine a
    second OpenMP thread makes small problems 50-250x slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)
