"""``pipeline("mask-generation")``: SAM masks from point / box / mask prompts, or automatic masks from a point grid.

Works with every model of the ``sam`` family — SAM 1, SAM 2 / 2.1 and EdgeTAM — through the promptable-encoder
interface (:class:`visionfm.foundation.sam.PromptableEncoder`): the model-specific steps (preprocessing, the image
embedding, the decoder call, upsampling low-resolution masks to the original image) live on the encoder, so the
steps here are the same for all of them.

``sam(image, points=[[x, y]], point_labels=[1])`` or ``sam(image, boxes=[[x0, y0, x1, y1]])``; coordinates are
pixels of the original image (x right, y down), boxes xyxy. Each row of ``points``/``boxes`` is one prompt
and gives one mask. A list of images gets the same prompts on every image: the image encoder runs once per
``batch_size`` images and the mask decoder once for all of their prompts. Image embeddings are cached (keyed by
the image's pixels), so prompting the same image again skips the encoder, as in segment-anything's ``set_image`` /
``predict``. Without prompts, ``sam(image)`` generates masks for the whole image
(:meth:`MaskGenerationPipeline.generate`), with the model's own defaults (SAM 1: transformers' pipeline;
SAM 2 / EdgeTAM: ``SAM2AutomaticMaskGenerator``'s).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.masks import mask_to_rle, masks_to_boxes
from ..foundation.encoder import Encoder
from ..foundation.sam import ImageEmbedding, PromptableEncoder
from .base import Pipeline, register_pipeline

logger = logging.getLogger(__name__)


@dataclass
class MaskResult:
    """Masks for one image.

    Attributes:
        masks: bool ``[N, H, W]`` at the original image size, one per prompt.
        scores: ``[N]`` the decoder's predicted IoU of each mask.
        boxes: float ``[N, 4]`` xyxy pixel box of each mask (zeros for an empty mask).
        logits: float ``[N, 256, 256]`` (4× the embedding grid) the decoder's low-resolution mask logits (prompted masks only; ``None``
            for automatic masks). Pass them back as ``masks=`` to refine a prompt, as in segment-anything.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.masks.shape[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: masks as COCO uncompressed RLE, scores and xyxy boxes as lists."""
        return {
            "masks": [mask_to_rle(m.cpu().numpy()) for m in self.masks],
            "scores": [float(s) for s in self.scores],
            "boxes": [[float(v) for v in b] for b in self.boxes],
        }

    def overlay(self, image: Any, alpha: float = 0.5) -> Any:
        """The image with each mask tinted in its own colour and its box outlined (a PIL image)."""
        from PIL import Image, ImageDraw

        from ..data.images import to_uint8_chw

        base = to_uint8_chw(image).permute(1, 2, 0).numpy().astype(np.float32)
        rng = np.random.default_rng(0)
        for m in self.masks.cpu().numpy():
            colour = rng.integers(40, 256, 3).astype(np.float32)
            base[m] = (1 - alpha) * base[m] + alpha * colour
        out = Image.fromarray(base.round().clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        for b in self.boxes.tolist():
            if b[2] > b[0]:
                draw.rectangle(b, outline=(255, 255, 255))
        return out


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score of mask logits ``[N, H, W]``: IoU of the masks thresholded at
    ``threshold + offset`` and ``threshold - offset`` (``[N]``, in [0, 1])."""
    inter = (logits > threshold + offset).sum((-1, -2), dtype=torch.int32)
    union = (logits > threshold - offset).sum((-1, -2), dtype=torch.int32)
    return inter / union.clamp(min=1)


def point_grid(n_per_side: int) -> torch.Tensor:
    """``[n², 2]`` (x, y) points in ``[0, 1]²``, cell centres of an ``n × n`` grid, x fastest (SAM's order)."""
    off = 1.0 / (2 * n_per_side)
    axis = torch.linspace(off, 1 - off, n_per_side)
    return torch.stack([axis[None, :].expand(n_per_side, -1), axis[:, None].expand(-1, n_per_side)], -1).reshape(-1, 2)


def crop_boxes(
    size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """SAM's multi-crop layout: ``[(layer, (x0, y0, x1, y1)), ...]`` for an image of ``size = (H, W)``.

    Layer 0 is the whole image; layer ``i >= 1`` has ``2**i × 2**i`` crops that overlap by
    ``overlap_ratio * short_side * 2 / 2**i`` pixels (the layout of segment-anything and transformers).
    """
    H, W = size
    out = [(0, (0, 0, W, H))]
    short = min(H, W)
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + W) / n))
        ch = int(math.ceil((overlap * (n - 1) + H) / n))
        for x0 in (int((cw - overlap) * i) for i in range(n)):
            for y0 in (int((ch - overlap) * j) for j in range(n)):
                out.append((layer, (x0, y0, min(x0 + cw, W), min(y0 + ch, H))))
    return out


