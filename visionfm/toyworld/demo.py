"""``visionfm demo``: the project's main job, offline. Train (or reuse) a toyworld CLIP, then classify
held-out colour-shape compositions zero-shot and draw the result.

Zero-shot means zero-shot: the held-out (colour, shape) pairs never occur in a training image or caption
(``visionfm.toyworld.world.HELDOUT_PAIRS``), so naming them needs composition, not memory.
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

TEMPLATES = ("a {}.", "a photo of a {}.", "a picture of a {}.")


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

    Rows, in order: on held-out compositions, colour+shape (36-way); shape, read off the 36-way
    prediction by summing its probabilities over colours (6-way); shape from shape-only prompts
    ("a circle.", 6-way); colour (6-way); and colour+shape on seen compositions (test split).

    Shape-only prompts are biased against held-out pairs: "a circle" was only ever seen with the five
    other colours, so it carries no "blue", while every other shape was seen blue. Marginalising the
    colour+shape prediction removes that bias; both numbers are reported.

    Args:
        encoder: a text-capable encoder (``load_encoder`` of the toyworld CLIP).
        num: scenes per image set.
        seed: toyworld seed of the evaluation scenes.
        batch_size: images per forward.

    Returns:
        ``(results, samples)``; ``samples`` holds held-out images with true and predicted colour+shape
        labels for drawing.
    """
    from ..foundation.zero_shot import class_logits, text_classifier
    from .world import ToyWorld, class_names

    size = encoder.info.image_size[0]
    names = {k: class_names(k) for k in ("colour_shape", "shape", "colour")}
    weights = {k: text_classifier(encoder, v, TEMPLATES) for k, v in names.items()}
    shape_of = torch.tensor([names["shape"].index(n.split()[-1]) for n in names["colour_shape"]])
    results: list[ZeroShotResult] = []
    samples: dict[str, Any] = {}

    def add(task: str, images: str, k: int, pred: torch.Tensor, truth: torch.Tensor) -> None:
        results.append(ZeroShotResult(task, images, k, len(truth), float((pred.cpu() == truth).float().mean())))

    for split in ("heldout", "test"):
        world = ToyWorld(split, num, image_size=size, seed=seed, min_objects=1, max_objects=1)
        scenes = [world[i] for i in range(len(world))]
        images = [s.image for s in scenes]
        truth = {k: torch.tensor([s.label(k) for s in scenes]) for k in names}  # indices into class_names(k)
        pooled = encoder.encode(images, batch_size=batch_size).pooled  # once, reused by every label set
        logits = class_logits(encoder, pooled, weights["colour_shape"])
        pred = logits.argmax(-1).cpu()
        where = f"{split} compositions"
        add("colour+shape", where, 36, pred, truth["colour_shape"])
        if split == "heldout":
            probs = logits.softmax(-1).cpu()
            marginal = torch.zeros(len(images), 6).index_add_(1, shape_of, probs)
            add("shape (colour-marginal)", where, 6, marginal.argmax(-1), truth["shape"])
            for k in ("shape", "colour"):
                task = "shape (shape prompts)" if k == "shape" else "colour"
                add(task, where, 6, class_logits(encoder, pooled, weights[k]).argmax(-1), truth[k])
            samples = {
                "images": images,
                "truth": [names["colour_shape"][t] for t in truth["colour_shape"]],
                "pred": [names["colour_shape"][p] for p in pred],
            }
    return results, samples


