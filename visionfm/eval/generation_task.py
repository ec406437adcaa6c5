"""The ``generation`` suite task: sample from the run's generator and score the samples against real images.

```yaml
- name: generation
  task: generation
  reference: imagenet-val          # dataset of real images (optional when every metric has reference_stats)
  num_per_class: 50                # images per class; classes: all of the generator's (or `classes: [...]`)
  preset: paper                    # or steps / guidance_scale; seed: 0 (image i gets noise seed seed + i)
  metrics:
    - {metric: fd, encoder: dinov2-large}                      # FD-DINOv2 (Stein et al. 2023)
    - {metric: fd, encoder: clip-vit-l-14, label: CLIP-L}   # FD-CLIP
    - {metric: clip_score, encoder: clip-vit-l-14, template: "a photo of a {}."}
    - {metric: inception_score, encoder: clip-vit-l-14}     # IS with a zero-shot CLIP classifier
    - {metric: fid}                                            # classic FID + IS, with local Inception weights
  reference_stats: {FD-dinov2-large: stats/imagenet_dinov2.safetensors}   # optional: reuse saved statistics
  save_images: false
```

How it runs (``visionfm eval SUITE --model GENERATOR``, also under ``accelerate launch``): the sample plan (class,
seed) is cut into chunks like any dataset, so generation is shared across processes, persisted per chunk and
resumed after a kill. Only per-image feature rows are kept, never images (unless ``save_images``). Reference
features are cached by (metric encoder weights, dataset definition). Their statistics are saved under
``OUT/reference_stats/`` as :class:`FeatureStats` files that other runs and models reuse. Every number is labelled
with its metric, encoder (backend and checkpoint hash) and the generator's protocol.

FID/IS use the FID Inception-v3 from local weights (``weights:``, ``$VISIONFM_INCEPTION_WEIGHTS`` or
``~/.cache/visionfm/inception/``); when there are none, the metric is reported as unavailable with the reason, and
the other metrics still run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .generation_metrics import (
    FeatureStats,
    InceptionFeatures,
    clip_score,
    find_inception_weights,
    frechet_distance_from_stats,
    inception_score,
)
from .keys import model_fingerprint
from .keys import task_key as _task_key
from .registry import register_task

logger = logging.getLogger(__name__)

METRICS = ("fd", "clip_score", "inception_score", "fid")


class GenerationPlan(torch.utils.data.Dataset):
    """The images to generate: sample ``i`` is class ``labels[i]`` with noise seed ``seed + i``.

    Items have the eval sample format (``image`` is ``None``, ``error`` is ``None``) plus ``seed``.
    """

    def __init__(self, labels: list[int], names: list[str], seed: int) -> None:
        self.labels, self.names, self.seed = labels, names, int(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "id": f"sample-{i}", "image": None, "label": self.labels[i], "captions": [self.names[i]],
                "target": None, "error": None, "seed": self.seed + i}  # fmt: skip


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text)).name if os.sep in str(text) else str(text)).strip("-")


def _metric_label(spec: dict[str, Any]) -> str:
    kind = spec["metric"]
    if kind == "fid":
        return "FID"
    label = spec.get("label") or _slug(spec["encoder"])
    return {"fd": f"FD-{label}", "clip_score": f"CLIPScore-{label}", "inception_score": f"IS-{label}"}[kind]


def _check_metrics(task: dict[str, Any]) -> list[dict[str, Any]]:
    specs = [dict(m) for m in task.get("metrics") or []]
    if not specs:
        raise ValueError(f"task {task['name']}: generation needs 'metrics' (any of {METRICS})")
    for m in specs:
        if m.get("metric") not in METRICS:
            raise ValueError(f"task {task['name']}: unknown metric {m.get('metric')!r}; metrics: {METRICS}")
        if m["metric"] != "fid" and not m.get("encoder"):
            raise ValueError(f"task {task['name']}: metric {m['metric']} needs an 'encoder'")
    labels = [_metric_label(m) for m in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"task {task['name']}: metric labels must be unique, got {labels} (set 'label:')")
    return specs


def _aux_encoder(runner: Any, name: str) -> tuple[Any, str]:
    """A metric encoder loaded once per runner, with its weights' sha256."""
    from ..foundation.loading import load_encoder

    cache = runner.__dict__.setdefault("_aux_encoders", {})
    if name not in cache:
        enc = load_encoder(name, device=runner.accelerator.device).eval()
        cache[name] = (enc, model_fingerprint(enc))
    return cache[name]