def _check_unit(name: str, value: Any) -> float:
    """A threshold in [0, 1] (as SAM's), or a ValueError naming it."""
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _index(i: int, j: int | None) -> str:
    return f"[{i}]" if j is None else f"[{i}][{j}]"


def _check_points(pts: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], nested: bool) -> None:
    """Points ``[N, P, 2]`` (x, y) in original pixels: finite, and inside the ``(H, W)`` image (its border
    included) unless their label is negative (SAM's padding / not-a-point); errors name the point by index."""
    H, W = size
    for i, j in torch.nonzero(~torch.isfinite(pts).all(-1)).tolist():
        x, y = pts[i, j].tolist()
        raise ValueError(f"points{_index(i, j if nested else None)} = ({x}, {y}) is not finite")
    x, y = pts[..., 0], pts[..., 1]
    outside = ((x < 0) | (x > W) | (y < 0) | (y > H)) & (labels >= 0)
    for i, j in torch.nonzero(outside).tolist():
        px, py = pts[i, j].tolist()
        raise ValueError(
            f"points{_index(i, j if nested else None)} = ({px}, {py}) is outside the {W} x {H} image "
            f"(points are pixel (x, y) with 0 <= x <= {W}, 0 <= y <= {H})"
        )


def _check_boxes(bx: torch.Tensor) -> None:
    """Boxes ``[N, 4]`` xyxy: finite and not inverted; errors name the box by index."""
    for i, b in enumerate(bx.tolist()):
        if not all(math.isfinite(v) for v in b):
            raise ValueError(f"boxes[{i}] = {b} is not finite")
        if b[2] < b[0] or b[3] < b[1]:
            which = " and ".join(w for w, bad in (("x1 < x0", b[2] < b[0]), ("y1 < y0", b[3] < b[1])) if bad)
            raise ValueError(
                f"boxes[{i}] = {b} is inverted ({which}); boxes are [x0, y0, x1, y1] with x0 <= x1, y0 <= y1"
            )


def _near_crop_edge(boxes: torch.Tensor, crop: tuple[int, int, int, int], size: tuple[int, int], atol: float = 20.0):
    """``[N]`` bool: boxes (crop pixels) touching the crop's border where that border is not the image's."""
    x0, y0 = crop[0], crop[1]
    b = boxes.float() + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    crop_t = torch.tensor(crop, dtype=torch.float32)
    img_t = torch.tensor([0, 0, size[0], size[1]], dtype=torch.float32)
    near_crop = (b - crop_t).abs() <= atol
    near_img = (b - img_t).abs() <= atol
    return (near_crop & ~near_img).any(dim=1)


_CROP_NMS = ("global", "per_crop")


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _rank_nms(boxes: torch.Tensor, order: torch.Tensor, thresh: float) -> torch.Tensor:
    """Box NMS where ``order`` (indices, best first) ranks the boxes: the kept indices, best first."""
    from torchvision.ops import nms

    rank = torch.empty(len(order), dtype=torch.float32)
    rank[order] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return nms(boxes.float(), rank, thresh)


@dataclass
class _Prompts:
    """One call's prompts, parsed and checked (original-image pixels), shared by every image of the batch."""

    points: torch.Tensor | None = None  # [N, P, 2]
    labels: torch.Tensor | None = None  # [N, P]
    nested: bool = False  # points were given as [N, P, 2]
    boxes: torch.Tensor | None = None  # [N, 4]
    masks: Any = None  # as given; resolved per image
    n: int | None = None