def draw_grid(samples: dict[str, Any], path: Path, *, cols: int = 6, rows: int = 6, cell: int = 128) -> Path:
    """Write a PNG grid of held-out images under their predicted label (green right; red wrong, with the truth)."""
    from PIL import Image, ImageDraw, ImageFont

    n = min(cols * rows, len(samples["images"]))
    pad = 34
    canvas = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13) if hasattr(ImageFont, "load_default") else None
    for k in range(n):
        r, c = divmod(k, cols)
        img = Image.fromarray(np.asarray(samples["images"][k])).resize((cell, cell), Image.NEAREST)
        canvas.paste(img, (c * cell, r * (cell + pad)))
        ok = samples["pred"][k] == samples["truth"][k]
        x, y = c * cell + 4, r * (cell + pad) + cell + 2
        draw.text((x, y), samples["pred"][k], fill=(0, 130, 0) if ok else (200, 0, 0), font=font)
        if not ok:
            draw.text((x, y + 15), f"true: {samples['truth'][k]}", fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


#: What the report shows for zero-shot segmentation and grounding: the toy CLIP's dense mode, the proxy, SAM
#: refinement, and the background cosine threshold (docs/toyworld.md has the measured tables these come from).
#: The thresholds are the ones the toyworld-seg / -grounding tasks tuned on validation scenes for these modes.
SHOWCASE = {"seg_mode": "proxy", "grounding_mode": "maskclip", "cos_thresh": {"colour": 0.55, "shape": 0.1},
            "grounding_cos_thresh": 0.55, "scenes": 4, "seed": 7}  # fmt: skip


#: Label-map colours: colour labels in their own colour, shapes in a fixed palette, background black.
SHAPE_NAMES = ("white", "cyan", "magenta", "lime", "brown", "pink")
SHAPE_PALETTE = {"circle": (255, 255, 255), "square": (0, 220, 220), "triangle": (230, 0, 230),
                 "star": (160, 255, 0), "cross": (150, 90, 40), "heart": (255, 150, 180)}  # fmt: skip


def _paint(label_map: np.ndarray, labels: list[str]) -> Any:
    """A label map ``[H, W]`` (indices into ``labels``) as a PIL image in :data:`SHAPE_PALETTE` / the colours' RGB."""
    from PIL import Image

    from .world import COLOURS

    palette = np.zeros((len(labels), 3), np.uint8)
    for i, lab in enumerate(labels):
        palette[i] = COLOURS[lab] if lab in COLOURS else SHAPE_PALETTE.get(lab, (0, 0, 0))
    return Image.fromarray(palette[np.asarray(label_map)])


def _tile(images: list[Any], titles: list[str], path: Path, *, cell: int = 160, legend: str = "") -> Path:
    """One row per scene: ``images`` is a list of rows (lists of PIL images), ``titles`` the column titles, ``legend``
    a line of text under the grid."""
    from PIL import Image, ImageDraw

    rows, cols, pad = len(images), len(titles), 18
    canvas = Image.new("RGB", (cols * cell, pad + rows * cell + (pad if legend else 0)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((c * cell + 4, 3), t, fill=(0, 0, 0))
    for r, row in enumerate(images):
        for c, im in enumerate(row):
            canvas.paste(im.resize((cell, cell), Image.NEAREST), (c * cell, pad + r * cell))
    if legend:
        draw.text((4, pad + rows * cell + 3), legend, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def showcase(models: dict[str, Path], out_dir: str | os.PathLike, *, scenes: int | None = None) -> dict[str, Path]:
    """Draw every toy pipeline on a few held-out scenes (2-3 objects of never-seen colour-shape pairs).

    Writes ``zero_shot_seg.png`` (colour and shape label maps, background included, next to the truth),
    ``grounding.png`` (each colour phrase's boxes and masks), and ``auto_masks.png`` (the toy SAM's automatic
    masks), and returns their paths by name.

    Args:
        models: ``{"clip": dir, "ssl": dir, "sam": dir}``: the trained toy models
            (:func:`visionfm.toyworld.models.ensure_toy_model`).
        out_dir: where the pictures go.
        scenes: how many scenes (default ``SHOWCASE["scenes"]``).
    """
    from PIL import Image

    from ..foundation.loading import load_encoder
    from ..pipelines.base import pipeline
    from .seg import TEMPLATES as SEG_TEMPLATES
    from .seg import class_names as seg_names
    from .seg import target_map
    from .world import ToyWorld

    out = Path(out_dir)
    n = scenes or int(SHOWCASE["scenes"])
    world = ToyWorld("heldout", n, seed=int(SHOWCASE["seed"]), min_objects=2, max_objects=3)
    data = [world[i] for i in range(n)]
    clip = load_encoder(models["clip"], device="cpu")
    th = dict(SHOWCASE["cos_thresh"])
    segs = {
        kind: pipeline(
            "zero-shot-seg",
            model=clip,
            mode=SHOWCASE["seg_mode"],
            proxy=str(models["ssl"]),
            templates=list(SEG_TEMPLATES[kind]),
            short_side=192,
            stride=16,
        )  # fmt: skip
        for kind in ("colour", "shape")
    }
    grounding = pipeline("grounding", model=clip, mode=SHOWCASE["grounding_mode"], refine=str(models["sam"]),
                         templates=list(SEG_TEMPLATES["colour"]), short_side=192, stride=16)  # fmt: skip
    masks = pipeline("mask-generation", model=str(models["sam"]), device="cpu")
    rows_seg, rows_gr, rows_auto = [], [], []
    for sc in data:
        img = Image.fromarray(sc.image)
        row = [img]
        for kind, seg in segs.items():
            r = seg(sc.image, labels=seg_names(kind), background=True, cos_thresh=float(th[kind]))
            row += [_paint(r.label_map.cpu().numpy(), r.labels), _paint(target_map(sc, kind), r.labels)]
        rows_seg.append(row)
        phrases = sorted({o.colour for o in sc.objects})
        g = grounding(sc.image, phrases=phrases, cos_thresh=float(SHOWCASE["grounding_cos_thresh"]))
        rows_gr.append([img, g.overlay(sc.image)])
        a = masks(sc.image, points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.85)
        rows_auto.append([img, a.overlay(sc.image)])
    seg_titles = ["held-out scene", "colour: predicted", "colour: truth", "shape: predicted", "shape: truth"]
    legend = "background black; shapes: " + ", ".join(f"{k} {n}" for n, k in zip(SHAPE_PALETTE, SHAPE_NAMES))
    return {
        "zero_shot_seg": _tile(rows_seg, seg_titles, out / "zero_shot_seg.png", legend=legend),
        "grounding": _tile(rows_gr, ["held-out scene", "grounding: its colours"], out / "grounding.png"),
        "auto_masks": _tile(rows_auto, ["held-out scene", "toy SAM automatic masks"], out / "auto_masks.png"),
    }


def write_html(results: list[ZeroShotResult], pictures: dict[str, Path], models: dict[str, Path], path: Path) -> Path:
    """An HTML page tying the demo's pictures and its zero-shot table together (pictures linked by relative path)."""
    import html

    rows = "".join(
        f"<tr><td>{html.escape(r.task)}</td><td>{html.escape(r.images)}</td><td>{r.num_classes}</td><td>{r.n}</td>"
        f"<td><b>{100 * r.top1:.1f}%</b></td><td>{100 * r.chance:.1f}%</td></tr>"
        for r in results
    )
    zoo = "".join(f"<li><b>{html.escape(k)}</b>: <code>{html.escape(str(v))}</code></li>" for k, v in models.items())
    captions = {
        "zero_shot_heldout": "Zero-shot classification of held-out compositions (green: right; red: wrong).",
        "zero_shot_seg": "Zero-shot segmentation (colour and shape labels, background included) against the truth.",
        "grounding": "Grounding each colour present, with the toy SAM turning boxes into masks.",
        "auto_masks": "The toy SAM's automatic masks (16 x 16 point grid).",
    }
    figs = "".join(
        f"<figure><img src='{html.escape(os.path.relpath(p, path.parent))}'><figcaption>"
        f"{html.escape(captions.get(k, k))}</figcaption></figure>"
        for k, p in pictures.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>visionfm demo</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:2px 10px;text-align:left}"
        "img{max-width:100%;image-rendering:pixelated}figure{margin:2em 0}</style></head><body>"
        "<h1>visionfm demo: a toy model zoo trained from scratch on toyworld</h1>"
        "<p>Held-out colour-shape pairs never occur in any training image or caption.</p>"
        f"<h2>Models</h2><ul>{zoo}</ul>"
        "<h2>Zero-shot classification</h2><table><tr><th>labels</th><th>images</th><th>classes</th><th>n</th>"
        f"<th>top-1</th><th>chance</th></tr>{rows}</table>{figs}</body></html>"
    )
    path.write_text(page)
    return path


def run_demo(
    out_dir: str | os.PathLike = "runs/demo",
    *,
    retrain: bool = False,
    num: int = 600,
    overrides: list[str] | dict[str, list[str]] | None = None,
    zoo: bool = True,
) -> tuple[list[ZeroShotResult], Path]:
    """Train or reuse the toy zoo, evaluate zero-shot, draw every pipeline and write the report.

    Writes ``zero_shot_heldout.png``, ``zero_shot.json`` and, with ``zoo``, ``zero_shot_seg.png``, ``grounding.png``,
    ``auto_masks.png`` and ``index.html`` (the page that ties them together) into ``out_dir``.

    Args:
        out_dir: where the pictures and reports go.
        retrain: train even if cached checkpoints exist.
        num: evaluation images per image set.
        overrides: recipe overrides (``section.key=value``): a list for the CLIP, or ``{"clip": [...], "ssl": [...],
            "sam": [...]}``; a different recipe is cached separately.
        zoo: also train (or reuse) the self-supervised encoder and the SAM and draw the dense pipelines.

    Returns:
        ``(zero-shot results, the report: index.html with zoo, else the zero-shot picture)``.
    """
    import json

    from ..foundation.loading import load_encoder
    from .models import ensure_toy_model

    per_kind = overrides if isinstance(overrides, dict) else {"clip": list(overrides or [])}
    models = {}
    for kind in ("clip", "ssl", "sam") if zoo else ("clip",):
        models[kind] = ensure_toy_model(kind, retrain=retrain, overrides=per_kind.get(kind))
    enc = load_encoder(models["clip"], device="auto")
    results, samples = evaluate(enc, num=num)
    out = Path(out_dir)
    image = draw_grid(samples, out / "zero_shot_heldout.png")
    report = [dict(r.__dict__, chance=r.chance) for r in results]
    summary = {"checkpoint": str(models["clip"]), "models": {k: str(v) for k, v in models.items()}, "results": report}
    (out / "zero_shot.json").write_text(json.dumps(summary, indent=2))
    if not zoo:
        return results, image
    pictures = {"zero_shot_heldout": image, **showcase(models, out)}
    return results, write_html(results, pictures, models, out / "index.html")
