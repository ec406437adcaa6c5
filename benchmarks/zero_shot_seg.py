"""Zero-shot segmentation throughput, and grounding vs transformers' ``zero-shot-object-detection`` pipeline.

1. **zero-shot-seg**: images/s of ``pipeline("zero-shot-seg")`` per dense mode at a 448-pixel short side
   (224 window, stride 112: 3 × 5 windows for a 4:3 image) with an open_clip CLIP of ViT-B/16's architecture
   and random weights (no hub here; speed does not depend on the values), 10 labels, one template.
2. **grounding**: ``pipeline("grounding", model=<OWLv2 checkpoint>)`` against transformers'
   ``pipeline("zero-shot-object-detection")`` on the same OWLv2-shaped weights (ViT-B/16 vision tower at
   960 px, random init), the same images and 10 phrases. transformers' pipeline runs the whole model once per
   phrase; ours encodes each image once and scores all phrases against it. Both return boxes for every
   phrase; the script checks that both sides find the same number of boxes above the threshold.

Run: ``python benchmarks/zero_shot_seg.py [--images 4] [--out benchmarks/results]`` (CPU, ~10 min on 2 cores).
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

PHRASES = ["a cat", "a dog", "an astronaut", "a cup of coffee", "a rocket", "a flag", "a plant", "a bowl",
           "a spoon", "a face"]  # fmt: skip


def make_images(n: int) -> list[np.ndarray]:
    """``n`` real photos (scikit-image), 4:3 crops."""
    import skimage.data as d

    base = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket()]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        h, w = img.shape[:2]
        side = min(h, 3 * w // 4)
        out.append(np.ascontiguousarray(img[:side, : 4 * side // 3]))
    return out


def seg_throughput(images: list[np.ndarray], modes: list[str], root: Path) -> list[dict]:
    """Images/s of zero-shot-seg per mode with a ViT-B/16-shaped open_clip CLIP."""
    import open_clip

    import visionfm as vfm
    from visionfm.foundation.clip import OpenClipEncoder
    from visionfm.foundation.preprocess import PreprocessConfig
    from visionfm.pipelines.zero_shot_seg import window_grid

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-16")
    pp = PreprocessConfig.from_open_clip(
        dict(size=224, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)
    )
    enc = OpenClipEncoder(model, tok, pp, "ViT-B-16 (random)")
    out = []
    for mode in modes:
        kw = dict(proxy=str(_dinov2_base(root))) if mode == "proxy" else {}
        seg = vfm.pipeline(
            "zero-shot-seg", model=enc, mode=mode, templates="single", short_side=448, batch_size=16, **kw
        )
        seg(images[0], labels=PHRASES)  # warm-up, text cached
        t0 = time.perf_counter()
        res = seg(images, labels=PHRASES)
        dt = time.perf_counter() - t0
        windows = len(window_grid(tuple(res[0].probs.shape[-2:]), 224, 112))
        out.append(dict(mode=mode, images=len(images), seconds=round(dt, 2), images_per_s=round(len(images) / dt, 3),
                        windows_per_image=windows))  # fmt: skip
        print(f"zero-shot-seg {mode}: {out[-1]['images_per_s']} img/s", flush=True)
    return out


def _dinov2_base(root: Path) -> Path:
    """A DINOv2-B/14-shaped random checkpoint (proxy for mode='proxy')."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = root / "dinov2-base-random"
    if not path.exists():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, image_size=518,
                                 patch_size=14)).save_pretrained(path)  # fmt: skip
        BitImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                          image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)  # fmt: skip
    return path


def owlv2_base(root: Path) -> Path:
    """An OWLv2 checkpoint with owlv2-base-patch16's architecture (960 px, ViT-B/16) and random weights."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    from visionfm.foundation.clip import write_clip_tokenizer_files

    path = root / "owlv2-base-random"
    torch.manual_seed(0)
    cfg = Owlv2Config(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=960, patch_size=16),
        projection_dim=512,
    )  # fmt: skip
    Owlv2ForObjectDetection(cfg).save_pretrained(path)
    write_clip_tokenizer_files(path)
    from transformers import CLIPTokenizer

    proc = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                          tokenizer=CLIPTokenizer.from_pretrained(path))  # fmt: skip
    proc.save_pretrained(path)
    return path


def grounding_vs_transformers(images: list[np.ndarray], path: Path, threshold: float, device: str = "cpu") -> dict:
    """Seconds for ``len(images)`` images × 10 phrases: ours vs transformers' pipeline, same weights."""
    from PIL import Image
    from transformers import pipeline as hf_pipeline

    import visionfm as vfm

    # no NMS on our side: transformers' pipeline has none, and the outputs are compared box for box
    ours = vfm.pipeline("grounding", model=str(path), device=device, batch_size=1, nms_thresh=1.0)
    ref = hf_pipeline("zero-shot-object-detection", model=str(path), device=device)
    pil = [Image.fromarray(im) for im in images]
    ours(images[0], phrases=PHRASES[:2], threshold=threshold)  # warm-up
    ref(pil[0], candidate_labels=PHRASES[:2], threshold=threshold)
    t0 = time.perf_counter()
    got = ours(images, phrases=PHRASES, threshold=threshold)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = [ref(im, candidate_labels=PHRASES, threshold=threshold) for im in pil]
    t_ref = time.perf_counter() - t0
    n_ours, n_ref = sum(len(r) for r in got), sum(len(w) for w in want)
    diff = max(
        float(np.abs(np.sort(r.scores.numpy()) - np.sort([d["score"] for d in w])).max()) if len(r) == len(w) else 1.0
        for r, w in zip(got, want)
    )
    print(f"grounding: ours {t_ours:.1f}s, transformers {t_ref:.1f}s, {t_ref / t_ours:.1f}x; boxes {n_ours} vs {n_ref}, "
          f"max score difference {diff:.1e}")  # fmt: skip
    return dict(images=len(images), phrases=len(PHRASES), threshold=threshold, ours_s=round(t_ours, 2),
                transformers_s=round(t_ref, 2), speedup=round(t_ref / t_ours, 2), boxes_ours=n_ours,
                boxes_transformers=n_ref, max_score_difference=diff)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--modes", default="vanilla,maskclip,sclip,clearclip,naclip,proxy")
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--skip-grounding", action="store_true")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    images = make_images(args.images)
    report: dict = dict(machine=dict(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(),
                                     torch=torch.__version__, python=platform.python_version()))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report["zero_shot_seg"] = seg_throughput(images, args.modes.split(","), root)
        if not args.skip_grounding:
            report["grounding"] = grounding_vs_transformers(images, owlv2_base(root), args.threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zero_shot_seg.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'zero_shot_seg.json'}")


if __name__ == "__main__":
    main()
