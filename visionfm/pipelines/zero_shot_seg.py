"""``pipeline("zero-shot-seg")``: training-free open-vocabulary semantic segmentation with dense CLIP.

``seg(image, labels=["cat", "sofa"], background=True)`` returns a :class:`SegResult` whose ``label_map`` gives,
for every pixel of the original image, an index into ``result.labels``. The protocol, as in SCLIP / ClearCLIP /
ProxyCLIP (and recorded in every result):

1. resize the image so its short side is ``short_side`` (aspect kept);
2. slide a square ``window`` over it with ``stride`` (mmseg's layout: the last window is flush with the edge;
   a side shorter than the window is padded); windows go through the encoder ``batch_size`` at a time;
3. per window, dense CLIP patch embeddings (:func:`visionfm.foundation.dense.dense_features` in ``mode``;
   ``mode="proxy"`` takes the attention from a ``proxy`` encoder's patch affinity) are scored against the
   label embeddings (prompt-template ensembles; synonyms per label, the best synonym wins) as
   ``logit_scale * cos``, upsampled bilinearly to the window's pixels and averaged where windows overlap;
4. softmax over labels; with ``background``, pixels whose best probability is under ``prob_thresh``, or whose
   best raw cosine similarity is under ``cos_thresh``, or which an explicit background name wins, become
   background (index 0);
5. optional refinement: ``pamr`` (pixel-adaptive mask refinement from the image's colours) and/or SAM
   (``refine=`` a SAM model): automatic SAM masks each take the label that dominates their dense scores
   (``sam_mode="auto"``), or each label's coarse region becomes a SAM box prompt (``sam_mode="box"``);
6. bilinear upsampling of the class scores to the original size, argmax.
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
from ..foundation.dense import DENSE_MODES, check_mode, dense_features
from ..foundation.encoder import Encoder
from ..foundation.zero_shot import Templates, check_labels, duplicate_groups, text_classifier
from ..foundation.zero_shot import templates_key as _templates_key
from .base import Pipeline, register_pipeline

logger = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass
class SegResult:
    """Semantic segmentation of one image.

    Attributes:
        label_map: int64 ``[H, W]`` at the original image size, indices into ``labels``.
        labels: the class names; ``labels[0] == "background"`` when background was requested.
        scores: float ``[K]`` mean winning probability over each label's pixels (0 for absent labels).
        probs: float ``[K, h, w]`` class probabilities at the inference resolution (short side = ``short_side``).
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


def window_grid(size: tuple[int, int], window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Sliding windows ``(y0, x0, y1, x1)`` over an image of ``size = (H, W)``, mmseg's ``slide`` layout.

    Windows start every ``stride`` pixels; the last one in each direction is moved back to end at the edge; a
    side shorter than ``window`` gets one window covering all of it.
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


def pamr(
    image: torch.Tensor,
    probs: torch.Tensor,
    *,
    iterations: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
) -> torch.Tensor:
    """Pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020).

    Each iteration replaces every pixel's class scores by an affinity-weighted average of its 8 neighbours at
    each dilation; the affinity is a softmax over the neighbourhood of ``-|I(x) - I(y)| / std(I(neigh))``,
    averaged over colour channels, so scores flow along regions of similar colour and stop at edges.

    Args:
        image: float ``[3, h, w]`` (any scale; only differences relative to the local spread matter).
        probs: float ``[K, h, w]`` class scores at the same size.
        iterations: refinement steps.
        dilations: neighbourhood radii in pixels.

    Returns:
        ``[K, h, w]`` refined scores (rows still sum to what they summed to: each step is a convex average).
    """
    if image.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"pamr: image {tuple(image.shape)} and probs {tuple(probs.shape)} differ in size")
    x = image.float()[None]
    neigh = []
    for d in dilations:
        pad = F.pad(x, (d, d, d, d), mode="replicate")
        h, w = x.shape[-2:]
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if dy == 0 and dx == 0:
                    continue
                neigh.append(pad[..., d + dy : d + dy + h, d + dx : d + dx + w])
    nb = torch.stack(neigh, 2)  # [1, 3, P, h, w]
    std = nb.std(2, keepdim=True) + 1e-8
    aff = -((x[:, :, None] - nb).abs() / std).mean(1)  # [1, P, h, w]
    aff = aff.softmax(1)
    p = probs.float()[None]
    offsets = [(dy, dx, d) for d in dilations for dy in (-d, 0, d) for dx in (-d, 0, d) if (dy, dx) != (0, 0)]
    for _ in range(iterations):
        acc = torch.zeros_like(p)
        padded = {d: F.pad(p, (d, d, d, d), mode="replicate") for d in dilations}
        h, w = p.shape[-2:]
        for k, (dy, dx, d) in enumerate(offsets):
            acc += aff[:, k : k + 1] * padded[d][..., d + dy : d + dy + h, d + dx : d + dx + w]
        p = acc
    return p[0]


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
    labels: str | Sequence[str], synonyms: Mapping[str, str | Sequence[str]] | None, name: str = "labels"
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
    _check_shared_texts(names, texts, name)
    return names, texts


