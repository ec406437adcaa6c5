"""Toyworld: a procedural, seeded world of coloured shapes with captions, masks, boxes and label maps.

Every scene is a small RGB image holding one or more filled shapes (6 shapes x 6 colours x 3 sizes, placed on a
named 3x3 grid) on a textured or plain background, with pixel-exact instance masks, tight boxes, semantic and
instance label maps and several true captions. It exists so a tiny CLIP can be trained from scratch on a CPU and its
zero-shot behaviour measured without downloading anything; see ``docs/toyworld.md``.

Determinism: scene ``i`` of ``ToyWorld(split, seed=s)`` is generated from its own generator
``np.random.default_rng([s, SPLIT_IDS[split], i])``, so access is random, independent of order and of worker
processes, and the same arguments always give byte-identical scenes. Rasterisation uses only elementwise
multiply/add/compare on per-pixel arrays (no vectorised transcendental functions), so results do not depend on the
CPU's SIMD paths.

Compositional hold-out: six (colour, shape) pairs (:data:`HELDOUT_PAIRS`, one per shape and one per colour) never
appear in the ``train``/``val``/``test`` splits, neither as objects nor in captions; the ``heldout`` split uses only
them.

>>> ds = ToyWorld("train", num_scenes=10, seed=0)
>>> scene = ds[3]
>>> scene.image.shape, scene.image.dtype, scene.masks.shape[1:], scene.semantic.dtype
((64, 64, 3), dtype('uint8'), (64, 64), dtype('int64'))
>>> len(scene.objects) == len(scene.masks) == len(scene.boxes)
True
>>> any((o.colour, o.shape) in HELDOUT_PAIRS for o in scene.objects)
False
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.masks import mask_to_rle, masks_to_boxes, rle_to_mask  # noqa: F401  (rle_to_mask: re-exported)

logger = logging.getLogger(__name__)

__all__ = [
    "COLOURS",
    "HELDOUT_PAIRS",
    "KINDS",
    "POSITIONS",
    "SEEN_PAIRS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Scene",
    "ToyObject",
    "ToyWorld",
    "all_pairs",
    "class_names",
    "make_scene",
    "parse_caption",
    "rle_to_mask",
    "scene_to_coco_rle",
]

# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart")
"""The six shape names; ``semantic`` label and COCO ``category_id`` of a shape are ``1 + SHAPES.index(name)``."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (30, 170, 50),
    "blue": (35, 85, 230),
    "yellow": (245, 215, 30),
    "purple": (150, 50, 205),
    "orange": (250, 135, 15),
}
"""The six colour names and their nominal sRGB values (each object jitters every channel by up to ``COLOUR_JITTER``)."""

COLOUR_JITTER: int = 12
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RADII: dict[str, tuple[float, float]] = {"small": (5.0, 7.0), "medium": (8.5, 11.0), "large": (12.5, 16.0)}
"""Circumradius range (pixels at ``image_size=64``; scaled linearly with ``image_size``) of each size name."""

POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
"""Names of the 3x3 grid cells, row-major; an object's position is the cell holding its centre."""

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")
SPLIT_IDS: dict[str, int] = {name: i for i, name in enumerate(SPLITS)}
KINDS: tuple[str, ...] = ("shape", "colour", "colour_shape")
BACKGROUNDS: tuple[str, ...] = ("noise", "plain")

SHAPE_EXTENT: float = 1.1
"""Every shape lies within ``SHAPE_EXTENT * radius`` of its centre; placement keeps that disc inside the image."""

MIN_VISIBLE_FRACTION: float = 0.5
"""An object is kept only if at least this fraction of its drawn pixels stays visible after later objects."""

_COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (_COLOUR_NAMES[(i + 2) % len(_COLOUR_NAMES)], shape) for i, shape in enumerate(SHAPES)
)
"""(colour, shape) pairs never shown in train/val/test: shape ``i`` with colour ``(i + 2) % 6`` (a Latin-square
diagonal, so every shape and every colour is held out exactly once)."""

SEEN_PAIRS: frozenset[tuple[str, str]] = frozenset((c, s) for c in COLOURS for s in SHAPES) - HELDOUT_PAIRS
"""The other 30 (colour, shape) pairs, used by the train/val/test splits."""

_POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
_NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")


def all_pairs() -> list[tuple[str, str]]:
    """All 36 (colour, shape) pairs, sorted.

    Returns:
        Sorted list of ``(colour, shape)`` tuples.
    """
    return sorted((c, s) for c in COLOURS for s in SHAPES)


