"""``pipeline("zero-shot-seg")``: training-free open-vocabulary semantic segmentation with dense CLIP.

``seg(image, labels=["cat", "sofa"], background=True)`` returns a :class:`SegResult` whose ``label_map`` gives,
for every pixel of the original image, an index into ``result.labels``. The protocol is the one the SCLIP, ClearCLIP,
NACLIP and ProxyCLIP reference implementations share (step by step in :mod:`visionfm.pipelines.seg_protocol`; each
step is checked against their code's outputs on the same weights), and ``preset="naclip-voc21"`` etc. sets every
option as a method's released config for a benchmark (:mod:`visionfm.pipelines.seg_presets`):

1. rescale the image (one factor: short side ``short_side`` unless the long side would pass ``max_long_side``;
   OpenCV bilinear on uint8, as mmcv);
2. ``inference="slide"``: windows of ``window`` pixels every ``stride`` (mmseg's layout; no padding: a side shorter
   than the window is one window of its own length), ``batch_size`` windows per forward; ``"whole"``: the whole
   rescaled image in one forward (any aspect ratio; position embeddings resized to its grid);
3. per window, dense CLIP patch embeddings (:func:`visionfm.foundation.dense.dense_features` in ``mode``; ``proxy``
   takes the attention from a ``proxy`` encoder that sees the window at its own resolution), the cosine similarity
   of every text (each label, each synonym, each background name, prompt-ensembled) upsampled bilinearly to the
   window and averaged where windows overlap;
4. those cosine maps resized (bilinear) to the original image size, then optionally refined by PAMR guided by the
   (normalised) image;
5. ``softmax(logit_scale * cos)`` over all texts; each class takes its best synonym's probability; argmax; pixels
   whose best class probability is under ``prob_thresh`` (or whose best cosine is under ``cos_thresh``) become
   background (index 0); optional ``area_thresh`` (SCLIP) and SAM refinement (``refine=`` a SAM model).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.masks import mask_to_rle
from ..foundation.dense import DENSE_MODES, POS_INTERPOLATIONS, check_mode, dense_features
from ..foundation.encoder import Encoder
from ..foundation.zero_shot import Templates, check_labels, duplicate_groups, text_classifier
from ..foundation.zero_shot import templates_key as _templates_key
from .base import _LOAD_OPTIONS, Pipeline, register_pipeline
from .seg_methods import seg_backends, seg_methods
from .seg_protocol import (
    class_probs,
    classify,
    pad_to_multiple,
    pamr,
    rescale,
    rescaled_size,
    single_thread,
    to_size,
    window_grid,
)

logger = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass
class SegResult:
    """Semantic segmentation of one image.

    Attributes:
        label_map: int64 ``[H, W]`` at the original image size, indices into ``labels``.
        labels: the class names; ``labels[0] == "background"`` when background was requested.
        scores: float ``[K]`` mean winning probability over each label's pixels (0 for absent labels).
        probs: float ``[K, H, W]`` class probabilities at the original size: the softmax over all texts, each class
            taking its best synonym's (so they need not sum to 1), after thresholds and refinement.
        protocol: everything that determined the result (model, mode, window, stride, short side, logit scale,
            probability threshold, templates, refinement).
    """

    label_map: torch.Tensor
    labels: list[str]
    scores: torch.Tensor
    probs: torch.Tensor
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{label: bool [H, W]}`` for every label present in the map."""
        return {lab: self.label_map == i for i, lab in enumerate(self.labels) if bool((self.label_map == i).any())}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: labels, per-label scores, one COCO uncompressed RLE mask per present label, the protocol."""
        return {
            "labels": list(self.labels),
            "scores": {lab: float(s) for lab, s in zip(self.labels, self.scores)},
            "masks": {lab: mask_to_rle(m.cpu().numpy()) for lab, m in self.masks.items()},
            "protocol": dict(self.protocol),
        }

    def colour_map(self) -> np.ndarray:
        """uint8 ``[H, W, 3]``: each label in its own fixed colour (background black)."""
        rng = np.random.default_rng(1)
        palette = rng.integers(40, 256, (len(self.labels), 3)).astype(np.uint8)
        if self.labels and self.labels[0] == BACKGROUND:
            palette[0] = 0
        return palette[self.label_map.cpu().numpy()]

    def overlay(self, image: Any, alpha: float = 0.5) -> Any:
        """The image blended with :meth:`colour_map`, with a legend of the present labels (a PIL image)."""
        from PIL import Image, ImageDraw

        from ..data.images import to_uint8_chw

        base = to_uint8_chw(image).permute(1, 2, 0).numpy().astype(np.float32)
        colours = self.colour_map().astype(np.float32)
        out = Image.fromarray(((1 - alpha) * base + alpha * colours).round().clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        y = 2
        for lab in self.masks:
            c = tuple(int(v) for v in colours[self.label_map.cpu().numpy() == self.labels.index(lab)][0])
            draw.rectangle([2, y, 10, y + 8], fill=c, outline=(255, 255, 255))
            draw.text((14, y - 1), lab, fill=(255, 255, 255))
            y += 12
        return out


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming ``name``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _unit_range(name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as a float in ``[lo, hi]``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    v = float(value)
    if math.isnan(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer (pixels), got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 (pixels), got {value}")
    return int(value)


def _check_shared_texts(names: Sequence[str], texts: Sequence[Sequence[str]], what: str = "labels") -> None:
    """Raise when one text (ignoring case and extra spaces) belongs to more than one class: the classes would
    share its score."""
    owners = [(t, n) for n, ts in zip(names, texts) for t in ts]
    for group in duplicate_groups([t for t, _ in owners]):
        classes = list(dict.fromkeys(n for t, n in owners if t in group))
        if len(classes) > 1:
            raise ValueError(
                f"{what} must be unique (compared ignoring case and extra spaces, as CLIP's tokenizer reads them): "
                f"the text {group[-1]!r} names more than one class ({', '.join(map(repr, classes))}; synonyms and "
                "background names count)"
            )


def _parse_labels(
    labels: str | Sequence[str],
    synonyms: Mapping[str, str | Sequence[str]] | None,
    name: str = "labels",
    *,
    check_shared: bool = True,
) -> tuple[list[str], list[list[str]]]:
    """Names and, per name, the texts to embed. ``"sofa; couch"`` or ``synonyms={"sofa": ["couch"]}``; one
    string is one class (``"sofa; couch"`` included) and a synonym string is one synonym.

    Raises when a label has no name (only ``;``), or when the same text (ignoring case and extra spaces, as CLIP's
    tokenizer reads it) names two classes: its probability would be split."""
    labels = check_labels(labels, name)
    names, texts = [], []
    for i, lab in enumerate(labels):
        parts = [p.strip() for p in lab.split(";") if p.strip()]
        if not parts:
            raise ValueError(
                f"{name}[{i}] = {lab!r} has no class name: ';' separates a class's synonyms (\"sofa; couch\"), so "
                "a label cannot be only separators"
            )
        extra = (synonyms or {}).get(parts[0], ())
        extra = [extra] if isinstance(extra, str) else list(extra)
        if not all(isinstance(x, str) and x.strip() for x in extra):
            raise ValueError(f"synonyms[{parts[0]!r}] must be non-empty strings, got {extra!r}")
        own: dict[str, str] = {}  # one class's texts, each once
        for t in parts + [x.strip() for x in extra]:
            own.setdefault(" ".join(t.lower().split()), t)
        names.append(parts[0])
        texts.append(list(own.values()))
    dups = duplicate_groups(names)
    if dups:
        raise ValueError(
            f"{name} must be unique (compared ignoring case and extra spaces, as CLIP's tokenizer reads them); "
            f"duplicates: {', '.join(' = '.join(map(repr, g)) for g in dups)}"
        )
    if check_shared:
        _check_shared_texts(names, texts, name)
    return names, texts


@register_pipeline("zero-shot-seg")
class ZeroShotSegPipeline(Pipeline):
    """Open-vocabulary segmentation from a CLIP model, training-free. See the module docstring.

    Every option left unset comes from ``preset`` when one is given, else from the defaults below, which are the
    SCLIP/ClearCLIP/NACLIP/ProxyCLIP protocol for a 224-pixel ViT-B/16 (336 short side, 224 windows, stride 112,
    logit scale 40). A preset fixes what the method's released config for that benchmark fixes; the options passed
    here override it (and ``out.protocol`` records the result).

    Args:
        encoder: a CLIP encoder (open_clip ViT/ResNet or transformers CLIP).
        batch_size: windows per forward pass.
        preset: ``"<method>-<benchmark>"`` (``"naclip-voc21"``, ``"sclip-ade20k"``, ...; see
            :func:`visionfm.pipelines.seg_presets.preset_names`): the method's mode, protocol and thresholds for
            that benchmark, and its class names (used when a call passes no ``labels``).
        mode: one of :data:`visionfm.foundation.dense.DENSE_MODES` (default ``"sclip"``).
        proxy: for ``mode="proxy"``: an encoder or model name (DINO, DINOv2, DINOv3, SAM, a timm ViT; any encoder with
            ``patches``) whose patch affinity gives the attention. It sees each window at the window's own size, so a
            timm ViT built without ``dynamic_img_size`` needs windows of its native size.
        proxy_grid: ``mode="proxy"`` answers on the proxy's patch grid (ProxyCLIP's; default) or, when ``False``, on
            CLIP's.
        refine: ``"pamr"``, a SAM model name / encoder / mask-generation pipeline, or a list of these; ``None``: the
            preset's (none without a preset); ``False`` or ``[]``: none, also over a preset's PAMR.
        sam_mode: ``"auto"`` (SAM automatic masks vote) or ``"box"`` (each label's region becomes a box prompt).
        templates: prompt templates, as for zero-shot classification (default: the 80 ImageNet prompts).
        short_side: the rescaled image's short side, a positive integer (default: 1.5 × the model's input size,
            336 for 224 models).
        max_long_side: cap on the rescaled long side (mmcv's ``scale=(2048, short_side)``; default 2048).
        resize: ``"cv2"`` (OpenCV bilinear on uint8: what the references feed their model; default) or
            ``"antialias"`` (torch bilinear with antialiasing).
        inference: ``"slide"`` (sliding windows; default) or ``"whole"`` (the whole rescaled image at once).
        window: sliding-window side, a positive integer (default: the model's input size). A window whose side is
            not a multiple of the patch size is encoded on the floor grid (the conv stem drops the remainder) and
            its scores are stretched over the whole window, as in the references.
        stride: window stride, in [1, window] (default: half the window).
        pad_multiple: zero-pad (centred) each window whose side is not a multiple of this before encoding and crop
            the scores back (ProxyCLIP: 56); default ``None``: no padding.
        pos_interp: how position embeddings are resized to a non-native grid: ``"dino"`` (the references';
            default) or ``"size"`` (transformers'); see :func:`visionfm.foundation.dense.resize_pos_embed`.
        logit_scale: multiplier of the cosine scores before the softmax (40 as SCLIP/NACLIP/ProxyCLIP; ClearCLIP
            uses 50).
        prob_thresh: pixels whose best class probability is below this become background (class 0); in [0, 1].
        cos_thresh: pixels whose best cosine similarity to a label (before ``logit_scale``) is below this become
            background. A softmax over a few labels is confident everywhere, also on background; the raw
            similarity is what drops there (pick the threshold on validation data). In [-1, 1]. Not in the
            references.
        area_thresh: SCLIP's area filter: a class predicted on at most this fraction of the non-background pixels
            is dropped (its pixels take their next best class); in [0, 1]; default ``None`` (off).
        pamr_steps: PAMR iterations for ``refine="pamr"`` (default 10).
        pamr_dilations: PAMR neighbourhood radii in pixels (default ``(8, 16)``, SCLIP's and NACLIP's).
        method_options: options of a registered method (``mode`` one of
            :func:`visionfm.pipelines.seg_methods.seg_methods`, e.g. the encoders it needs); refused for dense modes.
        sam_points_per_side: grid of SAM's automatic masks (``sam_mode="auto"``).
        sam_options: more options for SAM's automatic masks (see ``MaskGenerationPipeline.generate``), e.g.
            ``{"pred_iou_thresh": 0.8, "crops_n_layers": 1}``.

    Labels (``labels=`` of a call): one string is one class; ``"sofa; couch"`` gives synonyms. A label of only
    separators, or a text naming two classes (duplicates, a synonym or background name that is also a class;
    compared ignoring case and extra spaces), or a prompt longer than the text context is refused.
    """

    default_model = "clip-vit-b-16"

    @classmethod
    def build(
        cls,
        model: str | Encoder,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        **kwargs: Any,
    ) -> Pipeline:
        """Load ``model``; an encoder family with its own zero-shot-seg backend (SAM 3: :func:`visionfm.pipelines.
        seg_methods.register_seg_backend`) gets that backend's pipeline, every other model this CLIP pipeline."""
        if not isinstance(model, Encoder):
            from ..foundation.loading import load_encoder

            load_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _LOAD_OPTIONS}
            model = load_encoder(model, device=device, dtype=dtype, **load_kw)
        backend = seg_backends().get(model.info.family)
        if backend is not None:
            return backend(model, batch_size=batch_size, **kwargs)
        return cls(model, batch_size=batch_size, **kwargs)

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 16,
        preset: str | None = None,
        mode: str | None = None,
        proxy: str | Encoder | None = None,
        proxy_grid: bool | None = None,
        refine: Any = None,
        sam_mode: str = "auto",
        templates: Templates | None = None,
        short_side: int | None = None,
        max_long_side: int | None = None,
        resize: str | None = None,
        inference: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        pad_multiple: int | None = None,
        pos_interp: str | None = None,
        logit_scale: float | None = None,
        prob_thresh: float | None = None,
        cos_thresh: float | None = None,
        area_thresh: float | None = None,
        pamr_steps: int | None = None,
        pamr_dilations: Sequence[int] | None = None,
        method_options: Mapping[str, Any] | None = None,
        sam_points_per_side: int = 16,
        sam_options: Mapping[str, Any] | None = None,
        cache_size: int = 16,
    ) -> None:
        super().__init__(encoder, batch_size=batch_size)
        if not encoder.info.has_text or (encoder.info.family != "clip" and not hasattr(encoder, "dense_features")):
            raise TypeError(
                "zero-shot-seg needs a CLIP encoder (or a distilled student with a 'clip' adaptor and text_from), got "
                f"family {encoder.info.family!r}"
            )
        from .seg_presets import get_preset

        given = {
            "mode": mode, "proxy": proxy, "proxy_grid": proxy_grid, "refine": refine, "templates": templates,
            "short_side": short_side, "max_long_side": max_long_side, "resize": resize, "inference": inference,
            "window": window, "stride": stride, "pad_multiple": pad_multiple, "pos_interp": pos_interp,
            "logit_scale": logit_scale, "prob_thresh": prob_thresh, "cos_thresh": cos_thresh,
            "area_thresh": area_thresh, "pamr_steps": pamr_steps, "pamr_dilations": pamr_dilations,
            "method_options": method_options,
        }  # fmt: skip
        self.preset = get_preset(preset) if preset is not None else None
        opts = dict(self.preset.options) if self.preset is not None else {}
        opts.update({k: v for k, v in given.items() if v is not None})
        mode = opts.get("mode", "sclip")
        if hasattr(encoder, "dense_features"):  # a distilled student: its CLIP adaptor's patch features, no surgery
            mode = "student-adaptor" if mode == "sclip" else mode
            if mode != "student-adaptor":
                raise ValueError(f"a distilled student has no attention modes (got mode={mode!r}); leave mode unset")
        self.method = seg_methods().get(mode)  # Trident, CorrCLIP, ...: their own scoring (seg_methods.py)
        self.mode = mode if mode == "student-adaptor" or self.method is not None else check_mode(mode)
        self.method_options = {
            **(self.method.defaults if self.method else {}),
            **dict(opts.get("method_options") or {}),
        }
        if self.method is None and self.method_options:
            raise ValueError(f"method_options are for the methods {sorted(seg_methods())}, not mode={self.mode!r}")
        if self.method is not None:
            unknown = sorted(set(self.method_options) - set(self.method.option_keys))
            if unknown:
                raise ValueError(f"unknown method_options {unknown} for mode={self.mode!r}; "
                                 f"valid: {list(self.method.option_keys)}")  # fmt: skip
        native = encoder.info.image_size[0]
        self.patch = int(encoder.info.patch_size)
        self.window = _positive_int("window", opts.get("window", native))
        self.stride = _positive_int("stride", opts.get("stride", max(self.window // 2, 1)))
        self.short_side = _positive_int("short_side", opts.get("short_side", round(1.5 * native)))
        self.max_long_side = _positive_int("max_long_side", opts.get("max_long_side", 2048))
        if self.window < self.patch:
            raise ValueError(f"window {self.window} is smaller than the model's patch size {self.patch}")
        if not 0 < self.stride <= self.window:
            raise ValueError(f"stride must be in (0, window={self.window}], got {self.stride}")
        self.resize = _choice("resize", opts.get("resize", "cv2"), ("cv2", "antialias"))
        self.inference = _choice("inference", opts.get("inference", "slide"), ("slide", "whole"))
        self.pos_interp = _choice("pos_interp", opts.get("pos_interp", "dino"), POS_INTERPOLATIONS)
        pm = opts.get("pad_multiple")
        self.pad_multiple = None if pm is None else _positive_int("pad_multiple", pm)
        self.logit_scale = float(opts.get("logit_scale", 40.0))
        if not math.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be a positive number, got {self.logit_scale}")
        self.prob_thresh = _unit_range("prob_thresh", opts.get("prob_thresh", 0.0), 0.0, 1.0)
        ct = opts.get("cos_thresh")
        self.cos_thresh = None if ct is None else _unit_range("cos_thresh", ct, -1.0, 1.0)
        at = opts.get("area_thresh")
        self.area_thresh = None if at is None else _unit_range("area_thresh", at, 0.0, 1.0)
        self.pamr_steps = int(opts.get("pamr_steps", 10))
        self.pamr_dilations = tuple(int(d) for d in opts.get("pamr_dilations", (8, 16)))
        if self.pamr_steps < 0 or not self.pamr_dilations or min(self.pamr_dilations) < 1:
            raise ValueError(f"pamr_steps must be >= 0 and pamr_dilations >= 1, got {self.pamr_steps}, "
                             f"{self.pamr_dilations}")  # fmt: skip
        self.templates = opts.get("templates", "imagenet80")
        self.proxy_grid = bool(opts.get("proxy_grid", True))
        proxy = opts.get("proxy")
        self.proxy = self._load_proxy(proxy) if self.mode == "proxy" else None
        if proxy is not None and self.mode != "proxy":
            raise ValueError(f"proxy= is only used by mode='proxy' (mode is {self.mode!r})")
        if self.mode == "proxy" and self.proxy is None:
            raise ValueError("mode='proxy' needs proxy= (a DINO, DINOv2, DINOv3, SAM or timm ViT model)")
        if sam_mode not in ("auto", "box"):
            raise ValueError(f"sam_mode must be 'auto' or 'box', got {sam_mode!r}")
        self.sam_mode = sam_mode
        self.sam_points_per_side = int(sam_points_per_side)
        self.sam_options = dict(sam_options or {})
        self.use_pamr, self.sam = self._load_refiners(opts.get("refine"))
        self.cache_size = cache_size
        self._cache: OrderedDict[Any, torch.Tensor] = OrderedDict()
        self._region_mask: torch.Tensor | None = None  # the current image's region_masks entry (methods read it)

    # -- construction helpers -------------------------------------------------------------------
    def _load(self, name: str | Encoder) -> Encoder:
        if isinstance(name, Encoder):
            return name
        from ..foundation.loading import load_encoder

        return load_encoder(name, device=self.encoder.device, dtype=self.encoder.dtype)

    def _load_proxy(self, proxy: str | Encoder | None) -> Encoder | None:
        if proxy is None:
            return None
        enc = self._load(proxy)
        if enc.info.family not in ("dino", "dinov2", "dinov3", "sam", "timm"):  # any encoder with patches works
            logger.warning("proxy encoder of family %r: ProxyCLIP uses DINO, DINOv2 or SAM", enc.info.family)
        return enc

    def _load_refiners(self, refine: Any) -> tuple[bool, Any]:
        from .mask_generation import MaskGenerationPipeline

        items = refine if isinstance(refine, (list, tuple)) else ([] if refine is None or refine is False else [refine])
        use_pamr, sam = False, None
        for r in items:
            if r == "pamr":
                use_pamr = True
            elif isinstance(r, MaskGenerationPipeline):
                sam = r
            else:
                sam = MaskGenerationPipeline(self._load(r))
        return use_pamr, sam

    @property
    def protocol(self) -> dict[str, Any]:
        """The settings every result records (with the preset and the reference commit it mirrors, if any)."""
        out = {
            "model": self.encoder.info.name,
            "preset": self.preset.name if self.preset is not None else None,
            "reference": self.preset.reference if self.preset is not None else None,
            "mode": self.mode,
            "proxy": self.proxy.info.name if self.proxy is not None else None,
            "proxy_grid": self.proxy_grid if self.proxy is not None else None,
            "inference": self.inference,
            "short_side": self.short_side,
            "max_long_side": self.max_long_side,
            "resize": self.resize,
            "window": self.window,
            "stride": self.stride,
            "pad_multiple": self.pad_multiple,
            "pos_interp": self.pos_interp,
            "logit_scale": self.logit_scale,
            "prob_thresh": self.prob_thresh,
            "cos_thresh": self.cos_thresh,
            "area_thresh": self.area_thresh,
            "templates": self.templates if isinstance(self.templates, str) else list(map(str, self.templates)),
            "method": self.method.reference if self.method is not None else None,
            "refine": ([f"pamr:{self.pamr_steps}x{list(self.pamr_dilations)}"] if self.use_pamr else [])
            + ([f"sam-{self.sam_mode}:{self.sam.encoder.info.name}"] if self.sam is not None else []),
        }
        return out

    # -- text side --------------------------------------------------------------------------------
    def text_weights(self, texts: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of every text ``[S, D]`` (unit norm) and the class index of each ``[S]``, LRU-cached."""
        flat = [t for ts in texts for t in ts]
        owner = torch.tensor([i for i, ts in enumerate(texts) for _ in ts])
        key = (tuple(flat), _templates_key(self.templates))
        if key not in self._cache:
            with torch.inference_mode():
                self._cache[key] = text_classifier(self.encoder, flat, self.templates)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key], owner

    # -- image side -------------------------------------------------------------------------------
    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[3, H, W]`` -> the rescaled, normalised model input, float32 ``[3, h, w]``.

        Normalised as mmseg's data preprocessor does: ``(x - m) / s`` on the 0-255 scale, with the encoder's mean and
        std times 255 rounded to 3 decimals (the constants every reference config writes, e.g. CLIP's
        ``[122.771, 116.746, 104.094]``): PAMR's affinities divide by local spreads that can be a rounding error, so
        the guide must be the same to the last bit.
        """
        size = rescaled_size(tuple(pixels.shape[-2:]), self.short_side, self.max_long_side)
        x = rescale(pixels, size, self.resize).float()
        mean = torch.tensor([round(255 * m, 3) for m in self.encoder.info.mean]).view(3, 1, 1)
        std = torch.tensor([round(255 * s, 3) for s in self.encoder.info.std]).view(3, 1, 1)
        return (x - mean) / std

    def _dense(self, windows: torch.Tensor) -> torch.Tensor:
        """Unit-norm dense CLIP embeddings ``[B, gh, gw, D]`` of normalised windows (float ``[B, 3, s, t]``; the
        sides need not be multiples of the patch size: the floor grid is used, as a stride-``patch`` conv does)."""
        gh, gw = windows.shape[-2] // self.patch, windows.shape[-1] // self.patch
        if gh < 1 or gw < 1:
            raise ValueError(
                f"a {windows.shape[-2]}x{windows.shape[-1]} window is smaller than the model's patch size {self.patch}"
            )
        x = windows[..., : gh * self.patch, : gw * self.patch].to(self.encoder.device, self.encoder.dtype)
        if self.mode == "student-adaptor":  # a distilled student: its CLIP adaptor's patch outputs
            emb = self.encoder.dense_features(x)
        else:
            proxy_feats = self._proxy_features(windows) if self.proxy is not None else None
            emb = dense_features(self.encoder, x, self.mode, proxy_features=proxy_feats, pos_interp=self.pos_interp,
                                 proxy_grid=self.proxy_grid)  # fmt: skip
        return F.normalize(emb.float(), dim=-1)

    def _proxy_features(self, windows: torch.Tensor) -> torch.Tensor:
        """The proxy's patch features of the windows: at the windows' own resolution (floor grid), as ProxyCLIP
        feeds DINO; SAM at its native input size (1024, bilinear), as ProxyCLIP does."""
        assert self.proxy is not None
        mean = torch.tensor(self.encoder.info.mean, device=windows.device).view(1, 3, 1, 1)
        std = torch.tensor(self.encoder.info.std, device=windows.device).view(1, 3, 1, 1)
        windows = windows.float() * std + mean  # back to [0, 1] (ProxyCLIP un-normalises CLIP's input the same way)
        if self.proxy.info.family == "sam":
            x = F.interpolate(windows, tuple(self.proxy.info.image_size), mode="bilinear", align_corners=False)
        else:
            p = int(self.proxy.info.patch_size)
            x = windows[..., : windows.shape[-2] // p * p, : windows.shape[-1] // p * p]
        return self.proxy(self.proxy.normalize(x)).patches

    def _window_logits(self, crops: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Cosine maps ``[B, S, s, t]`` of same-size windows ``[B, 3, s, t]``: patch grid, upsampled to the window."""
        size = tuple(crops.shape[-2:])
        pad = pad_to_multiple(*size, self.pad_multiple) if self.pad_multiple else (0, 0, 0, 0)
        if any(pad):
            crops = F.pad(crops, pad)  # zeros in normalised space, as ProxyCLIP
        emb = self._dense(crops)
        cos = torch.einsum("bhwd,sd->bshw", emb, weights.to(emb.device).float())
        cos = F.interpolate(cos, tuple(crops.shape[-2:]), mode="bilinear", align_corners=False)
        if any(pad):
            left, _, top, _ = pad
            cos = cos[..., top : top + size[0], left : left + size[1]]
        return cos

    @torch.inference_mode()
    def text_logits(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every text, ``[S, h, w]``, over the model input ``x`` (:meth:`prepare`'s output):
        sliding windows averaged, or the whole image (``inference``)."""
        _, h, w = x.shape
        if self.inference == "whole":
            return self._window_logits(x[None], weights)[0].cpu()
        boxes = window_grid((h, w), self.window, self.stride)
        out = torch.zeros(len(weights), h, w)
        count = torch.zeros(1, h, w)
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i : i + self.batch_size]
            crops = torch.stack([x[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk])
            for (y0, x0, y1, x1), lg in zip(chunk, self._window_logits(crops, weights).cpu(), strict=True):
                out[:, y0:y1, x0:x1] += lg
                count[:, y0:y1, x0:x1] += 1
        return out / count

    @torch.inference_mode()
    def scores(self, pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Cosine maps ``[S, H, W]`` at the original size of ``pixels`` (uint8 ``[3, H, W]``): rescale, slide or
        whole-image logits, resize back, and PAMR when ``refine`` includes it."""
        size = tuple(pixels.shape[-2:])
        x = self.prepare(pixels)
        if self.method is not None:
            cos = self.method.scores(self, pixels, x, weights, self.method_options)
        else:
            cos = to_size(self.text_logits(x, weights), size)
        if self.use_pamr:
            with single_thread():  # the guide's rounding must not depend on the thread count (see single_thread)
                guide = to_size(x, size)
            cos = pamr(guide, cos, iterations=self.pamr_steps, dilations=self.pamr_dilations)
        return cos

    def _run(
        self,
        images: list[Any],
        labels: Sequence[str] | None = None,
        *,
        background: bool | str | Sequence[str] | None = None,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        prob_thresh: float | None = None,
        cos_thresh: float | None = None,
        region_masks: Sequence[Any] | None = None,
    ) -> list[SegResult]:
        from ..data.images import to_uint8_chw

        from_preset = labels is None and self.preset is not None
        if labels is None:
            if self.preset is None:
                raise ValueError("zero-shot-seg needs labels=[...] (class names; 'a; b' gives synonyms)")
            labels = list(self.preset.labels)
            background = list(self.preset.background) if background is None and self.preset.background else background
        background = False if background is None else background
        p_th = self.prob_thresh if prob_thresh is None else _unit_range("prob_thresh", prob_thresh, 0.0, 1.0)
        c_th = self.cos_thresh if cos_thresh is None else _unit_range("cos_thresh", cos_thresh, -1.0, 1.0)
        by_threshold = p_th > 0 or c_th is not None
        if background is True:
            bg_names = [] if by_threshold else [BACKGROUND]
        elif isinstance(background, str):
            bg_names = [background]
        else:
            bg_names = list(background) if background else []
        if not all(isinstance(b, str) and b.strip() for b in bg_names):
            raise ValueError(f"background names must be non-empty strings, got {background!r}")
        # A preset's own class lists are taken as the reference lists them, even where a background word is also a
        # class (COCO-Object's "bed"): the reference embeds both, and so do we.
        names, texts = _parse_labels(labels, synonyms, check_shared=not from_preset)
        use_bg = bool(background) or by_threshold
        if use_bg and any(" ".join(n.lower().split()) == BACKGROUND for n in names):
            raise ValueError("'background' is a reserved label when background is on; drop it from labels")
        if bg_names and not from_preset:
            _check_shared_texts([BACKGROUND, *names], [bg_names, *texts])
        all_texts = ([bg_names] if bg_names else []) + texts
        weights, owner = self.text_weights(all_texts)
        out_labels = ([BACKGROUND] if use_bg else []) + names
        proto = dict(self.protocol, background=bg_names or use_bg, prob_thresh=p_th, cos_thresh=c_th)
        if region_masks is not None:
            if self.method is None:
                raise ValueError(
                    f"region_masks are read by the methods {sorted(seg_methods())}, not mode={self.mode!r}"
                )
            if len(region_masks) != len(images):
                raise ValueError(f"region_masks: {len(region_masks)} masks for {len(images)} images")
        results = []
        for i, img in enumerate(images):
            pixels = to_uint8_chw(img, name=f"images[{i}]")
            if region_masks is not None:  # per image: int [H, W] region ids (0 = not in any region), e.g. SAM's
                mask = torch.as_tensor(np.asarray(region_masks[i]))
                if tuple(mask.shape) != tuple(pixels.shape[-2:]):
                    raise ValueError(f"region_masks[{i}] is {tuple(mask.shape)}, images[{i}] is "
                                     f"{tuple(pixels.shape[-2:])}")  # fmt: skip
                self._region_mask = mask.long()
            else:
                self._region_mask = None
            cos = self.scores(pixels, weights)  # [S, H, W]
            probs = class_probs(cos, owner, len(all_texts), self.logit_scale)
            if use_bg and not bg_names:  # background only by threshold: a row for it that never wins
                probs = torch.cat([torch.zeros_like(probs[:1]), probs])
            label_map, probs = classify(probs, prob_thresh=p_th, area_thresh=self.area_thresh,
                                        background=0)  # fmt: skip
            if c_th is not None:
                first = len(all_texts) - len(names)
                best_cos = cos[(owner >= first).nonzero().flatten()].max(0).values
                label_map[best_cos < c_th] = 0
            if self.method is not None and self.method.refine is not None:
                label_map, probs = self.method.refine(self, pixels, label_map, probs, self.method_options)
            if self.sam is not None:
                hard = probs.clone()  # the thresholded map as scores: background where a threshold put it
                if use_bg:
                    dropped = (label_map == 0) & (probs.argmax(0) != 0)
                    hard[:, dropped] = 0
                    hard[0, dropped] = 1
                probs = self._sam_refine(pixels, hard, 1 if use_bg else 0)
                label_map = probs.argmax(0)
            conf = probs.gather(0, label_map[None])[0]
            scores = torch.zeros(len(out_labels))
            for k in range(len(out_labels)):
                sel = label_map == k
                if sel.any():
                    scores[k] = conf[sel].mean()
            results.append(
                SegResult(label_map=label_map, labels=out_labels, scores=scores, probs=probs, protocol=proto)
            )
        return results

    @torch.inference_mode()
    def _sam_refine(self, pixels: torch.Tensor, probs: torch.Tensor, first: int) -> torch.Tensor:
        """Snap class scores ``[K, h, w]`` (inference resolution) to SAM masks; rows before ``first`` are
        background and never prompt SAM."""
        h, w = probs.shape[-2:]
        if self.sam_mode == "auto":
            masks = self.sam.generate(pixels, points_per_side=self.sam_points_per_side, **self.sam_options).masks
            owners = None
        else:
            hard = probs.argmax(0)
            sy, sx = pixels.shape[-2] / h, pixels.shape[-1] / w
            boxes, owners = [], []
            for k in range(first, probs.shape[0]):
                ys, xs = torch.nonzero(hard == k, as_tuple=True)
                if len(ys):
                    boxes.append(
                        [float(xs.min()) * sx, float(ys.min()) * sy, float(xs.max() + 1) * sx, float(ys.max() + 1) * sy]
                    )
                    owners.append(k)
            if not boxes:
                return probs
            masks = self.sam(pixels, boxes=boxes).masks
        if len(masks) == 0:
            return probs
        small = F.interpolate(masks[:, None].float(), (h, w), mode="nearest")[:, 0] > 0.5
        out = probs.clone()
        order = torch.argsort(small.flatten(1).sum(1), descending=True)  # big first, so small masks win overlaps
        for i in order.tolist():
            m = small[i]
            if not m.any():
                continue
            mean = probs[:, m].mean(1)
            k = int(mean.argmax()) if owners is None else owners[i]  # auto: the label dominating the mask
            out[:, m] = 0
            out[k, m] = 1.0
        return out


__all__ = ["DENSE_MODES", "SegResult", "ZeroShotSegPipeline", "pamr", "window_grid"]
