"""Generation on toyworld: is a toyworld DiT's output closer to real scenes than noise and than an untrained DiT?

``python -m visionfm.eval.toyworld_generation --model runs/dit_toyworld/pipeline --out runs/toyworld_generation``
(train the model first: ``visionfm train recipes/dit_toyworld.yaml``; the toy CLIP comes from ``visionfm demo``).

It runs the shipped ``toyworld-generation`` suite (FD-toyCLIP, CLIP score and a zero-shot IS against 1000 real
test-split scenes) on three generators and two image sets, all scored against the same saved reference statistics:

- the trained DiT;
- the same architecture untrained (its random initialisation, seed 0), saved as a pipeline and run the same way;
- uniform noise images, and real scenes from another seed of the test split (the floor: what a perfect model
  would get with this many samples).

It writes ``summary.json``, ``summary.md`` and ``samples.png`` (two samples of each class, with the seeds the suite
uses) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def untrained_copy(model_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Save the trained pipeline's architecture with a fresh random initialisation (seeded) as a pipeline."""
    import torch
    from diffusers import DiTTransformer2DModel

    from ..foundation.dit import _load_scheduler, save_pixel_dit

    model_dir = Path(model_dir)
    cfg = DiTTransformer2DModel.load_config(str(model_dir / "transformer"))
    torch.manual_seed(seed)
    tr = DiTTransformer2DModel.from_config(cfg)
    index = json.loads((model_dir / "model_index.json").read_text())
    names = {int(k): v for k, v in (index.get("id2label") or {}).items()}
    return save_pixel_dit(out, tr, _load_scheduler(model_dir), names)


def _image_set_fd(images: list[np.ndarray], encoder: str, stats_path: Path) -> float:
    """FD-<encoder> of an image set against saved reference statistics."""
    from ..foundation.loading import load_encoder
    from .generation_metrics import FeatureStats, encoder_features, frechet_distance_from_stats
    from .runner import model_fingerprint

    enc = load_encoder(encoder, device="cpu")
    ref = FeatureStats.load(stats_path)
    st = FeatureStats(
        encoder=encoder, protocol={"feature": "Features.pooled", "encoder_sha256": model_fingerprint(enc)}
    )
    st.update(encoder_features(enc, images, batch_size=128, progress=False))
    return frechet_distance_from_stats(st, ref)


def run(model: str, out: str | Path, *, num_per_class: int = 20, batch_size: int = 64) -> dict[str, Any]:
    """Evaluate ``model`` and the baselines; write the summary files; return the summary dict."""
    from ..data.toyworld import ToyWorld
    from ..pipelines import pipeline
    from .runner import Runner
    from .suite import load_suite

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    suite = load_suite("toyworld-generation", overrides={"set": [f"tasks.generation.num_per_class={num_per_class}"]})
    task = suite.tasks[0]
    rows: dict[str, dict[str, Any]] = {}
    for name, gen_dir in (("trained DiT", model), ("untrained DiT", str(untrained_copy(model, out / "untrained")))):
        logger.info("evaluating %s (%s)", name, gen_dir)
        res = Runner(suite, gen_dir, out / "eval", batch_size=batch_size, chunk_size=240).run()["results"][0]
        rows[name] = dict(res["metrics"], samples=res["samples"])
        stats_path = Path(res["protocol"]["metrics"]["FD-toyCLIP"]["reference_stats"])
    n = len(task["classes"]) * num_per_class
    ref_spec = suite.datasets[task["reference"]]
    rng = np.random.default_rng(0)
    size = int(ref_spec.get("image_size", 64))
    noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    other = ToyWorld("test", n, image_size=size, seed=int(ref_spec["seed"]) + 1, min_objects=1, max_objects=1)
    real = [other[i].image for i in range(n)]
    encoder = next(m["encoder"] for m in task["metrics"] if m["metric"] == "fd")
    rows["uniform noise"] = {"FD-toyCLIP": _image_set_fd(noise, encoder, stats_path), "samples": n}
    rows["real scenes (floor)"] = {"FD-toyCLIP": _image_set_fd(real, encoder, stats_path), "samples": n}

    gen = pipeline("generation", model=model, batch_size=batch_size)
    sheet = gen(labels=list(task["classes"]), num_images_per_label=2, steps=int(task["steps"]),
                guidance_scale=float(task["guidance_scale"]), seed=0, progress=False)  # fmt: skip
    sheet.grid(cols=10).save(out / "samples.png")
    summary = {"model": model, "suite": "toyworld-generation", "num_per_class": num_per_class,
               "protocol": {k: task[k] for k in ("steps", "guidance_scale", "seed")}, "rows": rows}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = ["| images | FD-toyCLIP ↓ | CLIP score ↑ | IS-toyCLIP ↑ | samples |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        cs, is_ = r.get("CLIPScore-toyCLIP"), r.get("IS-toyCLIP")
        lines.append(f"| {name} | {r['FD-toyCLIP']:.1f} | {'' if cs is None else f'{cs:.2f}'} | "
                     f"{'' if is_ is None else f'{is_:.2f}'} | {r['samples']} |")  # fmt: skip
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    logger.info("\n%s", "\n".join(lines))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="runs/dit_toyworld/pipeline")
    p.add_argument("--out", default="runs/toyworld_generation")
    p.add_argument("--num-per-class", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args.model, args.out, num_per_class=args.num_per_class, batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
