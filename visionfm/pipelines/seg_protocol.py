"""The steps of the training-free open-vocabulary segmentation protocol, as the reference implementations run them.

SCLIP, ClearCLIP, NACLIP and ProxyCLIP share one mmseg-based protocol (their ``forward_slide`` / ``predict`` /
``postprocess_result``); these functions are its steps, written from their code's behaviour and checked against
outputs of that code on the same weights (``tests/pipelines/test_zero_shot_seg_reference.py``; the reference commits
are in :mod:`visionfm.pipelines.seg_presets`):

1. :func:`rescale` -- mmcv's ``Resize(scale=(2048, short), keep_ratio=True)``: one factor
   ``min(long_max / long, short / short_side)``, new size ``int(x * f + 0.5)``, OpenCV ``INTER_LINEAR`` on uint8.
2. :func:`window_grid` -- mmseg's sliding windows (the last window flush with the edge; an image smaller than the
   window is one window of its own size).
3. per window, cosine logits of every text on the patch grid, bilinearly upsampled to the window (see
   ``ZeroShotSegPipeline``), summed and divided by the window count;
4. :func:`to_size` -- the averaged logits resized (bilinear) to the original image size;
5. :func:`pamr` -- optional pixel-adaptive refinement of those logits, guided by the normalised model input resized
   to the original size;
6. :func:`classify` -- ``softmax(logit_scale * logits)`` over all texts, the best synonym's probability per class,
   argmax; pixels whose best class probability is below ``prob_thresh`` become class 0; SCLIP's ``area_thresh``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def rescaled_size(size: tuple[int, int], short_side: int, max_long_side: int = 2048) -> tuple[int, int]:
    """``(h, w)`` that mmcv's ``imrescale(img, (max_long_side, short_side))`` gives an ``(H, W)`` image.

    The factor is ``min(max_long_side / max(H, W), short_side / min(H, W))`` (the short side becomes ``short_side``
    unless the long side would pass ``max_long_side``); each side is ``int(side * factor + 0.5)``.
    """
    h, w = int(size[0]), int(size[1])
    f = min(max_long_side / max(h, w), short_side / min(h, w))
    return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))


def rescale(pixels: torch.Tensor, size: tuple[int, int], method: str = "cv2") -> torch.Tensor:
    """Resize uint8 ``[3, H, W]`` pixels to ``size = (h, w)``.

    Args:
        pixels: uint8 ``[3, H, W]`` RGB.
        size: target ``(h, w)``.
        method: ``"cv2"``: OpenCV ``INTER_LINEAR`` on uint8, mmcv's default backend, so the result is what the
            reference implementations feed their model (bit-exact); ``"antialias"``: torch bilinear with
            antialiasing on floats (smoother when shrinking a lot, not what the references do).

    Returns:
        uint8 ``[3, h, w]`` for ``"cv2"``; float ``[3, h, w]`` in ``[0, 255]`` for ``"antialias"``.
    """
    h, w = int(size[0]), int(size[1])
    if method == "cv2":
        if tuple(pixels.shape[-2:]) == (h, w):
            return pixels
        import cv2

        arr = np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())
        out = cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
    if method == "antialias":
        x = pixels[None].float()
        if tuple(pixels.shape[-2:]) != (h, w):
            x = F.interpolate(x, (h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 255)
        return x[0]
    raise ValueError(f"resize must be 'cv2' or 'antialias', got {method!r}")


def window_grid(size: tuple[int, int], window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Sliding windows ``(y0, x0, y1, x1)`` over an image of ``size = (H, W)``, mmseg's ``slide`` layout.

    ``ceil((H - window) / stride) + 1`` rows of windows (at least one) start every ``stride`` pixels; the last one in
    each direction is moved back to end at the edge; a side shorter than ``window`` gets one window covering all of
    it (the window is then that side's length: the references do not pad).
    """
    H, W = size
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    ny = max(H - window + stride - 1, 0) // stride + 1
    nx = max(W - window + stride - 1, 0) // stride + 1
    out = []
    for i in range(ny):
        for j in range(nx):
            y1, x1 = min(i * stride + window, H), min(j * stride + window, W)
            out.append((max(y1 - window, 0), max(x1 - window, 0), y1, x1))
    return out