def class_names(kind: str) -> list[str]:
    """Sorted class names of one labelling of single-object scenes.

    Args:
        kind: ``"shape"`` (6 names such as ``"circle"``), ``"colour"`` (6 names such as ``"red"``) or
            ``"colour_shape"`` (36 names such as ``"red circle"``, held-out pairs included).

    Returns:
        Alphabetically sorted names; :meth:`Scene.label` indexes this list (as does torchvision's ``ImageFolder``
        on a directory written by :func:`export_imagefolder`, when every class is present).

    >>> class_names("colour_shape")[:3]
    ['blue circle', 'blue cross', 'blue heart']
    """
    if kind == "shape":
        return sorted(SHAPES)
    if kind == "colour":
        return sorted(COLOURS)
    if kind == "colour_shape":
        return sorted(f"{c} {s}" for c, s in all_pairs())
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(phrase: str) -> str:
    """Noun phrase with its indefinite article: 'orange star' -> 'an orange star'."""
    return f"{_article(phrase)} {phrase}"


# --------------------------------------------------------------------------------------------------------------------
# Scene records
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ToyObject:
    """One drawn shape.

    Attributes:
        shape: A name from :data:`SHAPES`.
        colour: A name from :data:`COLOURS`.
        size: A name from :data:`SIZES`.
        position: A name from :data:`POSITIONS` (the 3x3 cell holding ``center``).
        rgb: The exact ``(r, g, b)`` uint8 colour painted on every pixel of the object's mask.
        center: ``(x, y)`` centre in pixel coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``).
        radius: Size in pixels: the shape fits in the circle of ``SHAPE_EXTENT * radius`` around ``center`` (circles,
            stars, crosses and hearts within ``radius``; square and triangle corners reach ``1.1 * radius``).
        rotation: Rotation in degrees, counter-clockwise (0 for circles).
    """

    shape: str
    colour: str
    size: str
    position: str
    rgb: tuple[int, int, int]
    center: tuple[float, float]
    radius: float
    rotation: float = 0.0

    @property
    def name(self) -> str:
        """``"<colour> <shape>"``, e.g. ``"red circle"``."""
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable attributes (plain Python types)."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "position": self.position,
            "rgb": [int(v) for v in self.rgb],
            "center": [float(v) for v in self.center],
            "radius": float(self.radius),
            "rotation": float(self.rotation),
        }


@dataclass
class Scene:
    """One generated scene.

    Attributes:
        image: uint8 ``[H, W, 3]`` RGB image.
        objects: The ``K`` objects in drawing order (later objects are drawn over earlier ones).
        masks: bool ``[K, H, W]``; ``masks[k]`` is exactly the set of pixels showing object ``k`` after occlusion,
            and the image has exactly ``objects[k].rgb`` there. Masks are disjoint and never empty.
        boxes: float32 ``[K, 4]`` ``(x1, y1, x2, y2)`` pixel boxes tightly enclosing each mask: ``x1``/``y1`` are the
            smallest column/row of the mask, ``x2``/``y2`` the largest plus one.
        semantic: int64 ``[H, W]``; 0 for background, ``1 + SHAPES.index(shape)`` of the visible object elsewhere.
        instance: int32 ``[H, W]``; 0 for background, ``k + 1`` where object ``k`` is visible.
        captions: Several captions, all true of the scene; the first mentions every object.
        scene_id: Index of the scene in its split.
        split: The split it belongs to (one of :data:`SPLITS`).
    """

    image: np.ndarray
    objects: list[ToyObject]
    masks: np.ndarray
    boxes: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    captions: list[str]
    scene_id: int = 0
    split: str = "train"

    def label_name(self, kind: str = "colour_shape") -> str:
        """Class name of a single-object scene: ``"circle"``, ``"red"`` or ``"red circle"``.

        Args:
            kind: One of :data:`KINDS`.

        Raises:
            ValueError: If the scene does not hold exactly one object, or ``kind`` is unknown.
        """
        if len(self.objects) != 1:
            raise ValueError(f"label() needs a single-object scene; scene {self.scene_id} has {len(self.objects)}")
        o = self.objects[0]
        if kind == "shape":
            return o.shape
        if kind == "colour":
            return o.colour
        if kind == "colour_shape":
            return o.name
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def label(self, kind: str = "colour_shape") -> int:
        """Class index of a single-object scene into :func:`class_names(kind) <class_names>`.

        Args:
            kind: One of :data:`KINDS`.

        Raises:
            ValueError: If the scene does not hold exactly one object, or ``kind`` is unknown.
        """
        return class_names(kind).index(self.label_name(kind))