def _inception(runner: Any, spec: dict[str, Any]) -> tuple[InceptionFeatures | None, str]:
    path = find_inception_weights(spec.get("weights"))
    if path is None:
        return None, ("no local Inception weights (set weights:, $VISIONFM_INCEPTION_WEIGHTS or put "
                      "pt_inception-2015-12-05.safetensors in ~/.cache/visionfm/inception/)")  # fmt: skip
    cache = runner.__dict__.setdefault("_inception", {})
    if path not in cache:
        cache[path] = InceptionFeatures(path, allow_pickle=bool(spec.get("allow_pickle", False))).to(
            runner.accelerator.device
        )
    return cache[path], path


def _uint8_batch(images: list[Any]) -> list[torch.Tensor]:
    """uint8 ``[3, H, W]`` tensors from HWC arrays or CHW tensors."""
    out = []
    for im in images:
        t = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
        out.append(t.to(torch.uint8))
    return out


def _inception_rows(net: InceptionFeatures, images: list[torch.Tensor], device: Any) -> dict[str, torch.Tensor]:
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(i)
    pool = torch.zeros(len(images), 2048)
    logits = torch.zeros(len(images), 1008)
    for idx in by_shape.values():
        o = net(torch.stack([images[i] for i in idx]).to(device))
        pool[idx], logits[idx] = o["pool"].float().cpu(), o["logits_unbiased"].float().cpu()
    return {"pool": pool, "logits": logits}


def _feature_fn(runner: Any, specs: list[dict[str, Any]], names: list[str]):
    """``fn(images, class names) -> rows``: per-image features of every metric."""
    text_cache: dict[tuple[str, str], torch.Tensor] = {}

    def text(enc_name: str, enc: Any, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if (enc_name, p) not in text_cache]
        if missing:
            for p, e in zip(missing, enc.encode_text(missing).float().cpu()):
                text_cache[(enc_name, p)] = e
        return torch.stack([text_cache[(enc_name, p)] for p in prompts])

    def fn(images: list[Any], classes: list[str] | None) -> dict[str, torch.Tensor]:
        rows: dict[str, torch.Tensor] = {}
        for k, m in enumerate(specs):
            if m["metric"] == "fid":
                net, _ = _inception(runner, m)
                if net is not None:
                    o = _inception_rows(net, _uint8_batch(images), runner.accelerator.device)
                    rows[f"m{k}/pool"], rows[f"m{k}/logits"] = o["pool"], o["logits"]
                continue
            enc, _ = _aux_encoder(runner, m["encoder"])
            feats = enc.encode(images, batch_size=runner.batch_size, progress=False).pooled.float().cpu()
            if m["metric"] == "fd":
                rows[f"m{k}/feat"] = feats
            elif m["metric"] == "clip_score" and classes is not None:
                template = m.get("template", "a photo of a {}.")
                t = text(m["encoder"], enc, [template.format(c) for c in classes])
                rows[f"m{k}/score"] = torch.tensor(
                    [
                        clip_score(feats[i : i + 1], t[i : i + 1], scale=float(m.get("scale", 100.0)))
                        for i in range(len(images))
                    ]  # fmt: skip
                )
            elif m["metric"] == "inception_score" and classes is not None:
                template = m.get("template", "a photo of a {}.")
                t = torch.nn.functional.normalize(text(m["encoder"], enc, [template.format(c) for c in names]), dim=-1)
                rows[f"m{k}/logits"] = float(m.get("logit_scale", 100.0)) * (
                    torch.nn.functional.normalize(feats, dim=-1) @ t.T
                )
        return rows

    return fn


def _stats(rows: torch.Tensor, valid: torch.Tensor, encoder: str, protocol: dict[str, Any]) -> FeatureStats:
    st = FeatureStats(encoder=encoder, protocol=protocol)
    for lo in range(0, len(rows), 4096):  # streamed: never more than one block in float64 at once
        block = rows[lo : lo + 4096][valid[lo : lo + 4096]]
        st.update(block)
    return st