def pad_to_multiple(h: int, w: int, multiple: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` zero padding that centres an ``h x w`` window in the next multiple of
    ``multiple`` (ProxyCLIP's ``compute_padsize``: the odd pixel goes right / bottom); zeros when already a multiple.
    """

    def split(n: int) -> tuple[int, int]:
        extra = (multiple - n % multiple) % multiple
        return extra // 2, extra - extra // 2

    (left, right), (top, bottom) = split(w), split(h)
    return left, right, top, bottom


def to_size(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[C, h, w]`` -> ``[C, H, W]``, bilinear, ``align_corners=False`` (identity when the size matches)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits[None], tuple(size), mode="bilinear", align_corners=False)[0]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread (restored afterwards).

    PAMR's affinities divide by ``1e-8 + 0.1 * sigma``, and in flat image regions ``sigma`` is a float rounding error
    of the bilinear resize, which differs in the last bit with the thread count; that noise becomes O(1) in the
    affinities. Computing the guide and its affinities on one thread makes them thread-count invariant, and equal to
    the references' run (one thread) bit for bit.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _shift(x: torch.Tensor, padded: torch.Tensor, pad: int, dy: int, dx: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def pamr(
    image: torch.Tensor,
    logits: torch.Tensor,
    *,
    iterations: int = 10,
    dilations: Sequence[int] = (8, 16),
) -> torch.Tensor:
    """Pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), as the SCLIP/NACLIP references run it.

    For each dilation ``d`` the neighbours of a pixel are the 8 pixels at offsets ``(a*d, b*d)``, ``a, b`` in
    ``{-1, 0, 1}`` (borders replicate-padded). With ``sigma`` the per-channel standard deviation (unbiased) of the
    image over the 3x3 neighbourhoods *including* the centre, of all dilations together (9 values per dilation),
    the affinity to neighbour ``n`` is ``softmax_n(mean_channels(-|I(p) - I(p + o_n)| / (1e-8 + 0.1 * sigma)))``
    over all ``8 * len(dilations)`` neighbours. Each iteration replaces every pixel's scores by the affinity-weighted
    sum of its neighbours' scores (the pixel itself is not among them).

    The affinities are computed on one thread (:func:`single_thread`), so the result does not depend on the thread
    count beyond the last bits of ``logits``.

    Args:
        image: float ``[3, h, w]`` guide (the references use the normalised model input, resized to ``h x w``).
        logits: float ``[K, h, w]`` scores (the references refine the cosine logits, before the softmax).
        iterations: refinement steps (the references: 10).
        dilations: neighbourhood radii in pixels (SCLIP and NACLIP: ``(8, 16)``).

    Returns:
        ``[K, h, w]`` refined scores (each step is a convex combination, per channel).
    """
    if image.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"pamr: image {tuple(image.shape)} and logits {tuple(logits.shape)} differ in size")
    if iterations < 0 or not dilations or any(int(d) < 1 for d in dilations):
        raise ValueError(f"pamr needs iterations >= 0 and dilations >= 1, got {iterations}, {tuple(dilations)}")
    x = image.float()
    dmax = max(int(d) for d in dilations)
    ring = [(dy, dx) for d in dilations for dy in (-d, 0, d) for dx in (-d, 0, d)]  # 3x3 per dilation, centre too
    offsets = [(dy, dx) for dy, dx in ring if (dy, dx) != (0, 0)]
    with single_thread():  # see single_thread(): the affinities are ill-conditioned in flat regions
        xp = F.pad(x[None], (dmax,) * 4, mode="replicate")[0]
        sigma = torch.stack([_shift(x, xp, dmax, dy, dx) for dy, dx in ring]).std(0, unbiased=True)  # [3, h, w]
        denom = 1e-8 + 0.1 * sigma
        aff = torch.stack([(-(x - _shift(x, xp, dmax, dy, dx)).abs() / denom).mean(0) for dy, dx in offsets])
        aff = aff.softmax(0)  # [P, h, w]
    m = logits.float()
    for _ in range(iterations):
        mp = F.pad(m[None], (dmax,) * 4, mode="replicate")[0]
        acc = torch.zeros_like(m)
        for k, (dy, dx) in enumerate(offsets):
            acc += aff[k] * _shift(m, mp, dmax, dy, dx)
        m = acc
    return m


def class_probs(logits: torch.Tensor, owner: torch.Tensor, num_classes: int, logit_scale: float) -> torch.Tensor:
    """``softmax(logit_scale * logits)`` over all texts ``[S, H, W]``, then each class's best text: ``[K, H, W]``.

    Every synonym is a text of its own in the softmax, and a class takes its best synonym's probability (the
    references' ``postprocess_result``); the class probabilities therefore need not sum to 1.
    """
    p = (float(logit_scale) * logits.float()).softmax(0)
    if len(owner) == num_classes:
        return p
    out = torch.full((num_classes, *p.shape[1:]), -torch.inf, dtype=p.dtype, device=p.device)
    idx = owner.to(p.device).view(-1, 1, 1).expand_as(p)
    return out.scatter_reduce(0, idx, p, reduce="amax")


def classify(
    probs: torch.Tensor, *, prob_thresh: float = 0.0, area_thresh: float | None = None, background: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label map ``[H, W]`` (int64) from class probabilities ``[K, H, W]``, and the probabilities after the area
    filter (what the references return as the result's scores).

    SCLIP's area filter first: when ``area_thresh`` is set, each class other than ``background`` whose argmax area
    is at most ``area_thresh`` times the argmax area of all classes but ``background`` gets probability 0. Then the
    argmax, and pixels whose best remaining probability is below ``prob_thresh`` become ``background`` (class 0 in
    the references: the threshold writes label 0).
    """
    if area_thresh is not None and probs.shape[0] > 1:
        k = probs.shape[0]
        area = torch.bincount(probs.argmax(0).flatten(), minlength=k).to(probs.dtype)
        fg = torch.ones(k, dtype=torch.bool, device=probs.device)
        fg[background] = False
        keep = area > float(area_thresh) * area[fg].sum()
        keep[background] = True
        probs = torch.where(keep.view(-1, 1, 1), probs, torch.zeros_like(probs))
    best, label = probs.max(0)
    if prob_thresh > 0:
        label = torch.where(best < prob_thresh, torch.full_like(label, background), label)
    return label, probs
