"""Generation on toyworld: is a toyworld DiT's output closer to real scenes than noise and than an untrained DiT?

``visionfm eval toyworld-generation --model runs/dit_toyworld/pipeline --out runs/toyworld_generation`` (train the
model first: ``visionfm train recipes/dit_toyworld.yaml``; the toy CLIP comes from ``visionfm demo``).

The suite's ``generation`` task scores the trained DiT (FD-toyCLIP, CLIP score and a zero-shot IS against 1000 real
test-split scenes). Its ``toyworld_generation_baselines`` task (:func:`baselines_task`) scores, against the same
reference statistics:

- the same architecture untrained (its random initialisation, seed 0), saved as a pipeline and run through the same
  generation task;
- uniform noise images, and real scenes from another seed of the test split (the floor: what a perfect model would
  get with this many samples).

It also writes ``samples.png`` (two samples of each class of the trained model, with the seeds the suite uses) to the
run's output folder.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.generation_metrics import FeatureStats, encoder_features, frechet_distance_from_stats
from ..eval.keys import model_fingerprint
from ..eval.runner import Runner
from ..eval.suite import Suite
from ..eval.tasks import run_task
from ..foundation.diffusion import load_scheduler
from ..foundation.dit import save_pixel_dit
from ..foundation.loading import load_encoder
from ..pipelines.base import pipeline
from .world import ToyWorld

logger = logging.getLogger(__name__)


def untrained_copy(model_dir: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Save the trained pipeline's architecture with a fresh random initialisation (seeded) as a pipeline."""
    import torch
    from diffusers import DiTTransformer2DModel

    model_dir = Path(model_dir)
    cfg = DiTTransformer2DModel.load_config(str(model_dir / "transformer"))
    torch.manual_seed(seed)
    tr = DiTTransformer2DModel.from_config(cfg)
    index = json.loads((model_dir / "model_index.json").read_text())
    names = {int(k): v for k, v in (index.get("id2label") or {}).items()}
    return save_pixel_dit(out, tr, load_scheduler(model_dir), names)


def _image_set_fd(images: list[np.ndarray], encoder: str, stats_path: Path) -> float:
    """FD-<encoder> of an image set against saved reference statistics."""
    enc = load_encoder(encoder, device="cpu")
    ref = FeatureStats.load(stats_path)
    st = FeatureStats(
        encoder=encoder, protocol={"feature": "Features.pooled", "encoder_sha256": model_fingerprint(enc)}
    )
    st.update(encoder_features(enc, images, batch_size=128, progress=False))
    return frechet_distance_from_stats(st, ref)


def baselines_task(runner: Any, task: dict[str, Any]) -> dict[str, Any]:
    """The ``toyworld_generation_baselines`` eval task (see the module docstring).

    Task keys: ``generation`` (the name of the suite's generation task whose settings and metrics are reused;
    default ``"generation"``), ``reference`` (its reference dataset), ``untrained_seed`` (default 0),
    ``samples_png`` (default true). Metrics: ``"<metric> untrained DiT"`` for every metric of the generation task,
    and ``"FD-<label> uniform noise"`` / ``"FD-<label> real scenes (floor)"`` for its first FD metric.
    """
    gen_name = task.get("generation", "generation")
    gen = next((t for t in runner.suite.tasks if t["name"] == gen_name), None)
    if gen is None or gen["task"] != "generation":
        raise ValueError(f"task {task['name']}: the suite has no generation task named {gen_name!r}")
    model_dir = Path(runner.model_name)
    if not (model_dir / "model_index.json").is_file():
        raise ValueError(f"task {task['name']}: the model must be a DiT pipeline directory, got {runner.model_name!r}")
    out = runner.out_dir
    untrained = untrained_copy(model_dir, out / "untrained_dit", seed=int(task.get("untrained_seed", 0)))
    twin = Runner(Suite(runner.suite.name, runner.suite.datasets, [copy.deepcopy(gen)], root=runner.suite.root),
                  untrained, out, batch_size=runner.batch_size, chunk_size=runner.chunk_size,
                  accelerator=runner.accelerator)  # fmt: skip
    res = run_task(twin, gen)
    metrics = {f"{k} untrained DiT": v for k, v in res["metrics"].items()}
    fd = next((m for m in gen.get("metrics", []) if m.get("metric") == "fd"), None)
    n = res["samples"]
    if fd is not None and runner.is_main:
        label = f"FD-{fd.get('label') or fd['encoder']}"
        stats_path = Path(res["protocol"]["metrics"][label]["reference_stats"])
        ref_spec = runner.suite.datasets[task.get("reference", gen["reference"])]
        size = int(ref_spec.get("image_size", 64))
        rng = np.random.default_rng(0)
        noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        other = ToyWorld("test", n, image_size=size, seed=int(ref_spec["seed"]) + 1, min_objects=1, max_objects=1)
        real = [other[i].image for i in range(n)]
        metrics[f"{label} uniform noise"] = _image_set_fd(noise, fd["encoder"], stats_path)
        metrics[f"{label} real scenes (floor)"] = _image_set_fd(real, fd["encoder"], stats_path)
    if task.get("samples_png", True) and runner.is_main and gen.get("classes"):
        sheet = pipeline("generation", model=str(model_dir), batch_size=runner.batch_size)(
            labels=list(gen["classes"]), num_images_per_label=2, steps=int(gen.get("steps", 25)),
            guidance_scale=float(gen.get("guidance_scale", 2.0)), seed=int(gen.get("seed", 0)), progress=False,
        )  # fmt: skip
        sheet.grid(cols=10).save(out / "samples.png")
    protocol = {"generation_task": gen_name, "untrained": str(untrained), "untrained_protocol": res["protocol"],
                "noise": "uniform uint8, numpy default_rng(0)", "floor": "toyworld test split, reference seed + 1"}  # fmt: skip
    return {"task": task["task"], "dataset": gen.get("reference", "-"), "metrics": metrics, "samples": n,
            "skipped": res.get("skipped", 0), "protocol": protocol}  # fmt: skip