@register_pipeline("zero-shot-seg")
class ZeroShotSegPipeline(Pipeline):
    """Open-vocabulary segmentation from a CLIP model, training-free. See the module docstring.

    Args:
        encoder: a CLIP encoder (open_clip ViT/ResNet or transformers CLIP).
        batch_size: windows per forward pass.
        mode: one of :data:`visionfm.foundation.dense.DENSE_MODES`.
        proxy: for ``mode="proxy"``: an encoder or model name (DINOv2 or SAM) whose patch affinity gives the
            attention.
        refine: ``None``, ``"pamr"``, a SAM model name / encoder / mask-generation pipeline, or a list of these.
        sam_mode: ``"auto"`` (SAM automatic masks vote) or ``"box"`` (each label's region becomes a box prompt).
        templates: prompt templates, as for zero-shot classification (default: the 80 ImageNet prompts).
        short_side: the image's short side for inference, a positive integer (default: 1.5 × the model's input
            size).
        window: sliding-window side, a positive multiple of the patch size (default: the model's input size).
        stride: window stride, in [1, window] (default: half the window).
        logit_scale: multiplier of the cosine scores before the softmax (40, as SCLIP/ClearCLIP/ProxyCLIP).
        prob_thresh: pixels whose best label probability is below this become background; in [0, 1].
        cos_thresh: pixels whose best cosine similarity to a label (before ``logit_scale``) is below this become
            background. A softmax over a few labels is confident everywhere, also on background; the raw
            similarity is what drops there (pick the threshold on validation data). In [-1, 1].

    Labels (``labels=`` of a call): one string is one class; ``"sofa; couch"`` gives synonyms. A label of only
    separators, or a text naming two classes (duplicates, a synonym or background name that is also a class;
    compared ignoring case and extra spaces), or a prompt longer than the text context is refused.
        sam_points_per_side: grid of SAM's automatic masks (``sam_mode="auto"``).
        sam_options: more options for SAM's automatic masks (see ``MaskGenerationPipeline.generate``), e.g.
            ``{"pred_iou_thresh": 0.8, "crops_n_layers": 1}``.
    """

    default_model = "clip-vit-b-16"

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 16,
        mode: str = "sclip",
        proxy: str | Encoder | None = None,
        refine: Any = None,
        sam_mode: str = "auto",
        templates: Templates = "imagenet80",
        short_side: int | None = None,
        window: int | None = None,
        stride: int | None = None,
        logit_scale: float = 40.0,
        prob_thresh: float = 0.0,
        cos_thresh: float | None = None,
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
        if hasattr(encoder, "dense_features"):  # a student's dense features come from its CLIP adaptor, no surgery
            mode = "student-adaptor" if mode == "sclip" else mode
            if mode != "student-adaptor":
                raise ValueError(f"a distilled student has no attention modes (got mode={mode!r}); leave mode unset")
        self.mode = mode if mode == "student-adaptor" else check_mode(mode)
        native = encoder.info.image_size[0]
        unit = encoder.info.patch_size
        self.window = native if window is None else _positive_int("window", window)
        self.stride = max(self.window // 2, 1) if stride is None else _positive_int("stride", stride)
        self.short_side = round(1.5 * native) if short_side is None else _positive_int("short_side", short_side)
        if self.window % unit:
            raise ValueError(f"window {self.window} must be a multiple of the model's patch size {unit}")
        if not 0 < self.stride <= self.window:
            raise ValueError(f"stride must be in (0, window={self.window}], got {self.stride}")
        self.logit_scale = float(logit_scale)
        self.prob_thresh = _unit_range("prob_thresh", prob_thresh, 0.0, 1.0)
        self.cos_thresh = None if cos_thresh is None else _unit_range("cos_thresh", cos_thresh, -1.0, 1.0)
        self.templates = templates
        self.proxy = self._load_proxy(proxy) if self.mode == "proxy" else None
        if proxy is not None and self.mode != "proxy":
            raise ValueError(f"proxy= is only used by mode='proxy' (mode is {self.mode!r})")
        if self.mode == "proxy" and self.proxy is None:
            raise ValueError("mode='proxy' needs proxy= (a DINOv2 or SAM model)")
        if sam_mode not in ("auto", "box"):
            raise ValueError(f"sam_mode must be 'auto' or 'box', got {sam_mode!r}")
        self.sam_mode = sam_mode
        self.sam_points_per_side = int(sam_points_per_side)
        self.sam_options = dict(sam_options or {})
        self.use_pamr, self.sam = self._load_refiners(refine)
        self.cache_size = cache_size
        self._cache: OrderedDict[Any, torch.Tensor] = OrderedDict()

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
        if enc.info.family not in ("dinov2", "sam"):
            logger.warning("proxy encoder of family %r: ProxyCLIP uses DINOv2 or SAM", enc.info.family)
        return enc

    def _load_refiners(self, refine: Any) -> tuple[bool, Any]:
        from .mask_generation import MaskGenerationPipeline

        items = refine if isinstance(refine, (list, tuple)) else ([] if refine is None else [refine])
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
        """The settings every result records."""
        return {
            "model": self.encoder.info.name,
            "mode": self.mode,
            "proxy": self.proxy.info.name if self.proxy is not None else None,
            "short_side": self.short_side,
            "window": self.window,
            "stride": self.stride,
            "logit_scale": self.logit_scale,
            "prob_thresh": self.prob_thresh,
            "cos_thresh": self.cos_thresh,
            "templates": self.templates if isinstance(self.templates, str) else list(map(str, self.templates)),
            "refine": (["pamr"] if self.use_pamr else [])
            + ([f"sam-{self.sam_mode}:{self.sam.encoder.info.name}"] if self.sam is not None else []),
        }

    # -- text side --------------------------------------------------------------------------------
    def text_weights(self, texts: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of every synonym ``[S, D]`` and the label index of each ``[S]``, LRU-cached."""
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
    def _dense(self, windows: torch.Tensor) -> torch.Tensor:
        """Unit-norm dense CLIP embeddings ``[B, h, w, D]`` of windows (float ``[B, 3, s, s]`` in [0, 1])."""
        proxy_feats = None
        if self.proxy is not None:
            size = self.proxy.info.image_size
            px = F.interpolate(windows, size, mode="bilinear", antialias=True, align_corners=False)
            proxy_feats = self.proxy(self.proxy.normalize(px)).patches
        if self.mode == "student-adaptor":  # a distilled student: its CLIP adaptor's patch outputs
            emb = self.encoder.dense_features(self.encoder.normalize(windows))
        else:
            emb = dense_features(self.encoder, self.encoder.normalize(windows), self.mode, proxy_features=proxy_feats)
        return F.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def logits(self, image: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """Sliding-window class logits ``[n, h, w]`` of one resized image (float ``[3, h, w]`` in [0, 1])."""
        _, h, w = image.shape
        s = self.window
        boxes = window_grid((h, w), s, self.stride)
        out = torch.zeros(n, h, w)
        count = torch.zeros(1, h, w)
        wts = weights.to(self.encoder.device)
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i : i + self.batch_size]
            crops = torch.stack(
                [F.pad(image[:, y0:y1, x0:x1], (0, s - (x1 - x0), 0, s - (y1 - y0))) for y0, x0, y1, x1 in chunk]
            )
            emb = self._dense(crops)  # [b, gh, gw, D]
            sim = self.logit_scale * torch.einsum("bhwd,sd->bshw", emb, wts.float())
            per_label = torch.full((sim.shape[0], n, *sim.shape[2:]), -torch.inf, device=sim.device)
            per_label = per_label.scatter_reduce(
                1, owner.to(sim.device).view(1, -1, 1, 1).expand_as(sim), sim, reduce="amax"
            )  # best synonym per label
            up = F.interpolate(per_label, (s, s), mode="bilinear", align_corners=False).cpu()
            for (y0, x0, y1, x1), lg in zip(chunk, up):
                out[:, y0:y1, x0:x1] += lg[:, : y1 - y0, : x1 - x0]
                count[:, y0:y1, x0:x1] += 1
        return out / count

    def _resize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[3, H, W]`` -> float ``[3, h, w]`` in [0, 1] with short side ``short_side``."""
        H, W = pixels.shape[-2:]
        scale = self.short_side / min(H, W)
        h, w = max(1, round(H * scale)), max(1, round(W * scale))
        x = pixels[None].float() / 255
        if (h, w) != (H, W):
            x = F.interpolate(x, (h, w), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return x[0]

    def _run(
        self,
        images: list[Any],
        labels: Sequence[str] | None = None,
        *,
        background: bool | str | Sequence[str] = False,
        synonyms: Mapping[str, Sequence[str]] | None = None,
        prob_thresh: float | None = None,
        cos_thresh: float | None = None,
    ) -> list[SegResult]:
        from ..data.images import to_uint8_chw

        if labels is None:
            raise ValueError("zero-shot-seg needs labels=[...] (class names; 'a; b' gives synonyms)")
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
        names, texts = _parse_labels(labels, synonyms)
        use_bg = bool(background) or by_threshold
        if use_bg and any(" ".join(n.lower().split()) == BACKGROUND for n in names):
            raise ValueError("'background' is a reserved label when background is on; drop it from labels")
        if bg_names:
            _check_shared_texts([BACKGROUND, *names], [bg_names, *texts])
        all_texts = ([bg_names] if bg_names else []) + texts
        weights, owner = self.text_weights(all_texts)
        n = len(all_texts)
        out_labels = ([BACKGROUND] if use_bg else []) + names
        proto = dict(self.protocol, background=bg_names or use_bg, prob_thresh=p_th, cos_thresh=c_th)
        results = []
        for i, img in enumerate(images):
            pixels = to_uint8_chw(img, name=f"images[{i}]")
            H, W = pixels.shape[-2:]
            x = self._resize(pixels)
            lg = self.logits(x, weights, owner, n)  # [n, h, w], logit_scale * cos
            probs = lg.softmax(0)
            if use_bg and not bg_names:  # background only by threshold: add a row for it
                probs = torch.cat([torch.zeros_like(probs[:1]), probs])
            if by_threshold:
                first = len(probs) - len(names)
                drop = probs[first:].max(0).values < p_th
                if c_th is not None:
                    drop |= lg[n - len(names) :].max(0).values / self.logit_scale < c_th
                probs[:, drop] = 0
                probs[0, drop] = 1
            if self.use_pamr:
                probs = pamr(x, probs)
            if self.sam is not None:
                probs = self._sam_refine(pixels, probs, 1 if use_bg else 0)
            full = F.interpolate(probs[None], (H, W), mode="bilinear", align_corners=False)[0]
            conf, label_map = full.max(0)
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
