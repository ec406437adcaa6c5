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
    """

    masks: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor

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
        multimask_output: bool = False,
        mask_threshold: float = 0.0,
        **auto: Any,
    ) -> list[MaskResult]:
        if points is None and boxes is None:
            return [self.generate(img, **auto) for img in images]
        if auto:
            raise ValueError(f"options {sorted(auto)} apply to automatic mask generation (no points/boxes)")
        return [self._prompt(img, points, point_labels, boxes, multimask_output, mask_threshold) for img in images]

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
    ) -> MaskResult:
        """Automatic masks: prompt a ``points_per_side``² grid, keep confident and stable masks, then NMS.

        The same grid, thresholds and order as transformers' ``mask-generation`` pipeline (single crop), but
        masks failing the IoU threshold are dropped before the costly upsampling to full resolution, and
        the image embedding comes from the cache.

        Returns:
            ``MaskResult`` sorted by predicted IoU, best first.
        """
        from torchvision.ops import batched_nms

        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        emb, (H, W), (h, w) = self.embed(image)
        off = 1.0 / (2 * points_per_side)
        axis = torch.linspace(off, 1 - off, points_per_side)
        grid = torch.stack(
            [axis[None, :].expand(points_per_side, -1), axis[:, None].expand(-1, points_per_side)], -1
        ).reshape(-1, 2)
        pts = grid * torch.tensor([W, H]) * torch.tensor([w / W, h / H])  # original pixels -> model input pixels
        pad = self.encoder.info.image_size
        kept_masks, kept_scores, kept_boxes = [], [], []
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
            masks = (logits > mask_threshold).cpu()
            kept_masks.append(masks)
            kept_scores.append(iou.cpu())
            kept_boxes.append(torch.from_numpy(masks_to_boxes(masks.numpy())))
        if not kept_masks:
            empty = torch.zeros(0, H, W, dtype=torch.bool)
            return MaskResult(masks=empty, scores=torch.zeros(0), boxes=torch.zeros(0, 4))
        masks, scores, boxes = torch.cat(kept_masks), torch.cat(kept_scores), torch.cat(kept_boxes)
        order = batched_nms(boxes, scores, torch.zeros(len(boxes)), nms_thresh)  # sorted by score
        return MaskResult(masks=masks[order], scores=scores[order], boxes=boxes[order])

    def _prompt(self, image, points, point_labels, boxes, multimask, threshold) -> MaskResult:
        emb, (H, W), (h, w) = self.embed(image)
        dev = emb.device
        sx, sy = w / W, h / H
        kw: dict[str, Any] = {}
        n = None
        if points is not None:
            pts = torch.as_tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32)
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
            pts = pts * torch.tensor([sx, sy])
            kw.update(input_points=pts[None].to(dev), input_labels=labels[None].to(dev))
            n = pts.shape[0]
        if boxes is not None:
            bx = torch.as_tensor(np.asarray(boxes, dtype=np.float64), dtype=torch.float32).reshape(-1, 4)
            if n is not None and bx.shape[0] != n:
                raise ValueError(f"{bx.shape[0]} boxes and {n} point prompts: give one box per prompt")
            kw["input_boxes"] = (bx * torch.tensor([sx, sy, sx, sy]))[None].to(dev)
            n = bx.shape[0]
        model = self.encoder.model
        out = model(image_embeddings=emb.to(self.encoder.dtype), multimask_output=multimask, **kw)
        low = out.pred_masks[0].float()  # [N, M, h', w']
        iou = out.iou_scores[0].float()  # [N, M]
        if multimask:  # keep each prompt's best of the three candidates
            best = iou.argmax(-1)
            low = low[torch.arange(n), best][:, None]
            iou = iou[torch.arange(n), best][:, None]
        pad = self.encoder.info.image_size
        up = F.interpolate(low, pad, mode="bilinear", align_corners=False)[..., :h, :w]
        masks = (F.interpolate(up, (H, W), mode="bilinear", align_corners=False) > threshold)[:, 0].cpu()
        return MaskResult(masks=masks, scores=iou[:, 0].cpu(), boxes=torch.from_numpy(masks_to_boxes(masks.numpy())))
