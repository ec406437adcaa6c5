"""The speed-quality suite: each speed option against the same model's fp32, full-token baseline, in one process.

Run: ``python -m benchmarks --suite speed-quality [--device cpu|cuda] [--models vit-b-16,dinov2-b-14,sam-vit-b,dit-xl-2-256]
[--skip-quality] [--out benchmarks/results]``. Writes ``<out>/speed_quality_<device>.json`` and ``.md``.

**Speed** (random weights at real sizes; speed does not depend on the values). For each encoder, every variant
(``fp32``; ``bf16``; ``int8`` dynamic quantization; token merging at two ratios; int8 + token merging; the
``speed="fast"`` preset) is loaded through ``visionfm.load_encoder`` and timed in turn (A B C ... per iteration) on the
same batch of real photos; the ratio is images/s over the fp32 baseline's. Agreement with the baseline on those
photos: the cosine of pooled features and the mean per-patch cosine of ``Features.patches``; for SAM also the mean
IoU of point-prompted masks (a 4 x 4 grid of points) decoded from each variant's image embedding. For DiT-XL/2,
class-conditional sampling (batch 1, cfg 4, 10 DDIM steps, the VAE decode included) with step caching at interval 2,
3 and 4, int8, and int8 with caching, against fp32 without caching; agreement: PSNR of the images against the
uncached ones (little meaning on random weights: see :func:`bench_dit`).

**Quality** (the trained toy models; skipped when they are not in the cache: ``visionfm demo`` and
``visionfm train visionfm/toyworld/recipes/dit_toyworld.yaml`` make them):

- toy CLIP zero-shot top-1 on single-object scenes (``visionfm.toyworld.demo.evaluate``, 3000 per split): colour+shape
  on seen (test) compositions, and on held-out compositions;
- toy zero-shot-seg colour mIoU (``visionfm.toyworld.seg.run``, mode maskclip, 100 test scenes, threshold tuned on
  60 validation scenes per variant);
- FD-toyCLIP of the toy DiT's samples (10 per class, 30 classes, 25 steps, cfg 2) against 1000 real test scenes, for
  each generator variant, and once more without caching from other seeds (the sampling-noise floor of FD at 300
  images).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import suite_models as sm

logger = logging.getLogger(__name__)

ENCODER_MODELS = ["vit-b-16", "dinov2-b-14", "sam-vit-b"]
GENERATOR_MODELS = ["dit-xl-2-256"]
#: name -> load_encoder options
ENCODER_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"dtype": "bf16"},
    "int8": {"quantize": "int8"},
    "tome-0.3": {"token_merging": 0.3},
    "tome-0.5": {"token_merging": 0.5},
    "tome-0.7": {"token_merging": 0.7},
    "int8+tome-0.3": {"quantize": "int8", "token_merging": 0.3},
    "int8+tome-0.5": {"quantize": "int8", "token_merging": 0.5},
    "int8+tome-0.7": {"quantize": "int8", "token_merging": 0.7},
    "fast": {"speed": "fast"},
}
#: name -> (load options, step cache) of the generator
CACHE_VARIANTS: dict[str, tuple[dict[str, Any], Any]] = {
    "no cache": ({}, None),
    "cache 2": ({}, 2),
    "cache 3": ({}, 3),
    "cache 4": ({}, 4),
    "int8": ({"quantize": "int8"}, None),
    "int8+cache 2": ({"quantize": "int8"}, 2),
    "int8+cache 3": ({"quantize": "int8"}, 3),
}
BATCH = {"cpu": {"vit-b-16": 8, "dinov2-b-14": 8, "sam-vit-b": 1}, "cuda": {"vit-b-16": 64, "dinov2-b-14": 64,
                                                                             "sam-vit-b": 8}}  # fmt: skip
TOY_CLIP = "toyworld-clip"
ZS_SCENES = 3000  # per split: binomial standard error about 0.9 points at 60 % accuracy
NOISE_SEED = 10_000  # the toy DiT's sampling-noise row: no cache, other seeds
TOY_DIT_DIR = sm.cache_root() / "toy_dit" / "pipeline"  # visionfm train ...dit_toyworld.yaml train.output_dir=<here>/..


def _interleaved(fns: dict[str, Any], device: torch.device, warmup: int, iters: int) -> dict[str, list[float]]:
    """Per-call seconds of each named function, timed in turn (the speed suite's :func:`time_interleaved`)."""
    from .suite import time_interleaved

    times, _ = time_interleaved(list(fns.values()), device, warmup, iters)
    return dict(zip(fns, times, strict=True))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1)).mean())


