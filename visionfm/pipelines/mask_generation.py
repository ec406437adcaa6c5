"""``pipeline("mask-generation")``: SAM masks from point / box prompts, or automatic masks from a point grid.

``sam(image, points=[[x, y]], point_labels=[1])`` or ``sam(image, boxes=[[x0, y0, x1, y1]])``; coordinates are
pixels of the original image (x right, y down), boxes xyxy. Each row of ``points``/``boxes`` is one prompt
and gives one mask; all prompts of an image run through the mask decoder in one batch. The image
embedding is cached (keyed by the image's pixels), so prompting the same image again skips the encoder,
as in segment-anything's ``set_image`` / ``predict``. Without prompts, ``sam(image)`` generates masks for
the whole image (:meth:`MaskGenerationPipeline.generate`); a list of images works with any ``batch_size``.
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


@register_pipeline("mask-generation")
class MaskGenerationPipeline(Pipeline):
    """Promptable SAM masks. See the module docstring for the prompt format."""

    default_model = "sam-vit-base"

    def __init__(self, encoder: Encoder, *, batch_size: int = 32, cache_size: int = 8) -> None:
        super().__init__(encoder, batch_size=batch_size)
        if encoder.info.family != "sam":
            raise TypeError(f"mask-generation needs a SAM encoder, got family {encoder.info.family!r}")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = OrderedDict()
        self.encoder_calls = 0  # how many images went through the image encoder (the cache saves the rest)

    # -- image embeddings --------------------------------------------------------------------------
    def embed(self, image: Any) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """``(embedding [1, C, h, w], original (H, W), resized (h, w))`` for one image, cached by its pixels."""
        from ..data.images import to_uint8_chw

        pixels = to_uint8_chw(image)
        key = hashlib.blake2b(pixels.numpy().tobytes(), digest_size=16).hexdigest() + str(tuple(pixels.shape))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        x, original, resized = self.encoder.preprocess_with_sizes([pixels])
        emb = self.encoder(x).patches.permute(0, 3, 1, 2).contiguous()
        self.encoder_calls += 1
        entry = (emb, original[0], resized[0])
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

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
            return [self.generate(img, **auto) for img in images]
        if auto:
            raise ValueError(f"options {sorted(auto)} apply to automatic mask generation (no points/boxes/masks)")
        return [
            self._prompt(img, points, point_labels, boxes, masks, multimask_output, mask_threshold) for img in images
        ]

    def generate(
        self,
        image: Any,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        nms_thresh: float = 0.7,
        crops_n_layers: int = 0,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
    ) -> MaskResult:
        """Automatic masks: prompt a ``points_per_side``² grid, keep confident and stable masks, then NMS.

        The same grid, crops, thresholds and order as transformers' ``mask-generation`` pipeline (whose
        ``points_per_crop`` is our ``points_per_side``), but masks failing the IoU threshold are dropped before
        the costly upsampling to full resolution, and image embeddings come from the cache.

        Args:
            image: one image (anything :func:`visionfm.data.images.to_uint8_chw` reads).
            points_per_side: grid points per side of the whole image (layer 0).
            points_per_batch: prompts per mask-decoder call.
            pred_iou_thresh: keep masks whose predicted IoU is above this (0 keeps all); in [0, 1].
            stability_score_thresh: keep masks whose :func:`stability_score` is above this (0 keeps all); in
                [0, 1].
            stability_score_offset: logit offset of the stability score.
            mask_threshold: logit threshold that binarises masks.
            nms_thresh: box IoU above which the lower-scored mask is dropped (across all crops); in [0, 1].
            crops_n_layers: extra crop layers; layer ``i`` (1-based) cuts the image into ``2**i × 2**i``
                overlapping crops, each encoded on its own, so small objects get more pixels.
            crop_overlap_ratio: overlap of neighbouring layer-1 crops as a fraction of the short side.
            crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` points per side.

        Returns:
            ``MaskResult`` sorted by predicted IoU, best first; boxes xyxy in original pixels.
        """
        from torchvision.ops import batched_nms

        from ..data.images import to_uint8_chw

        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError(
                f"points_per_side and points_per_batch must be >= 1, got {points_per_side}, {points_per_batch}"
            )
        if crops_n_layers < 0 or crop_n_points_downscale_factor < 1:
            raise ValueError("crops_n_layers must be >= 0 and crop_n_points_downscale_factor >= 1")
        pred_iou_thresh = _check_unit("pred_iou_thresh", pred_iou_thresh)
        stability_score_thresh = _check_unit("stability_score_thresh", stability_score_thresh)
        nms_thresh = _check_unit("nms_thresh", nms_thresh)
        pixels = to_uint8_chw(image)
        H, W = pixels.shape[-2:]
        kept_masks, kept_scores, kept_boxes = [], [], []
        for layer, (x0, y0, x1, y1) in crop_boxes((H, W), crops_n_layers, crop_overlap_ratio):
            n_side = int(points_per_side / crop_n_points_downscale_factor**layer)
            if n_side < 1:
                continue
            crop = pixels[:, y0:y1, x0:x1] if (x0, y0, x1, y1) != (0, 0, W, H) else pixels
            masks, scores, boxes = self._crop_masks(
                crop,
                n_side,
                points_per_batch,
                pred_iou_thresh,
                stability_score_thresh,
                stability_score_offset,
                mask_threshold,
            )
            if len(masks) == 0:
                continue
            near = _near_crop_edge(boxes, (x0, y0, x1, y1), (W, H))
            masks, scores, boxes = masks[~near], scores[~near], boxes[~near]
            if (x0, y0, x1, y1) != (0, 0, W, H):
                masks = F.pad(masks, (x0, W - x1, y0, H - y1))
                boxes = boxes + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
            kept_masks.append(masks)
            kept_scores.append(scores)
            kept_boxes.append(boxes)
        if not kept_masks:
            empty = torch.zeros(0, H, W, dtype=torch.bool)
            return MaskResult(masks=empty, scores=torch.zeros(0), boxes=torch.zeros(0, 4))
        masks, scores, boxes = torch.cat(kept_masks), torch.cat(kept_scores), torch.cat(kept_boxes)
        order = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), nms_thresh)  # sorted by score
        return MaskResult(masks=masks[order], scores=scores[order], boxes=boxes[order])

    def _crop_masks(
        self,
        pixels: torch.Tensor,
        n_side: int,
        points_per_batch: int,
        pred_iou_thresh: float,
        stability_score_thresh: float,
        stability_score_offset: float,
        mask_threshold: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks of one (cropped) image from an ``n_side``² point grid: bool ``[N, h, w]`` at the crop's size,
        predicted IoUs ``[N]`` and xyxy boxes ``[N, 4]`` in crop pixels, after the IoU and stability filters."""
        emb, (H, W), (h, w) = self.embed(pixels)
        pts = point_grid(n_side) * torch.tensor([W, H]) * torch.tensor([w / W, h / H])  # -> model input pixels
        pad = self.encoder.info.image_size
        out_m, out_s = [], []
        for i in range(0, len(pts), points_per_batch):
            chunk = pts[i : i + points_per_batch]
            n = len(chunk)
            out = self.encoder.model(
                image_embeddings=emb.to(self.encoder.dtype),
                input_points=chunk[None, :, None, :].to(emb.device),
                input_labels=torch.ones(1, n, 1, dtype=torch.long, device=emb.device),
                multimask_output=True,
            )
            low = out.pred_masks[0].float().flatten(0, 1)  # [n*3, h', w']
            iou = out.iou_scores[0].float().flatten()
            keep = iou > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
            if not keep.any():
                continue
            low, iou = low[keep], iou[keep]
            up = F.interpolate(low[:, None], pad, mode="bilinear", align_corners=False)[..., :h, :w]
            logits = F.interpolate(up, (H, W), mode="bilinear", align_corners=False)[:, 0]
            if stability_score_thresh > 0:
                stable = stability_score(logits, mask_threshold, stability_score_offset) > stability_score_thresh
                logits, iou = logits[stable], iou[stable]
            out_m.append((logits > mask_threshold).cpu())
            out_s.append(iou.cpu())
        if not out_m:
            return torch.zeros(0, H, W, dtype=torch.bool), torch.zeros(0), torch.zeros(0, 4)
        masks = torch.cat(out_m)
        return masks, torch.cat(out_s), torch.from_numpy(masks_to_boxes(masks.numpy()))

    def _prompt(self, image, points, point_labels, boxes, mask_input, multimask, threshold) -> MaskResult:
        from ..data.images import to_uint8_chw

        pixels = to_uint8_chw(image)
        H, W = pixels.shape[-2:]
        kw: dict[str, Any] = {}
        n = None
        if points is not None:
            pts = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32)
            nested = pts.ndim == 3
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
            _check_points(pts, labels, (H, W), nested)
            kw.update(input_points=pts, input_labels=labels)
            n = pts.shape[0]
        if boxes is not None:
            bx = torch.as_tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32).reshape(-1, 4)
            if n is not None and bx.shape[0] != n:
                raise ValueError(f"{bx.shape[0]} boxes and {n} point prompts: give one box per prompt")
            _check_boxes(bx)
            kw["input_boxes"] = bx
            n = bx.shape[0]
        emb, _, (h, w) = self.embed(pixels)  # after the prompt checks: a bad prompt costs no encoder run
        dev = emb.device
        sx, sy = w / W, h / H
        if "input_points" in kw:
            kw.update(input_points=(kw["input_points"] * torch.tensor([sx, sy]))[None].to(dev))
            kw.update(input_labels=kw["input_labels"][None].to(dev))
        if "input_boxes" in kw:
            kw["input_boxes"] = (kw["input_boxes"] * torch.tensor([sx, sy, sx, sy]))[None].to(dev)
        model = self.encoder.model
        emb = emb.to(self.encoder.dtype)
        if mask_input is not None:
            dense = self.mask_prompt(mask_input, (H, W), (h, w))  # [M, 1, 256, 256]
            if n is not None and dense.shape[0] != n:
                raise ValueError(f"{dense.shape[0]} mask prompts and {n} point/box prompts: give one mask per prompt")
            n = dense.shape[0]
            # SamModel adds a mask prompt to the image embedding, once per image: give each prompt its own copy
            # of the embedding so N prompts with N masks still run as one batch.
            kw = {k: v.transpose(0, 1) for k, v in kw.items()}  # [1, N, ...] -> [N, 1, ...]
            emb = emb.expand(n, -1, -1, -1)
            kw["input_masks"] = dense.to(dev, self.encoder.dtype)
        out = model(image_embeddings=emb, multimask_output=multimask, **kw)
        low = out.pred_masks.float()  # [1, N, M, h', w'] or [N, 1, M, h', w'] with mask prompts
        iou = out.iou_scores.float()
        low = low.flatten(0, 1)  # [N, M, h', w']
        iou = iou.flatten(0, 1)  # [N, M]
        if multimask:  # keep each prompt's best of the three candidates
            best = iou.argmax(-1)
            low = low[torch.arange(n), best][:, None]
            iou = iou[torch.arange(n), best][:, None]
        pad = self.encoder.info.image_size
        up = F.interpolate(low, pad, mode="bilinear", align_corners=False)[..., :h, :w]
        masks = (F.interpolate(up, (H, W), mode="bilinear", align_corners=False) > threshold)[:, 0].cpu()
        return MaskResult(
            masks=masks,
            scores=iou[:, 0].cpu(),
            boxes=torch.from_numpy(masks_to_boxes(masks.numpy())),
            logits=low[:, 0].cpu(),
        )

    def mask_prompt(self, masks: Any, original: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
        """Mask prompts as SAM's prompt encoder takes them: ``[N, 1, 256, 256]`` float logits.

        Args:
            masks: either low-resolution logits ``[N, 256, 256]`` (``MaskResult.logits`` of an earlier call, passed
                through unchanged, as segment-anything's ``mask_input``), or masks at the original image size
                ``[N, H, W]`` (bool, or float logits) which are resized into the model's padded input frame and
                down-sampled to 256 × 256; bool masks become logits ±10.
            original: the image's ``(H, W)``.
            resized: its size inside the model input frame (longest side = the model's image size).
        """
        m = torch.as_tensor(np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks))
        if m.ndim == 2:
            m = m[None]
        low = 4 * self.encoder.model.prompt_encoder.image_embedding_size[0]  # 256 for every SAM
        if m.ndim != 3:
            raise ValueError(f"masks must be [N, {low}, {low}] low-res logits or [N, H, W] masks, got {tuple(m.shape)}")
        if tuple(m.shape[1:]) == (low, low) and m.dtype != torch.bool and tuple(original) != (low, low):
            return m.float()[:, None]
        if tuple(m.shape[1:]) != tuple(original):
            raise ValueError(
                f"masks of shape {tuple(m.shape)} fit neither the image {tuple(original)} nor the "
                f"low-res logits [N, {low}, {low}]"
            )
        x = (m.float() * 20 - 10) if m.dtype == torch.bool else m.float()
        x = F.interpolate(x[:, None], resized, mode="bilinear", align_corners=False)
        pad = self.encoder.info.image_size  # (side, side)
        x = F.pad(x, (0, pad[1] - resized[1], 0, pad[0] - resized[0]), value=-10.0 if m.dtype == torch.bool else 0.0)
        return F.interpolate(x, (low, low), mode="bilinear", align_corners=False)