# --------------------------------------------------------------------------------------------------------------------
# Rasterisation: inside tests on unit-circumradius shapes, with only elementwise +, *, abs, max and compares
# --------------------------------------------------------------------------------------------------------------------

_C30, _S30 = math.cos(math.pi / 6), 0.5
# star: fold by the pentagonal mirrors (after Inigo Quilez's sdStar5), then test one edge
_K1 = (math.cos(math.pi / 5), -math.sin(math.pi / 5))
_STAR_INNER = 0.45
_STAR_BA = (-_STAR_INNER * _K1[1], _STAR_INNER * _K1[0] - 1.0)
_TRI_NORMALS = tuple((math.cos(a), math.sin(a)) for a in (math.pi / 6, 5 * math.pi / 6, 3 * math.pi / 2))
# Rotation range (degrees, symmetric) that covers each shape's distinct orientations; hearts stay upright-ish.
_MAX_ROTATION: dict[str, float] = {"circle": 0.0, "square": 45.0, "triangle": 60.0, "star": 36.0, "cross": 45.0,
                                   "heart": 25.0, "hexagon": 30.0, "ring": 0.0}  # fmt: skip


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points ``(u, v)`` (y up, unit circumradius, already rotated) are inside ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.78
    if shape == "triangle":  # equilateral, pointing up, centroid at the origin, vertices on the unit circle
        # slightly enlarged (vertices at 1.1) so its area is closer to the other shapes'
        out = None
        for nx, ny in _TRI_NORMALS:
            t = u * nx + v * ny <= 0.55
            out = t if out is None else out & t
        return out
    if shape == "star":
        au = np.abs(u)
        d = np.maximum(_K1[0] * au + _K1[1] * v, 0.0)
        pu, pv = au - 2 * d * _K1[0], v - 2 * d * _K1[1]
        d = np.maximum(-_K1[0] * pu + _K1[1] * pv, 0.0)
        pu, pv = pu + 2 * d * _K1[0], pv - 2 * d * _K1[1]
        pu = np.abs(pu)
        pv = pv - 1.0
        return pv * _STAR_BA[0] - pu * _STAR_BA[1] <= 0.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.92)) | ((av <= 0.3) & (au <= 0.92))
    if shape == "heart":  # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled and shifted to fit the unit circle
        x, y = u * 1.12, v * 1.12 + 0.12
        q = x * x + y * y - 1.0
        return q * q * q - x * x * y * y * y <= 0.0
    if shape == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return (av <= _C30) & (au * _C30 + av * _S30 <= _C30)
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    raise ValueError(f"unknown shape {shape!r}")