def _patch_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def _mask_iou(base: Any, other: Any, image: Any) -> float:
    """Mean IoU of point-prompted masks (4 x 4 grid) decoded from two SAM encoders' embeddings of one image."""
    import numpy as np

    from visionfm.pipelines import pipeline

    h, w = np.asarray(image).shape[:2]
    pts = [[(i + 0.5) * w / 4, (j + 0.5) * h / 4] for j in range(4) for i in range(4)]
    a = pipeline("mask-generation", model=base)(image, points=pts, point_labels=[1] * len(pts)).masks
    b = pipeline("mask-generation", model=other)(image, points=pts, point_labels=[1] * len(pts)).masks
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())


def bench_encoder(model: str, device: torch.device, warmup: int, iters: int, variants: list[str]) -> list[dict]:
    """Speed and agreement rows of one encoder, one per variant."""
    import visionfm
    from visionfm.data.images import load_images

    path = sm.checkpoint(model)
    b = BATCH[device.type].get(model, 2)
    paths = (sm.write_images(8) * b)[:b]
    encs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in variants:
        try:
            encs[name] = visionfm.load_encoder(str(path), device=device, **ENCODER_VARIANTS[name])
        except Exception as e:  # noqa: BLE001 - a variant the device cannot run is reported, not fatal
            errors[name] = f"{type(e).__name__}: {e}"
            logger.warning("%s %s: %s", model, name, errors[name])
    base = encs["fp32"]
    px = base.preprocess(paths)
    inputs = {k: px.to(e.dtype) for k, e in encs.items()}

    def call(k: str):
        return lambda: encs[k](inputs[k])

    with torch.inference_mode():
        times = _interleaved({k: call(k) for k in encs}, device, warmup, iters)
        ref = base(px)
        feats = {k: encs[k](inputs[k]) for k in encs}
    image = load_images(paths[:1])[0].permute(1, 2, 0).numpy()
    rows = []
    base_s = sorted(times["fp32"])[len(times["fp32"]) // 2]
    for name in variants:
        if name in errors:
            rows.append({"model": model, "variant": name, "error": errors[name]})
            continue
        med = sorted(times[name])[len(times[name]) // 2]
        f = feats[name]
        row = {
            "model": model,
            "variant": name,
            "options": encs[name].speed_options or {"dtype": str(encs[name].dtype)},
            "batch": b,
            "images_per_s": b / med,
            "latency_s": med,
            "speedup": base_s / med,
            "pooled_cos": _cos(ref.pooled, f.pooled),
            "patch_cos": _patch_cos(ref.patches, f.patches),
        }
        if model.startswith("sam") and name != "fp32":
            row["mask_iou"] = _mask_iou(base, encs[name], image)
        rows.append(row)
        logger.info("%s %s: %.3g img/s (%.2fx), pooled cos %.4f, patch cos %.4f%s", model, name,
                    row["images_per_s"], row["speedup"], row["pooled_cos"], row["patch_cos"],
                    f", mask IoU {row['mask_iou']:.3f}" if "mask_iou" in row else "")  # fmt: skip
    return rows


def bench_dit(model: str, device: torch.device, iters: int, steps: int = 10) -> list[dict]:
    """Sampling speed and agreement of DiT-XL/2 with step caching and int8, one row per variant.

    The random DiT's adaLN-Zero gates start near zero, so its blocks barely change their input and the agreement
    (PSNR against the uncached images) says little here; quality is measured on the trained toy DiT instead.
    """
    import numpy as np

    from visionfm.pipelines import pipeline

    path = sm.checkpoint(model)
    pipes: dict[str, Any] = {}
    for opts, _ in CACHE_VARIANTS.values():
        key = json.dumps(opts, sort_keys=True)
        if key not in pipes:
            pipes[key] = pipeline("generation", model=str(path), device=device, **opts)

    def sample(name: str):
        opts, cache = CACHE_VARIANTS[name]
        gen = pipes[json.dumps(opts, sort_keys=True)]
        return lambda: gen(labels=[0], steps=steps, guidance_scale=4.0, seed=0, cache=cache or False, progress=False)

    times = _interleaved({k: sample(k) for k in CACHE_VARIANTS}, device, 1, iters)
    runs = {k: sample(k)() for k in CACHE_VARIANTS}
    ref = np.asarray(runs["no cache"].images[0], dtype=np.float64)
    base_s = sorted(times["no cache"])[len(times["no cache"]) // 2]
    rows = []
    for k, (opts, _) in CACHE_VARIANTS.items():
        med = sorted(times[k])[len(times[k]) // 2]
        img = np.asarray(runs[k].images[0], dtype=np.float64)
        mse = float(((img - ref) ** 2).mean())
        rows.append({
            "model": model, "variant": k, "options": {**opts, "cache": runs[k].protocol.get("cache")}, "batch": 1,
            "steps": steps, "images_per_s": 1 / med, "latency_s": med, "speedup": base_s / med,
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse),
        })  # fmt: skip
        logger.info("%s %s: %.3g s/image (%.2fx)", model, k, med, base_s / med)
    return rows


# -- quality on the toy models -----------------------------------------------------------------------------------------
def _toy_clip_dir() -> Path | None:
    from visionfm.toyworld.models import toy_model_dir

    d = toy_model_dir("clip")
    return d if d is not None and Path(d).is_dir() else None


def quality_toy_clip(variants: list[str]) -> list[dict]:
    """Toy CLIP zero-shot top-1 and zero-shot-seg colour mIoU per variant (same scenes, same thresholds grid)."""
    import visionfm
    from visionfm.toyworld import seg
    from visionfm.toyworld.demo import evaluate

    d = _toy_clip_dir()
    if d is None:
        return [{"error": "toy CLIP not trained (run `visionfm demo --clip-only`)"}]
    rows = []
    for name in variants:
        opts = ENCODER_VARIANTS[name]
        enc = visionfm.load_encoder(str(d), device="cpu", **opts)
        t0 = time.perf_counter()
        results, _ = evaluate(enc, num=ZS_SCENES)
        zs = {f"{r.task} / {r.images}": r.top1 for r in results}
        t_zs = time.perf_counter() - t0
        s = seg.run(enc, modes=("maskclip",), kinds=("colour",), splits=("test",), num=100, pamr=False)
        miou = s["results"][0]["mIoU"]
        rows.append({"variant": name, "options": enc.speed_options, "zero_shot": zs, "seg_colour_miou": miou,
                     "zero_shot_s": t_zs})  # fmt: skip
        logger.info("toy CLIP %s: zero-shot %s, seg colour mIoU %.3f", name, zs, miou)
    return rows


def quality_toy_dit() -> list[dict]:
    """FD-toyCLIP of the toy DiT's samples with and without step caching (same seeds)."""
    import visionfm
    from visionfm.eval.generation_metrics import FeatureStats, encoder_features, frechet_distance_from_stats
    from visionfm.pipelines import pipeline
    from visionfm.toyworld.world import ToyWorld, class_names

    d = _toy_clip_dir()
    if d is None or not TOY_DIT_DIR.is_dir():
        return [{"error": f"toy DiT ({TOY_DIT_DIR}) or toy CLIP not trained"}]
    clip = visionfm.load_encoder(str(d), device="cpu")
    real_world = ToyWorld("test", 1000, seed=4321, image_size=32)
    real = FeatureStats()
    real.update(encoder_features(clip, [real_world[i].image for i in range(len(real_world))], progress=False))
    names = [n for n in class_names("colour_shape") if n in _seen_classes()]
    labels = [n for n in names for _ in range(10)]
    rows = []
    pipes: dict[str, Any] = {}
    for k, (opts, cache) in CACHE_VARIANTS.items():
        key = json.dumps(opts, sort_keys=True)
        if key not in pipes:
            pipes[key] = pipeline("generation", model=str(TOY_DIT_DIR), device="cpu", batch_size=60, **opts)
        t0 = time.perf_counter()
        out = pipes[key](labels=labels, steps=25, guidance_scale=2.0, seed=0, cache=cache or False, progress=False)
        dt = time.perf_counter() - t0
        fake = FeatureStats()
        fake.update(encoder_features(clip, list(out.images), progress=False))
        fd = frechet_distance_from_stats(fake, real)
        rows.append({"variant": k, "options": opts, "cache": out.protocol.get("cache"), "fd_toyclip": fd,
                     "images": len(labels), "seconds": dt})  # fmt: skip
        logger.info("toy DiT %s: FD-toyCLIP %.3f in %.1f s", k, fd, dt)
    # the noise floor: the same uncached sampler with other seeds
    out = pipes[json.dumps({}, sort_keys=True)](labels=labels, steps=25, guidance_scale=2.0, seed=NOISE_SEED,
                                                 cache=False, progress=False)  # fmt: skip
    fake = FeatureStats()
    fake.update(encoder_features(clip, list(out.images), progress=False))
    rows.append({"variant": f"no cache, seeds from {NOISE_SEED}", "options": {}, "cache": None,
                 "fd_toyclip": frechet_distance_from_stats(fake, real), "images": len(labels), "seconds": None})  # fmt: skip
    return rows


def _seen_classes() -> set[str]:
    """The colour-shape pairs the toyworld-generation suite evaluates (those the train split contains)."""
    from importlib import resources

    import yaml

    text = resources.files("visionfm.toyworld").joinpath("suites/toyworld-generation.yaml").read_text()
    return set(yaml.safe_load(text)["tasks"][0]["classes"])


# -- report ------------------------------------------------------------------------------------------------------------
def _f(v: Any, d: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{d}f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# speed-quality ({report['device']}, {report['timestamp']})", "", f"command: `{report['command']}`", ""]
    if report.get("speed_from"):
        lines += [f"speed rows: from the run of {report['speed_from']}", ""]
    m = report["machine"]
    lines += [f"machine: {m}", ""]
    lines += ["| model | variant | batch | images/s | speedup vs fp32 | pooled cos | patch cos | mask IoU | PSNR dB |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["speed"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['variant']} | | error: {r['error'][:80]} | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['batch']} | {_f(r['images_per_s'])} | {_f(r['speedup'], 2)}x | "
            f"{_f(r.get('pooled_cos'), 4)} | {_f(r.get('patch_cos'), 4)} | {_f(r.get('mask_iou'))} | "
            f"{_f(r.get('psnr_db'), 1)} |"
        )
    q = report.get("quality") or {}
    if q.get("toy_clip"):
        lines += ["", "| toy CLIP variant | zero-shot seen c+s | zero-shot held-out c+s | seg colour mIoU (maskclip) |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in q["toy_clip"]:
            if "error" in r:
                lines.append(f"| {r['error']} | | | |")
                continue
            zs = r["zero_shot"]
            lines.append(f"| {r['variant']} | {100 * zs['colour+shape / test compositions']:.1f} | "
                         f"{100 * zs['colour+shape / heldout compositions']:.1f} | {100 * r['seg_colour_miou']:.1f} |")  # fmt: skip
    if q.get("toy_dit"):
        lines += ["", "| toy DiT variant | FD-toyCLIP | seconds for 300 images |", "|---|---|---|"]
        for r in q["toy_dit"]:
            if "error" in r:
                lines.append(f"| {r['error']} | | |")
                continue
            lines.append(f"| {r['variant']} | {_f(r['fd_toyclip'])} | {_f(r['seconds'], 1)} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    """Run the suite; write ``speed_quality_<device>.json`` / ``.md``. ``--models none`` re-measures only the quality
    part and keeps the speed rows of the previous report in ``--out`` (``speed_from``: when they were measured)."""
    device = torch.device(args.device)
    if args.models == "all":
        models = ENCODER_MODELS + GENERATOR_MODELS
    else:
        models = [m for m in args.models.split(",") if m and m != "none"]
    warmup = args.warmup if args.warmup is not None else 1
    iters = args.iters if args.iters is not None else 3
    variants = list(ENCODER_VARIANTS)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "suite": "speed-quality",
        "device": args.device,
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "threads": torch.get_num_threads(),
        "settings": {"warmup": warmup, "iters": iters, "batch": BATCH[device.type]},
        "speed": [],
        "quality": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / f"speed_quality_{args.device}.json"
    if not models and previous.is_file():  # --models none: re-measure quality, keep the speed rows of the last run
        old = json.loads(previous.read_text())
        report["speed"], report["speed_from"] = old.get("speed", []), old.get("speed_from", old.get("timestamp"))

    def write() -> None:
        report["wall_s"] = time.perf_counter() - t0
        (out / f"speed_quality_{args.device}.json").write_text(json.dumps(report, indent=1, default=str))
        (out / f"speed_quality_{args.device}.md").write_text(markdown(report))

    for model in models:
        print(f"[speed-quality] {model} ...", flush=True)
        if model in GENERATOR_MODELS:
            report["speed"] += bench_dit(model, device, iters)
        else:
            report["speed"] += bench_encoder(model, device, warmup, iters, variants)
        write()
    if not args.skip_quality:
        print("[speed-quality] toy CLIP quality ...", flush=True)
        report["quality"]["toy_clip"] = quality_toy_clip(variants)
        write()
        print("[speed-quality] toy DiT quality ...", flush=True)
        report["quality"]["toy_dit"] = quality_toy_dit()
    write()
    print(markdown(report), flush=True)
    return report
