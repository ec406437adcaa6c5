"""Zero-shot classification: visionfm's pipeline vs transformers' ``zero-shot-image-classification``.

Same weights, same process, same images and labels (64 images x 100 ImageNet class names, one template,
CPU). transformers' pipeline embeds every label's prompt again for every image; ours embeds the label set
once and keeps it. Two sizes: the tiny test CLIP, and a CLIP with ViT-B/16's architecture and random
weights (no hub here; speed does not depend on the values).

transformers' pipeline is run with its default ``batch_size=1`` (text re-encoded for every image) and with
``batch_size=8`` (text encoded once per batch of 8 images). For the ViT-B/16 size transformers is timed on ``--ref-images`` images (default 8) and its time scaled
linearly to 64 — its cost per image is constant (one image forward plus all label prompts), which the
script checks by timing the first and second halves separately.

Run: python benchmarks/zero_shot_classification.py [--sizes tiny vit-b-16] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(n: int) -> list[np.ndarray]:
    import skimage.data as d

    base = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        out.append(np.ascontiguousarray(img[y : y + 3 * h // 4, x : x + 3 * w // 4]))
    return out


def checkpoint(size: str, root: Path) -> Path:
    from visionfm.foundation.clip import write_clip_tokenizer_files
    from visionfm.testing import tiny_checkpoint

    if size == "tiny":
        return tiny_checkpoint("clip", "transformers")
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        projection_dim=512,
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        text_config=dict(
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
    )
    path = root / "clip-vit-b-16-random"
    CLIPModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(path)
    write_clip_tokenizer_files(path)
    return path


def run(size: str, root: Path, n_images: int, n_ref: int, ref_batch: int, device: str = "cpu") -> dict:
    import open_clip.zero_shot_metadata as meta
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    import visionfm as vfm

    path = checkpoint(size, root)
    images = make_images(n_images)
    labels = list(meta.IMAGENET_CLASSNAMES[:100])
    template = "This is a photo of {}."
    ours = vfm.pipeline("zero-shot-classification", model=str(path), device=device, templates=template, batch_size=32)
    ref = hf_pipeline("zero-shot-image-classification", model=str(path), device=device)
    pil = [Image.fromarray(x) for x in images]
    # warm-up (allocations, lazy imports) on one image, outside the timings
    ours(images[:1], labels=labels[:2], templates="a {}")
    ref(pil[:1], candidate_labels=labels[:2])

    t0 = time.perf_counter()
    got = ours(images, labels=labels)  # cold label cache: includes the one text pass
    t_ours = time.perf_counter() - t0

    n_ref = n_images if size == "tiny" else min(n_ref, n_images)
    half = max(1, n_ref // 2)
    t0 = time.perf_counter()
    want = ref(pil[:half], candidate_labels=labels, hypothesis_template=template, batch_size=ref_batch)
    t_half1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    want += ref(pil[half:n_ref], candidate_labels=labels, hypothesis_template=template, batch_size=ref_batch)
    t_half2 = time.perf_counter() - t0
    t_ref = (t_half1 + t_half2) * n_images / n_ref

    diff = 0.0
    for g, w in zip(got, want):
        gs = {d["label"]: d["score"] for d in g}
        diff = max(diff, max(abs(gs[d["label"]] - d["score"]) for d in w))
    return {
        "size": size,
        "images": n_images,
        "labels": len(labels),
        "ours_s": round(t_ours, 3),
        "transformers_s": round(t_ref, 3),
        "transformers_timed_images": n_ref,
        "transformers_batch_size": ref_batch,
        "transformers_halves_s": [round(t_half1, 3), round(t_half2, 3)],
        "speedup": round(t_ref / t_ours, 1),
        "max_prob_diff": diff,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "vit-b-16"], choices=["tiny", "vit-b-16"])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--ref-images", type=int, default=8)
    p.add_argument("--ref-batch-sizes", type=int, nargs="+", default=[1, 8], help="transformers pipeline batch_size")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for rb in args.ref_batch_sizes:
                rows.append(run(size, Path(tmp), args.images, args.ref_images, rb))
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero_shot_classification.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=1))
    print(
        "\n| size | images x labels | visionfm (s) | transformers (s) | transformers batch_size | speed-up | max prob diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        note = (
            ""
            if r["transformers_timed_images"] == r["images"]
            else f" (timed on {r['transformers_timed_images']}, scaled)"
        )
        print(
            f"| {r['size']} | {r['images']} x {r['labels']} | {r['ours_s']} | {r['transformers_s']}{note} | {r['transformers_batch_size']} | {r['speedup']}x | {r['max_prob_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