def _rasterise(
    shape: str, cx: float, cy: float, radius: float, rotation: float, height: int, width: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pixels of a shape whose centres lie inside it, within its clipped bounding window.

    Returns:
        ``(mask, (y0, y1, x0, x1))``: bool mask of the window ``[y0:y1, x0:x1]``.
    """
    x0, x1 = max(0, int(math.floor(cx - radius - 1))), min(width, int(math.ceil(cx + radius + 1)))
    y0, y1 = max(0, int(math.floor(cy - radius - 1))), min(height, int(math.ceil(cy + radius + 1)))
    inv = 1.0 / radius
    xs = (np.arange(x0, x1, dtype=np.float64) + (0.5 - cx)) * inv
    ys = (np.arange(y0, y1, dtype=np.float64) + (0.5 - cy)) * -inv  # y up
    u, v = xs[None, :], ys[:, None]
    if rotation:  # rotate the points by -rotation, i.e. the shape by +rotation
        a = math.radians(rotation)
        c, s = math.cos(a), math.sin(a)
        u, v = u * c + v * s, v * c - u * s
    else:
        u, v = np.broadcast_to(u, (y1 - y0, x1 - x0)), np.broadcast_to(v, (y1 - y0, x1 - x0))
    return _inside(shape, u, v), (y0, y1, x0, x1)


def _background(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """Low-saturation background, float32 ``[H, W, 3]`` in 0..255 (not yet rounded)."""
    grey = rng.uniform(70.0, 185.0)
    base = (grey + rng.uniform(-10.0, 10.0, size=3)).astype(np.float32)  # greyish: tint of at most +-10 per channel
    if kind == "plain":
        return np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    amp = rng.uniform(0.0, 30.0)  # gradient: total change across the image
    noise_amp = rng.uniform(0.25, 1.0)
    noise = rng.integers(-8, 9, size=(height, width, 3), dtype=np.int8)
    gx = (np.arange(width, dtype=np.float32) / width - 0.5) * np.float32(amp * math.cos(angle))
    gy = (np.arange(height, dtype=np.float32) / height - 0.5) * np.float32(amp * math.sin(angle))
    ramp = gy[:, None, None] + gx[None, :, None]
    return noise * np.float32(noise_amp) + ramp + base


# --------------------------------------------------------------------------------------------------------------------
# Scene generation
# --------------------------------------------------------------------------------------------------------------------


def _object_phrase(o: ToyObject, *, size: bool = False, position: bool = False) -> str:
    words = f"{o.size} {o.colour} {o.shape}" if size else f"{o.colour} {o.shape}"
    text = _np(words)
    return f"{text} {_POSITION_PHRASES[o.position]}" if position else text


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


# Captions about one (randomly chosen) object; all true in a scene containing it.
_SINGLE_TEMPLATES: tuple[Callable[[ToyObject], str], ...] = (
    lambda o: _object_phrase(o),  # a red circle
    lambda o: f"a photo of {_object_phrase(o)}",  # a photo of a red circle
    lambda o: _object_phrase(o, size=True),  # a small red circle
    lambda o: _object_phrase(o, position=True),  # a blue star on the right
    lambda o: _object_phrase(o, size=True, position=True),  # a small green triangle at the top left
    lambda o: f"there is {_object_phrase(o, size=True, position=True)}",  # there is a large yellow heart in the center
    lambda o: f"a picture of {_object_phrase(o, size=True)}",  # a picture of a large red circle
    lambda o: _np(o.shape),  # a circle
    lambda o: f"a photo of {_np(o.shape)}",  # a photo of a circle
    lambda o: f"{_np(o.size)} {o.shape}",  # a small circle
    lambda o: f"something {o.colour}",  # something red
    lambda o: f"{_np(o.colour)} object",  # a red object
)


def _listing_caption(objs: Sequence[ToyObject], rng: np.random.Generator) -> str:
    """A caption naming every object (in random order)."""
    order = [objs[i] for i in rng.permutation(len(objs))]
    k = len(objs)
    template = int(rng.integers(5))
    if template == 4:
        return _join([_object_phrase(o, position=True) for o in order])  # a red circle on the left and a ...
    items = _join([_object_phrase(o) for o in order])
    if template == 0:
        return items  # a red circle and a blue star
    if template == 1:
        return f"a photo of {items}"  # a photo of a red circle and a blue star
    if template == 2:  # two shapes: a red circle and a blue star
        return f"one shape: {items}" if k == 1 else f"{_NUMBER_WORDS[k]} shapes: {items}"
    return f"a picture with one object: {items}" if k == 1 else f"a picture with {_NUMBER_WORDS[k]} objects: {items}"


def _captions(objs: Sequence[ToyObject], rng: np.random.Generator, num: int) -> list[str]:
    """``num`` captions: one listing every object, then single-object templates (distinct templates)."""
    caps = [_listing_caption(objs, rng)]
    templates = rng.permutation(len(_SINGLE_TEMPLATES))
    for t in templates[: max(0, num - 1)]:
        caps.append(_SINGLE_TEMPLATES[int(t)](objs[int(rng.integers(len(objs)))]))
    return caps[:num]


def _place_range(cell: int, radius: float, size: int) -> tuple[float, float]:
    """Range of centre coordinates inside grid cell ``cell`` (10% margins) keeping the shape inside the image."""
    c = size / 3.0
    reach = SHAPE_EXTENT * radius
    lo, hi = max(cell * c + 0.1 * c, reach), min((cell + 1) * c - 0.1 * c, size - reach)
    return lo, max(lo, hi)


def make_scene(
    rng: np.random.Generator,
    *,
    image_size: int = 64,
    pairs: Sequence[tuple[str, str]] = tuple(sorted(SEEN_PAIRS)),
    min_objects: int = 1,
    max_objects: int = 4,
    background: str = "noise",
    num_captions: int = 5,
    scene_id: int = 0,
    split: str = "train",
) -> Scene:
    """Generate one scene from a generator (the low-level function behind :class:`ToyWorld`).

    Objects get distinct (colour, shape) pairs drawn from ``pairs``; a size, a grid cell, a centre in that cell,
    a rotation and a jittered colour. A placement is resampled (size, cell, centre, rotation) while it would leave an
    earlier object with less than :data:`MIN_VISIBLE_FRACTION` of its pixels visible, or would touch an earlier
    object of the same colour name (which would merge the two into one blob).

    Args:
        rng: The generator; the scene is a deterministic function of its state.
        image_size: Side of the square image in pixels (>= 32).
        pairs: Allowed ``(colour, shape)`` pairs.
        min_objects: Fewest objects.
        max_objects: Most objects (at most ``len(pairs)``).
        background: ``"noise"`` (grey-ish base colour, gradient and per-pixel noise) or ``"plain"``.
        num_captions: Captions per scene.
        scene_id: Stored on the scene.
        split: Stored on the scene.

    Returns:
        The :class:`Scene`.
    """
    h = w = image_size
    scale = image_size / 64.0
    pairs = list(pairs)
    k = int(rng.integers(min_objects, max_objects + 1))
    chosen = [pairs[int(i)] for i in rng.choice(len(pairs), size=k, replace=False)]
    for _restart in range(100):
        instance = np.zeros((h, w), dtype=np.int32)
        objs: list[ToyObject] = []
        areas: list[int] = []
        visible = np.zeros(k, dtype=np.int64)
        for colour, shape in chosen:
            placed = False
            for _attempt in range(50):
                size = SIZES[int(rng.integers(len(SIZES)))]
                lo, hi = SIZE_RADII[size]
                radius = float(rng.uniform(lo, hi)) * scale
                cell = int(rng.integers(9))
                row, col = divmod(cell, 3)
                cx = float(rng.uniform(*_place_range(col, radius, w)))
                cy = float(rng.uniform(*_place_range(row, radius, h)))
                max_rot = _MAX_ROTATION[shape]
                rotation = float(rng.uniform(-max_rot, max_rot)) if max_rot else 0.0
                gap = SHAPE_EXTENT * radius + 1.5  # same-colour objects may not touch: they would merge into one blob
                if any(
                    o.colour == colour
                    and math.hypot(o.center[0] - cx, o.center[1] - cy) < SHAPE_EXTENT * o.radius + gap
                    for o in objs
                ):
                    continue
                m, (y0, y1, x0, x1) = _rasterise(shape, cx, cy, radius, rotation, h, w)
                area = int(np.count_nonzero(m))
                if area == 0:
                    continue
                n = len(objs)
                window = instance[y0:y1, x0:x1]
                if n:
                    covered = np.bincount(window[m], minlength=n + 1)[1:]
                    remaining = visible[:n] - covered
                    if np.any(remaining < MIN_VISIBLE_FRACTION * np.asarray(areas)):
                        continue
                    visible[:n] = remaining
                window[m] = n + 1
                visible[n] = area
                areas.append(area)
                base = COLOURS[colour]
                jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
                rgb = tuple(int(min(255, max(0, b + j))) for b, j in zip(base, jitter))
                objs.append(ToyObject(shape, colour, size, POSITIONS[cell], rgb, (cx, cy), radius, rotation))
                placed = True
                break
            if not placed:
                break
        if len(objs) == k:
            break
    else:  # pragma: no cover - needs absurd arguments
        raise RuntimeError(f"could not place {k} objects in a {image_size}px scene after 100 restarts")

    bg = _background(rng, h, w, background)
    palette = np.zeros((k + 1, 3), dtype=np.float32)
    palette[1:] = np.asarray([o.rgb for o in objs], dtype=np.float32)
    fg = instance > 0
    img = np.where(fg[:, :, None], palette[instance], bg)
    image = np.clip(img + 0.5, 0.0, 255.0).astype(np.uint8)

    masks = instance[None, :, :] == np.arange(1, k + 1, dtype=np.int32)[:, None, None]
    boxes = masks_to_boxes(masks)
    shape_ids = np.zeros(k + 1, dtype=np.int64)
    shape_ids[1:] = [1 + SHAPES.index(o.shape) for o in objs]
    semantic = shape_ids[instance]
    captions = _captions(objs, rng, num_captions)
    return Scene(image, objs, masks, boxes, semantic, instance, captions, scene_id, split)


# --------------------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_split(split: str) -> str:
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


class ToyWorld(torch.utils.data.Dataset):
    """A seeded, random-access dataset of toyworld scenes.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` (all use :data:`SEEN_PAIRS` only, with independent random streams)
            or ``"heldout"`` (uses :data:`HELDOUT_PAIRS` only).
        num_scenes: Length of the dataset.
        image_size: Side of the square images in pixels (>= 32); object sizes scale with it.
        seed: Non-negative integer; scene ``i`` is generated by ``np.random.default_rng([seed, split_id, i])``.
        min_objects: Fewest objects per scene (>= 1).
        max_objects: Most objects per scene (>= ``min_objects``, at most 6).
        background: ``"noise"`` (textured) or ``"plain"`` (one random greyish colour).
        num_captions: Captions per scene (>= 1).
        transform: Optional function applied to each :class:`Scene` by ``__getitem__`` (e.g. to return
            ``(tensor, caption)`` pairs to a ``DataLoader``).

    ``ds[i]`` returns a :class:`Scene` (or ``transform(scene)``); the same arguments give byte-identical scenes in any
    access order and in any worker process.
    """

    def __init__(
        self,
        split: str = "train",
        num_scenes: int = 10000,
        *,
        image_size: int = 64,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 4,
        background: str = "noise",
        num_captions: int = 5,
        transform: Callable[[Scene], Any] | None = None,
    ) -> None:
        self.split = _check_split(split)
        self.num_scenes = _check_int("num_scenes", num_scenes, 0)
        self.image_size = _check_int("image_size", image_size, 32)
        self.seed = _check_int("seed", seed, 0)
        self.min_objects = _check_int("min_objects", min_objects, 1)
        self.max_objects = _check_int("max_objects", max_objects, 1)
        self.pairs: tuple[tuple[str, str], ...] = tuple(sorted(HELDOUT_PAIRS if split == "heldout" else SEEN_PAIRS))
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({max_objects}) must be >= min_objects ({min_objects})")
        if self.max_objects > len(HELDOUT_PAIRS):
            raise ValueError(
                f"max_objects must be <= {len(HELDOUT_PAIRS)} (objects get distinct pairs), got {max_objects}"
            )
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        self.background = background
        self.num_captions = _check_int("num_captions", num_captions, 1)
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {transform!r}")
        self.transform = transform

    def __len__(self) -> int:
        return self.num_scenes

    def rng(self, index: int) -> np.random.Generator:
        """The generator of scene ``index`` (non-negative)."""
        return np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])

    def scene(self, index: int) -> Scene:
        """Scene ``index`` (negative indices count from the end), ignoring ``transform``."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        i = int(index) + self.num_scenes if index < 0 else int(index)
        if not 0 <= i < self.num_scenes:
            raise IndexError(f"index {index} out of range for ToyWorld of length {self.num_scenes}")
        return make_scene(
            self.rng(i),
            image_size=self.image_size,
            pairs=self.pairs,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            background=self.background,
            num_captions=self.num_captions,
            scene_id=i,
            split=self.split,
        )

    def __getitem__(self, index: int) -> Any:
        scene = self.scene(index)
        return self.transform(scene) if self.transform is not None else scene

    def __repr__(self) -> str:
        return (
            f"ToyWorld(split={self.split!r}, num_scenes={self.num_scenes}, image_size={self.image_size}, "
            f"seed={self.seed}, min_objects={self.min_objects}, max_objects={self.max_objects}, "
            f"background={self.background!r})"
        )


# --------------------------------------------------------------------------------------------------------------------
# COCO run-length encoding
# --------------------------------------------------------------------------------------------------------------------


# COCO RLE lives in visionfm.data.masks (shared with pipelines and evaluation); the toyworld names stay.
scene_to_coco_rle = mask_to_rle


def parse_caption(caption: str) -> dict[str, list[str]]:
    """Vocabulary words in a caption, for checking it against a scene.

    Returns:
        ``{"shapes": [...], "colours": [...], "sizes": [...], "positions": [...], "pairs": ["red circle", ...]}``
        where ``pairs`` are the adjacent ``"<colour> <shape>"`` mentions (possibly with a size word before them).
    """
    words = caption.replace(",", " ").replace(":", " ").split()
    text = " ".join(words)
    positions = [p for p in sorted(POSITIONS, key=len, reverse=True) if f" {p}" in f" {text}"]
    # "top left" also contains "top" and "left": keep only maximal matches
    positions = [p for p in positions if not any(p != q and p in q and f" {q}" in f" {text}" for q in positions)]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:]) if a in COLOURS and b in SHAPES]
    return {
        "shapes": [t for t in words if t in SHAPES],
        "colours": [t for t in words if t in COLOURS],
        "sizes": [t for t in words if t in SIZES],
        "positions": positions,
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------------------------------
