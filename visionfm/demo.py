"""``visionfm demo``: the project's main job, offline. Train (or reuse) a toyworld CLIP, then classify
held-out colour-shape compositions zero-shot and draw the result.

Zero-shot means zero-shot: the held-out (colour, shape) pairs never occur in a training image or caption
(``visionfm.data.toyworld.HELDOUT_PAIRS``), so naming them needs composition, not memory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = "toyworld_clip"
TEMPLATES = ("a {}.", "a photo of a {}.", "a picture of a {}.")


def cache_root() -> Path:
    """``$VISIONFM_CACHE`` or ``~/.cache/visionfm``."""
    return Path(os.environ.get("VISIONFM_CACHE", Path.home() / ".cache" / "visionfm"))


def toy_clip_dir(recipe: dict[str, Any] | None = None) -> Path:
    """Where the toyworld CLIP trained from ``recipe`` (default: the built-in recipe) is cached."""
    from .training.recipes import load_recipe, recipe_hash

    recipe = recipe or load_recipe(DEFAULT_RECIPE)
    return cache_root() / f"toyworld-clip-{recipe_hash(recipe)}"


def ensure_toy_clip(*, retrain: bool = False, overrides: list[str] | None = None) -> Path:
    """Return the cached toyworld CLIP checkpoint, training it first if missing (or ``retrain``)."""
    from .training.recipes import apply_overrides, load_recipe, run_recipe

    recipe = load_recipe(DEFAULT_RECIPE, overrides)
    out = toy_clip_dir(recipe)
    if (out / "open_clip_model.safetensors").is_file() and not retrain:
        logger.info("using cached toyworld CLIP at %s", out)
        return out
    if retrain and out.exists():
        import shutil

        shutil.rmtree(out)
    logger.warning("training the toyworld CLIP (one time; cached in %s)", out)
    return run_recipe(apply_overrides(recipe, [f"train.output_dir={out}"]))


@dataclass
class ZeroShotResult:
    """Top-1 accuracy of one zero-shot task."""

    task: str
    images: str
    num_classes: int
    n: int
    top1: float

    @property
    def chance(self) -> float:
        """Accuracy of uniform guessing."""
        return 1.0 / self.num_classes


def evaluate(
    encoder: Any, *, num: int = 600, seed: int = 1234, batch_size: int = 128
) -> tuple[list[ZeroShotResult], dict[str, Any]]:
    """Zero-shot top-1 on single-object toyworld scenes.

    Args:
        encoder: a text-capable encoder (``load_encoder`` of the toyworld CLIP).
        num: scenes per image set.
        seed: toyworld seed of the evaluation scenes (independent of the training seed's scenes).
        batch_size: images per forward.

    Returns:
        ``(results, samples)``: accuracies for colour+shape (36-way), shape (6-way) and colour (6-way)
        on held-out compositions, and colour+shape on seen compositions (test split); ``samples``
        holds held-out images with their true and predicted colour+shape labels for drawing.
    """
    from .data.toyworld import ToyWorld, class_names
    from .pipelines.zero_shot import classify, text_classifier

    size = encoder.info.image_size[0]
    results, samples = [], {}
    kinds = {k: class_names(k) for k in ("colour_shape", "shape", "colour")}
    weights = {k: text_classifier(encoder, names, TEMPLATES) for k, names in kinds.items()}
    for split, tasks in (("heldout", ("colour_shape", "shape", "colour")), ("test", ("colour_shape",))):
        world = ToyWorld(split, num, image_size=size, seed=seed, min_objects=1, max_objects=1)
        scenes = [world[i] for i in range(len(world))]
        images = [s.image for s in scenes]
        feats_logits = {k: classify(encoder, images, weights[k], batch_size=batch_size) for k in tasks}
        for k in tasks:
            truth = torch.tensor([s.label(k) for s in scenes])  # index into class_names(k)
            pred = feats_logits[k].argmax(-1).cpu()
            results.append(
                ZeroShotResult(
                    k, f"{split} compositions", len(kinds[k]), len(scenes), float((pred == truth).float().mean())
                )
            )
            if split == "heldout" and k == "colour_shape":
                samples = {"images": images, "truth": [kinds[k][t] for t in truth], "pred": [kinds[k][p] for p in pred]}
    return results, samples


def draw_grid(samples: dict[str, Any], path: Path, *, cols: int = 6, rows: int = 6, cell: int = 128) -> Path:
    """Write a PNG grid of held-out images, each captioned with its prediction (green right, red wrong)."""
    from PIL import Image, ImageDraw, ImageFont

    n = min(cols * rows, len(samples["images"]))
    pad = 30
    canvas = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13) if hasattr(ImageFont, "load_default") else None
    for k in range(n):
        r, c = divmod(k, cols)
        img = Image.fromarray(np.asarray(samples["images"][k])).resize((cell, cell), Image.NEAREST)
        canvas.paste(img, (c * cell, r * (cell + pad)))
        ok = samples["pred"][k] == samples["truth"][k]
        text = samples["pred"][k] if ok else f"{samples['pred'][k]} (is {samples['truth'][k]})"
        draw.text((c * cell + 3, r * (cell + pad) + cell + 4), text, fill=(0, 130, 0) if ok else (200, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    *,
    retrain: bool = False,
    num: int = 600,
    overrides: list[str] | None = None,
) -> tuple[list[ZeroShotResult], Path]:
    """Train or reuse the toyworld CLIP, evaluate zero-shot, write ``zero_shot_heldout.png`` and a JSON report.

    Args:
        out_dir: where the picture and ``zero_shot.json`` go.
        retrain: train even if a cached checkpoint exists.
        num: evaluation images per image set.
        overrides: recipe overrides (``section.key=value``); a different recipe is cached separately.
    """
    import json

    from .foundation.loading import load_encoder

    ckpt = ensure_toy_clip(retrain=retrain, overrides=overrides)
    enc = load_encoder(ckpt, device="auto")
    results, samples = evaluate(enc, num=num)
    out = Path(out_dir)
    image = draw_grid(samples, out / "zero_shot_heldout.png")
    report = [dict(r.__dict__, chance=r.chance) for r in results]
    (out / "zero_shot.json").write_text(json.dumps({"checkpoint": str(ckpt), "results": report}, indent=2))
    return results, image