@register_pipeline("mask-generation")
class MaskGenerationPipeline(Pipeline):
    """Promptable masks from any ``sam``-family encoder (SAM 1, SAM 2 / 2.1, EdgeTAM). See the module docstring for
    the prompt format.

    Args:
        encoder: a :class:`~visionfm.foundation.sam.PromptableEncoder` (``load_encoder`` of a SAM checkpoint).
        batch_size: images per image-encoder pass (and per mask-decoder call for prompted masks).
        cache_size: image embeddings kept (most recently used), keyed by the image's pixels.
    """

    default_model = "sam-vit-base"

    def __init__(self, encoder: Encoder, *, batch_size: int = 32, cache_size: int = 8) -> None:
        super().__init__(encoder, batch_size=batch_size)
        if encoder.info.family != "sam" or not isinstance(encoder, PromptableEncoder):
            raise TypeError(
                f"mask-generation needs a SAM encoder (SAM, SAM 2 / 2.1, EdgeTAM), got family {encoder.info.family!r} "
                f"({type(encoder).__name__})"
            )
        self.encoder: PromptableEncoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self.encoder_calls = 0  # how many images went through the image encoder (the cache saves the rest)

    # -- image embeddings --------------------------------------------------------------------------
    def embed(self, image: Any) -> ImageEmbedding:
        """One image's :class:`~visionfm.foundation.sam.ImageEmbedding` (decoder inputs, original ``(H, W)``,
        ``(h, w)`` inside the model's input frame), cached by its pixels."""
        return self.embed_batch([image])[0]

    def embed_batch(self, images: list[Any]) -> list[ImageEmbedding]:
        """Embeddings of several images: cached ones are reused, the others go through the image encoder together,
        ``batch_size`` images per pass; all end up in the cache (its most recent ``cache_size``)."""
        from ..data.images import to_uint8_chw

        pixels = [to_uint8_chw(im) for im in images]
        keys = [hashlib.blake2b(p.numpy().tobytes(), digest_size=16).hexdigest() + str(tuple(p.shape)) for p in pixels]
        found: dict[str, ImageEmbedding] = {}
        for k in keys:
            if k in self._cache:
                self._cache.move_to_end(k)
                found[k] = self._cache[k]
        todo: dict[str, int] = {}  # key -> index of its first image, each uncached image once
        for i, k in enumerate(keys):
            if k not in found and k not in todo:
                todo[k] = i
        items = list(todo.items())
        for part in _chunks(len(items), self.batch_size):
            chunk = [items[j] for j in part]
            for (k, _), emb in zip(chunk, self.encoder.embed_images([pixels[i] for _, i in chunk]), strict=True):
                found[k] = emb
            self.encoder_calls += len(chunk)
        for k in dict.fromkeys(keys):
            self._cache[k] = found[k]
            self._cache.move_to_end(k)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return [found[k] for k in keys]

    # -- prompting -------------------------------------------------------------------------------
    def _run(
        self,
        images: list[Any],
        *,
        points: Any = None,
        point_labels: Any = None,
        boxes: Any = None,
        masks: Any = None,
        multimask_output: bool = False,
        mask_threshold: float = 0.0,
        **auto: Any,
    ) -> list[MaskResult]:
        from ..data.images import to_uint8_chw

        images = [to_uint8_chw(img, name=f"images[{i}]") for i, img in enumerate(images)]  # a bad one is named
        if points is None and boxes is None and masks is None:
            out: list[MaskResult] = []
            for part in _chunks(len(images), self.batch_size):  # whole images: one encoder pass per chunk
                embs = self.embed_batch([images[i] for i in part])
                out += [self._generate(images[i], emb, **auto) for i, emb in zip(part, embs, strict=True)]
            return out
        if auto:
            raise ValueError(f"options {sorted(auto)} apply to automatic mask generation (no points/boxes/masks)")
        prompts = self._parse_prompts(points, point_labels, boxes, masks)
        for i, img in enumerate(images):  # every check before the first encoder run: a bad prompt costs none
            try:
                self._check_prompts(prompts, tuple(img.shape[-2:]))
            except ValueError as e:
                if len(images) == 1:
                    raise
                raise ValueError(f"images[{i}] ({img.shape[-1]} x {img.shape[-2]}): {e}") from None
        out = []
        for part in _chunks(len(images), self.batch_size):
            out += self._prompt_batch(self.embed_batch([images[i] for i in part]), prompts, multimask_output,
                                      mask_threshold)  # fmt: skip
        return out

    @staticmethod
    def _parse_prompts(points: Any, point_labels: Any, boxes: Any, masks: Any) -> _Prompts:
        """Shapes and values that do not depend on the image: points ``[N, P, 2]`` with labels ``[N, P]``, boxes
        ``[N, 4]`` (finite, not inverted), one of each per prompt."""
        p = _Prompts(masks=masks)
        if points is not None:
            pts = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32)
            p.nested = pts.ndim == 3
            if pts.ndim == 2:
                pts = pts[:, None, :]  # [N, 1, 2]: one point per prompt
            if pts.ndim != 3 or pts.shape[-1] != 2:
                raise ValueError(f"points must be [N, 2] or [N, P, 2] pixel (x, y), got shape {tuple(pts.shape)}")
            labels = (
                torch.ones(pts.shape[:2], dtype=torch.long)
                if point_labels is None
                else torch.as_tensor(np.asarray(point_labels), dtype=torch.long)
            )
            if labels.ndim == 1 and pts.shape[1] == 1:
                labels = labels[:, None]
            if tuple(labels.shape) != tuple(pts.shape[:2]):
                raise ValueError(
                    f"point_labels shape {tuple(labels.shape)} does not match points {tuple(pts.shape[:2])}"
                )
            p.points, p.labels, p.n = pts, labels, pts.shape[0]
        if boxes is not None:
            bx = torch.as_tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32).reshape(-1, 4)
            if p.n is not None and bx.shape[0] != p.n:
                raise ValueError(f"{bx.shape[0]} boxes and {p.n} point prompts: give one box per prompt")
            _check_boxes(bx)
            p.boxes, p.n = bx, bx.shape[0]
        return p

    def _check_prompts(self, p: _Prompts, size: tuple[int, int]) -> None:
        """The checks that depend on the image's ``(H, W)``: points inside it, mask prompts of its size."""
        if p.points is not None:
            _check_points(p.points, p.labels, size, p.nested)  # type: ignore[arg-type]
        if p.masks is not None:
            m = self._mask_array(p.masks)
            self._mask_kind(m, size)
            if p.n is not None and m.shape[0] != p.n:
                raise ValueError(f"{m.shape[0]} mask prompts and {p.n} point/box prompts: give one mask per prompt")

    def _prompt_batch(
        self, embs: list[ImageEmbedding], p: _Prompts, multimask: bool, threshold: float
    ) -> list[MaskResult]:
        """All prompts on all images of ``embs`` in one mask-decoder call; one ``MaskResult`` per image."""
        enc = self.encoder
        dev = embs[0].tensors[0].device
        kw: dict[str, torch.Tensor] = {}
        if p.points is not None:
            kw["points"] = torch.stack([enc.input_coords(p.points, e.original, e.resized) for e in embs]).to(dev)
            kw["labels"] = p.labels[None].expand(len(embs), -1, -1).to(dev)  # type: ignore[index]
        if p.boxes is not None:
            kw["boxes"] = torch.stack(
                [enc.input_coords(p.boxes.reshape(-1, 2, 2), e.original, e.resized).reshape(-1, 4) for e in embs]
            ).to(dev)
        tensors = [torch.cat([e.tensors[k] for e in embs]) for k in range(len(embs[0].tensors))]
        B = len(embs)
        if p.masks is not None:
            dense = torch.cat([self.mask_prompt(p.masks, e.original, e.resized) for e in embs])  # [B * N, 1, s, s]
            n = dense.shape[0] // B
            # the decoders add a mask prompt to the image embedding, once per image: give each (image, prompt) its
            # own copy of the embedding so B images x N prompts with N masks still run as one batch
            kw = {k: v.flatten(0, 1)[:, None] for k, v in kw.items()}  # [B, N, ...] -> [B * N, 1, ...]
            tensors = [t.repeat_interleave(n, 0) for t in tensors]
            low, iou = enc.decode_masks(tensors, masks=dense.to(dev, enc.dtype), multimask=multimask, **kw)
            low, iou = low.reshape(B, n, *low.shape[2:]), iou.reshape(B, n, -1)
        else:
            low, iou = enc.decode_masks(tensors, multimask=multimask, **kw)  # [B, N, M, s, s], [B, N, M]
        out = []
        for b, e in enumerate(embs):
            lo, sc = low[b], iou[b]
            n = lo.shape[0]
            if multimask:  # keep each prompt's best of the three candidates
                best = sc.argmax(-1)
                lo, sc = lo[torch.arange(n), best][:, None], sc[torch.arange(n), best][:, None]
            m = (enc.upscale_masks(lo[:, 0], e.original, e.resized) > threshold).cpu()
            out.append(
                MaskResult(
                    masks=m,
                    scores=sc[:, 0].cpu(),
                    boxes=torch.from_numpy(masks_to_boxes(m.numpy())),
                    logits=lo[:, 0].cpu(),
                )
            )
        return out

    # -- mask prompts ------------------------------------------------------------------------------
    @staticmethod
    def _mask_array(masks: Any) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks))
        return m[None] if m.ndim == 2 else m

    def _mask_kind(self, m: torch.Tensor, original: tuple[int, int]) -> str:
        """``"low_res"`` (the decoder's logits, passed through) or ``"full"`` (the image's size), or a ValueError."""
        low = self.encoder.low_res_size
        if m.ndim != 3:
            raise ValueError(f"masks must be [N, {low}, {low}] low-res logits or [N, H, W] masks, got {tuple(m.shape)}")
        if tuple(m.shape[1:]) == (low, low) and m.dtype != torch.bool and tuple(original) != (low, low):
            return "low_res"
        if tuple(m.shape[1:]) != tuple(original):
            raise ValueError(
                f"masks of shape {tuple(m.shape)} fit neither the image {tuple(original)} nor the "
                f"low-res logits [N, {low}, {low}]"
            )
        return "full"

    def mask_prompt(self, masks: Any, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Mask prompts as the prompt encoder takes them: ``[N, 1, s, s]`` float logits (``s`` = 256 for every real
        SAM, SAM 2 and EdgeTAM).

        Args:
            masks: either low-resolution logits ``[N, s, s]`` (``MaskResult.logits`` of an earlier call, passed
                through unchanged, as segment-anything's ``mask_input``), or masks at the original image size
                ``[N, H, W]`` (bool, or float logits), which the encoder maps into its input frame
                (:meth:`~visionfm.foundation.sam.PromptableEncoder.mask_prompt`); bool masks become logits ±10.
            original: the image's ``(H, W)``.
            resized: its size inside the model input frame.
        """
        m = self._mask_array(masks)
        if self._mask_kind(m, original) == "low_res":
            return m.float()[:, None]
        return self.encoder.mask_prompt(m, original, resized)

    # -- automatic masks ---------------------------------------------------------------------------
    def generate(
        self,
        image: Any,
        *,
        points_per_side: int | None = None,
        points_per_batch: int | None = None,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float | None = None,
        mask_threshold: float | None = None,
        nms_thresh: float | None = None,
        crops_n_layers: int | None = None,
        crop_overlap_ratio: float | None = None,
        crop_n_points_downscale_factor: int | None = None,
        crop_nms: str | None = None,
        crop_nms_thresh: float | None = None,
    ) -> MaskResult:
        """Automatic masks: prompt a ``points_per_side``² grid, keep confident and stable masks, then NMS.

        An option left at ``None`` takes the model's default (``encoder.auto_mask_defaults``): for SAM 1 those of
        transformers' ``mask-generation`` pipeline (IoU 0.88, one NMS over all crops), for SAM 2 / 2.1 and EdgeTAM
        those of ``SAM2AutomaticMaskGenerator`` (IoU 0.8, NMS per crop then across crops preferring smaller crops);
        both: 32 points per side, 64 per batch, stability 0.95 (offset 1), NMS 0.7, no crop layers.

        The grid, crops and thresholds are those of transformers' pipeline and segment-anything (whose
        ``points_per_crop`` / ``crop_n_layers`` are our ``points_per_side`` / ``crops_n_layers``), but masks
        failing the IoU threshold are dropped before the costly upsampling to full resolution, and image
        embeddings come from the cache.

        Args:
            image: one image (anything :func:`visionfm.data.images.to_uint8_chw` reads).
            points_per_side: grid points per side of the whole image (layer 0).
            points_per_batch: prompts per mask-decoder call.
            pred_iou_thresh: keep masks whose predicted IoU is above this (0 keeps all); in [0, 1].
            stability_score_thresh: keep masks whose :func:`stability_score` is above this (0 keeps all); in
                [0, 1].
            stability_score_offset: logit offset of the stability score.
            mask_threshold: logit threshold that binarises masks.
            nms_thresh: box IoU above which the lower-scored mask is dropped; in [0, 1].
            crops_n_layers: extra crop layers; layer ``i`` (1-based) cuts the image into ``2**i × 2**i``
                overlapping crops, each encoded on its own, so small objects get more pixels.
            crop_overlap_ratio: overlap of neighbouring layer-1 crops as a fraction of the short side.
            crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` points per side.
            crop_nms: ``"global"``: one NMS (``nms_thresh``) over the masks of all crops by predicted IoU
                (transformers' pipeline); ``"per_crop"``: NMS (``nms_thresh``) inside each crop, then across crops
                (``crop_nms_thresh``) keeping masks from smaller crops first (segment-anything, SAM 2).
            crop_nms_thresh: box IoU of the across-crop NMS of ``crop_nms="per_crop"``; in [0, 1].

        Returns:
            ``MaskResult`` sorted by predicted IoU, best first; boxes xyxy in original pixels.
        """
        from ..data.images import to_uint8_chw

        opts = dict(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            mask_threshold=mask_threshold,
            nms_thresh=nms_thresh,
            crops_n_layers=crops_n_layers,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            crop_nms=crop_nms,
            crop_nms_thresh=crop_nms_thresh,
        )
        return self._generate(to_uint8_chw(image), None, **opts)

    def _generate(self, pixels: torch.Tensor, whole: ImageEmbedding | None, **options: Any) -> MaskResult:
        """:meth:`generate` on uint8 ``[3, H, W]`` pixels; ``whole`` is the whole image's embedding if at hand."""
        from torchvision.ops import batched_nms

        opts = self.encoder.auto_mask_defaults.options()
        unknown = sorted(set(options) - set(opts))
        if unknown:
            raise TypeError(f"unknown automatic mask-generation options {unknown}; valid: {sorted(opts)}")
        opts.update({k: v for k, v in options.items() if v is not None})
        if opts["points_per_side"] < 1 or opts["points_per_batch"] < 1:
            raise ValueError(
                f"points_per_side and points_per_batch must be >= 1, got {opts['points_per_side']}, "
                f"{opts['points_per_batch']}"
            )
        if opts["crops_n_layers"] < 0 or opts["crop_n_points_downscale_factor"] < 1:
            raise ValueError("crops_n_layers must be >= 0 and crop_n_points_downscale_factor >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "nms_thresh", "crop_nms_thresh"):
            opts[name] = _check_unit(name, opts[name])
        if opts["crop_nms"] not in _CROP_NMS:
            raise ValueError(f"crop_nms must be one of {_CROP_NMS}, got {opts['crop_nms']!r}")
        H, W = pixels.shape[-2:]
        kept_masks, kept_scores, kept_boxes, kept_areas = [], [], [], []
        layout = crop_boxes((H, W), opts["crops_n_layers"], opts["crop_overlap_ratio"])
        for layer, (x0, y0, x1, y1) in layout:
            n_side = int(opts["points_per_side"] / opts["crop_n_points_downscale_factor"] ** layer)
            if n_side < 1:
                continue
            full = (x0, y0, x1, y1) == (0, 0, W, H)
            if full and whole is not None:
                emb = whole
            else:
                emb = self.embed(pixels if full else pixels[:, y0:y1, x0:x1])
            masks, scores, boxes = self._crop_masks(emb, n_side, opts)
            if len(masks) == 0:
                continue
            near = _near_crop_edge(boxes, (x0, y0, x1, y1), (W, H))
            masks, scores, boxes = masks[~near], scores[~near], boxes[~near]
            if opts["crop_nms"] == "per_crop" and len(boxes):
                keep = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), opts["nms_thresh"])
                masks, scores, boxes = masks[keep], scores[keep], boxes[keep]
            if not full:
                masks = F.pad(masks, (x0, W - x1, y0, H - y1))
                boxes = boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
            kept_masks.append(masks)
            kept_scores.append(scores)
            kept_boxes.append(boxes)
            kept_areas.append(torch.full((len(masks),), float((x1 - x0) * (y1 - y0))))
        if not kept_masks:
            empty = torch.zeros(0, H, W, dtype=torch.bool)
            return MaskResult(masks=empty, scores=torch.zeros(0), boxes=torch.zeros(0, 4))
        masks, scores, boxes = torch.cat(kept_masks), torch.cat(kept_scores), torch.cat(kept_boxes)
        if opts["crop_nms"] == "global":
            order = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), opts["nms_thresh"])  # by score
        else:
            if len(layout) > 1:  # across crops: masks from smaller crops first, then by predicted IoU
                areas = torch.cat(kept_areas)
                by_score = torch.argsort(scores, descending=True, stable=True)
                rank = by_score[torch.argsort(areas[by_score], stable=True)]
                keep = _rank_nms(boxes, rank, opts["crop_nms_thresh"])
            else:
                keep = torch.arange(len(scores))
            order = keep[torch.argsort(scores[keep], descending=True, stable=True)]
        return MaskResult(masks=masks[order], scores=scores[order], boxes=boxes[order])

    def _crop_masks(
        self, emb: ImageEmbedding, n_side: int, opts: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks of one (cropped) image from an ``n_side``² point grid: bool ``[N, h, w]`` at the crop's size,
        predicted IoUs ``[N]`` and xyxy boxes ``[N, 4]`` in crop pixels, after the IoU and stability filters."""
        enc = self.encoder
        (H, W), dev = emb.original, emb.tensors[0].device
        pts = enc.input_coords(point_grid(n_side) * torch.tensor([W, H]), emb.original, emb.resized)
        pred_iou, stab = opts["pred_iou_thresh"], opts["stability_score_thresh"]
        out_m, out_s = [], []
        for i in range(0, len(pts), opts["points_per_batch"]):
            chunk = pts[i : i + opts["points_per_batch"]]
            n = len(chunk)
            low, iou = enc.decode_masks(
                emb.tensors,
                points=chunk[None, :, None, :].to(dev),
                labels=torch.ones(1, n, 1, dtype=torch.long, device=dev),
                multimask=True,
            )
            low, iou = low[0].flatten(0, 1), iou[0].flatten()  # [n * 3, s, s], [n * 3]
            keep = iou > pred_iou if pred_iou > 0 else torch.ones_like(iou, dtype=torch.bool)
            if not keep.any():
                continue
            low, iou = low[keep], iou[keep]
            logits = enc.upscale_masks(low, emb.original, emb.resized)
            if stab > 0:
                stable = stability_score(logits, opts["mask_threshold"], opts["stability_score_offset"]) > stab
                logits, iou = logits[stable], iou[stable]
            out_m.append((logits > opts["mask_threshold"]).cpu())
            out_s.append(iou.cpu())
        if not out_m:
            return torch.zeros(0, H, W, dtype=torch.bool), torch.zeros(0), torch.zeros(0, 4)
        masks = torch.cat(out_m)
        return masks, torch.cat(out_s), torch.from_numpy(masks_to_boxes(masks.numpy()))