@register_task(
    "generation",
    datasets=("reference",),
    optional=("reference",),
    description="FD / FID / IS / CLIP score of generated samples",
)
def generation(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """The ``generation`` task; see the module docstring. ``runner.encoder`` must be a generator (DiT)."""
    from ..pipelines.generation import PRESETS, TEXT_PRESETS, GenerationPipeline, label_ids

    enc = runner.encoder
    if enc.info.family not in ("dit", "pixart"):
        raise ValueError(f"task {task['name']}: generation needs a DiT or PixArt generator as --model, got family "
                         f"{enc.info.family!r}")  # fmt: skip
    text = enc.info.family == "pixart"
    specs = _check_metrics(task)
    gen = GenerationPipeline(enc, batch_size=runner.batch_size)
    presets = TEXT_PRESETS if text else PRESETS
    preset = task.get("preset", "quick")
    if preset not in presets:
        raise ValueError(f"task {task['name']}: unknown preset {preset!r}; presets: {sorted(presets)}")
    steps = int(task.get("steps", presets[preset]["steps"]))
    cfg = float(task.get("guidance_scale", presets[preset]["guidance_scale"]))
    seed = int(task.get("seed", 0))
    from ..foundation.step_cache import parse_cache
    from ..pipelines.generation import _cache_protocol

    step_cache = parse_cache(task.get("cache"))
    if text:  # text-to-image: the "classes" are the prompts; CLIP score compares each image with its own prompt
        prompts = task.get("prompts")
        if not prompts or not all(isinstance(x, str) for x in prompts):
            raise ValueError(
                f"task {task['name']}: a text-to-image generator needs 'prompts': [\"a photo of ...\", ...]"
            )
        class_names, ids = list(prompts), list(range(len(prompts)))
        per = int(task.get("num_per_prompt", task.get("num_per_class", 1)))
        for m in specs:
            m.setdefault("template", "{}")
    else:
        if task.get("prompts"):
            raise ValueError(f"task {task['name']}: 'prompts' are for text-to-image generators; this one is "
                             "class-conditional: use 'classes'")  # fmt: skip
        n_classes = int(enc.transformer.config.num_embeds_ada_norm)
        id2label = getattr(enc, "id2label", {}) or {}
        classes = task.get("classes")
        ids = label_ids(classes, id2label, n_classes) if classes else sorted(id2label) or list(range(n_classes))
        per = int(task.get("num_per_class", 1))
        class_names = [id2label.get(i, str(i)).split(",")[0].strip() for i in range(n_classes)]
    plan_ids = [i for i in ids for _ in range(per)]
    if task.get("num_samples"):
        n = int(task["num_samples"])
        plan_ids = [ids[i % len(ids)] for i in range(n)]
    plan = GenerationPlan(plan_ids, [class_names[i] for i in plan_ids], seed)
    protocol = {"generator": runner.model_name, "generator_sha256": runner.fingerprint, "preset": preset,
                "kind": "text-to-image" if text else "class-conditional",
                "steps": steps, "guidance_scale": cfg, "seed": seed, "scheduler": type(enc.scheduler).__name__,
                "dtype": str(enc.dtype).removeprefix("torch."), "num_samples": len(plan), "classes": len(ids),
                "num_per_class": per if not task.get("num_samples") else None,
                "cache": _cache_protocol(step_cache, steps)}  # fmt: skip
    negative = str(task.get("negative_prompt", ""))
    if text:
        protocol.update(prompts=list(class_names), negative_prompt=negative)
    feature_fn = _feature_fn(runner, specs, class_names)
    save_dir = runner.out_dir / "samples" / _slug(task["name"]) if task.get("save_images") else None

    def gen_fn(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labs, seeds = [s["label"] for s in samples], [s["seed"] for s in samples]
        with torch.inference_mode():
            if text:
                emb, mask = enc.encode_prompts([class_names[i] for i in labs])
                neg = enc.encode_prompts([negative]) if cfg > 1 else None
                size = int(enc.transformer.config.sample_size) * int(enc.vae_scale_factor)
                latents = gen._sample_text(emb, mask, neg, seeds, steps, cfg, size, size, False, step_cache)
            else:
                latents = gen._sample(labs, seeds, steps, cfg, progress=False, step_cache=step_cache)
            images = list(gen._decode(latents))
        if save_dir is not None:
            from PIL import Image

            save_dir.mkdir(parents=True, exist_ok=True)
            for s, im in zip(samples, images):
                Image.fromarray(im).save(save_dir / f"{s['index']:06d}_{_slug(class_names[s['label']])}.png")
        rows = feature_fn(images, [class_names[i] for i in labs])
        rows["seed"] = torch.tensor(seeds)
        return rows

    key = f"generation/{runner.fingerprint[:16]}/{_task_key({k: v for k, v in task.items() if k != 'name'})}"
    fake = runner.map_chunks(key, plan, gen_fn, f"generate {task['name']}")
    fake_valid = fake["valid"]

    # reference side: features of real images, cached per metric encoder; statistics saved for reuse
    ref_name = task.get("reference")
    given = dict(task.get("reference_stats") or {})
    ref_rows: dict[str, torch.Tensor] = {}
    needs_ref = [m for m in specs if m["metric"] in ("fd", "fid") and _metric_label(m) not in given]
    ref_count = None
    if needs_ref:
        if not ref_name:
            raise ValueError(f"task {task['name']}: FD/FID need 'reference' (a dataset) or 'reference_stats'")
        ref_ds = runner.dataset(ref_name)
        ref_fn = _feature_fn(runner, needs_ref, class_names)
        fps = [(_aux_encoder(runner, m["encoder"])[1][:12] if m["metric"] == "fd" else
                str(_inception(runner, m)[1]))  for m in needs_ref]  # fmt: skip
        import hashlib

        ref_key = hashlib.sha256("|".join(fps).encode()).hexdigest()[:16]

        def ref_batch(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            return ref_fn([s["image"] for s in samples], None)

        ref = runner.map_chunks(f"reference/{ref_key}/{runner._dataset_key(ref_name)}", ref_ds, ref_batch,
                                f"reference {ref_name}")  # fmt: skip
        ref_count = int(ref["valid"].sum())
        for j, m in enumerate(needs_ref):
            ref_rows[_metric_label(m)] = (ref, j)

    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    stats_dir = runner.out_dir / "reference_stats"
    for k, m in enumerate(specs):
        label = _metric_label(m)
        info: dict[str, Any] = {"metric": m["metric"]}
        if m["metric"] == "fid":
            net, path = _inception(runner, m)
            if net is None:
                info["unavailable"] = path
                logger.warning("task %s: FID/IS skipped: %s", task["name"], path)
                details[label] = info
                continue
            info.update(backend="torch-fidelity InceptionV3 (pool 2048)", weights=path)
            enc_label, feat_key = f"inception:{Path(path).name}", f"m{k}/pool"
            feat_protocol = {"feature": "InceptionV3 pool3 (2048)", "weights": Path(path).name}
        else:
            _, fp = _aux_encoder(runner, m["encoder"])
            info.update(encoder=m["encoder"], encoder_sha256=fp, feature="Features.pooled")
            enc_label, feat_key = m["encoder"], f"m{k}/feat"
            feat_protocol = {"feature": "Features.pooled", "encoder_sha256": fp}
        if m["metric"] in ("fd", "fid"):
            # both sides carry the same feature protocol, so a mismatched saved reference is flagged
            fake_stats = _stats(fake[feat_key], fake_valid, enc_label, feat_protocol)
            if label in given:
                real_stats = FeatureStats.load(given[label])
                info["reference_stats"] = str(given[label])
            else:
                ref, j = ref_rows[label]
                rkey = f"m{j}/pool" if m["metric"] == "fid" else f"m{j}/feat"
                real_stats = _stats(ref[rkey], ref["valid"], enc_label, feat_protocol)
                path = stats_dir / f"{runner._dataset_key(ref_name)}__{_slug(label)}.safetensors"
                if runner.is_main:
                    stats_dir.mkdir(parents=True, exist_ok=True)
                    real_stats.save(path)
                info["reference_stats"] = str(path)
            metrics[label] = frechet_distance_from_stats(fake_stats, real_stats)
            info["reference_samples"] = real_stats.count
            if m["metric"] == "fid":
                splits = int(m.get("splits", 10))
                logits = fake[f"m{k}/logits"][fake_valid]
                metrics["IS"], metrics["IS_std"] = inception_score(logits, splits=min(splits, max(1, len(logits))))
                details["IS"] = {"metric": "inception_score", "backend": info["backend"], "splits": splits}
        elif m["metric"] == "clip_score":
            metrics[label] = float(fake[f"m{k}/score"][fake_valid].mean())
            info.update(template=m.get("template", "a photo of a {}."), scale=float(m.get("scale", 100.0)))
        elif m["metric"] == "inception_score":
            splits = int(m.get("splits", 10))
            logits = fake[f"m{k}/logits"][fake_valid]
            metrics[label], metrics[f"{label}_std"] = inception_score(logits, splits=min(splits, max(1, len(logits))))
            info.update(classifier=f"zero-shot over {len(class_names)} class prompts",
                        template=m.get("template", "a photo of a {}."), splits=splits)  # fmt: skip
        details[label] = info
    return {
        "task": "generation",
        "dataset": ref_name,
        "metrics": metrics,
        "samples": int(fake_valid.sum()),
        "skipped": int((~fake_valid).sum()),
        "reference_samples": ref_count,
        "protocol": {**protocol, "metrics": details},
    }
