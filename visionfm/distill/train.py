"""Recipe task ``distill``: one student ViT from several teachers, AM-RADIO / Theia style.

```yaml
task: distill
teachers:                                  # name -> teacher; each gets an adaptor head on the student
  clip: {model: toyworld-clip, kind: clip, dense_mode: maskclip}   # summary: pooled (joint space); patches: dense CLIP
  dino: {model: dinov2-small, kind: dino}                          # summary: pooled; patches: Features.patches
student: {image_size: 64, patch_size: 8, width: 96, depth: 4, heads: 3, adaptor_hidden: 256}
loss: {summary: 1.0, patch_cosine: 0.9, patch_smooth_l1: 0.1}
data: {source: toyworld, split: train, num: 20000, min_objects: 1, max_objects: 2}
augment: {seeds: 1, hflip: true}           # augmentation seed of epoch e is e % seeds: with 1, every epoch hits the cache
cache: runs/distill/teacher_cache          # default: OUTPUT_DIR/teacher_cache
train: {output_dir: runs/distill, max_steps: 2000, batch_size: 128, lr: 1e-3, ...}
```
Per batch: teacher outputs come from the :class:`~visionfm.distill.cache.TeacherCache` (computed on a miss only),
teacher patch grids are resized bilinearly to the student's grid (per-teacher feature standardisation is not
implemented yet), and the loss is, per teacher,
``w_s (1 - cos(summary)) + w_c mean(1 - cos(patch)) + w_l smooth_l1(patch)``.
The run directory is a loadable student (``visionfm.load_encoder(OUTPUT_DIR)``, family ``student``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..training.loop import TrainConfig, Trainer

logger = logging.getLogger(__name__)


class AugmentedImages(Dataset):
    """``(uint8 image [3, S, S], sample id, augmentation seed)`` from an eval dataset; the seed of epoch ``e`` is
    ``e % seeds``, and the augmentation (horizontal flip) is a pure function of ``(id, seed)``."""

    def __init__(self, ds: Any, size: int, *, seeds: int = 1, hflip: bool = True) -> None:
        self.ds, self.size, self.seeds, self.hflip = ds, int(size), max(1, int(seeds)), bool(hflip)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        s = self.ds[i]
        if s["image"] is None:
            raise ValueError(f"sample {s['id']}: {s['error']}")
        seed = self.epoch % self.seeds
        img = s["image"]
        if tuple(img.shape[-2:]) != (self.size, self.size):
            img = F.interpolate(img[None].float(), (self.size, self.size), mode="bilinear", antialias=True,
                                align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)  # fmt: skip
        if self.hflip and np.random.default_rng([seed, i]).random() < 0.5:
            img = img.flip(-1)
        return img, s["id"], seed


def _normalise(enc: Any, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 images ``[B, 3, H, W]`` → ``enc``'s normalised input, resized to ``size`` first when given."""
    x = images.float() / 255
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)
    return enc.normalize(x)


def teacher_fn(enc: Any, kind: str, dense_mode: str = "maskclip") -> Any:
    """``images uint8 [B, 3, H, W] -> {"summary": [B, D], "patches": [B, h, w, P]}`` for one frozen teacher."""

    @torch.inference_mode()
    def fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = _normalise(enc, images, tuple(enc.info.image_size))
        feats = enc(x)
        if kind == "clip":
            from ..foundation.dense import dense_features

            patches = dense_features(enc, x, dense_mode)
        else:
            patches = feats.patches
        return {"summary": feats.pooled.float().cpu(), "patches": patches.float().cpu()}

    return fn


def distill_loss(
    s_summary: torch.Tensor | None, s_patches: torch.Tensor, t_summary: torch.Tensor, t_patches: torch.Tensor,
    *, w_summary: float = 1.0, w_cos: float = 0.9, w_l1: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """One teacher's loss: summary cosine + patch cosine and smooth-L1 on the student grid.

    Args:
        s_summary, t_summary: ``[B, D]``.
        s_patches: ``[B, h, w, P]`` (student grid); t_patches: ``[B, h', w', P]`` (resized to ``h, w`` here).
    """
    if tuple(t_patches.shape[1:3]) != tuple(s_patches.shape[1:3]):
        t_patches = F.interpolate(t_patches.permute(0, 3, 1, 2), s_patches.shape[1:3], mode="bilinear",
                                  align_corners=False).permute(0, 2, 3, 1)  # fmt: skip
    cos_s = (
        F.cosine_similarity(s_summary.float(), t_summary.float(), dim=-1).mean()
        if s_summary is not None
        else torch.ones((), device=s_patches.device)  # teachers without a summary (SAM): patch losses only
    )
    cos_p = F.cosine_similarity(s_patches.float(), t_patches.float(), dim=-1).mean()
    l1 = F.smooth_l1_loss(s_patches.float(), t_patches.float())
    loss = (w_summary * (1 - cos_s) if s_summary is not None else 0.0) + w_cos * (1 - cos_p) + w_l1 * l1
    return loss, {
        "summary_cos": float(cos_s.detach()),
        "patch_cos": float(cos_p.detach()),
        "patch_l1": float(l1.detach()),
    }


def run(recipe: dict[str, Any]) -> Path:
    """Distil the recipe's teachers into a student; returns the student directory (the run's output_dir)."""
    from ..data.datasets import build_dataset
    from ..foundation.loading import load_encoder
    from ..foundation.student import AdaptorConfig, StudentConfig, build_student, save_student
    from .cache import TeacherCache, cached_forward

    teachers_cfg = dict(recipe.get("teachers") or {})
    if not teachers_cfg:
        raise ValueError("a distill recipe needs 'teachers': {name: {model, kind}}")
    cfg = TrainConfig.from_dict(dict(recipe["train"]))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output_dir)
    scfg = dict(recipe.get("student") or {})
    hidden = int(scfg.pop("adaptor_hidden", 256))
    teachers, fns, adaptors, text_from = {}, {}, {}, None
    for name, t in teachers_cfg.items():
        kind = t.get("kind", "generic")
        model_name = str(t["model"])
        enc = load_encoder(model_name, device="cpu").eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        teachers[name] = enc
        fns[name] = teacher_fn(enc, kind, t.get("dense_mode", "maskclip"))
        probe = fns[name](torch.zeros(1, 3, *enc.info.image_size, dtype=torch.uint8))
        summary_dim = 0 if kind == "sam" else int(probe["summary"].shape[-1])  # SAM has no summary embedding
        adaptors[name] = AdaptorConfig(summary_dim=summary_dim, patch_dim=int(probe["patches"].shape[-1]),
                                       hidden=hidden, kind=kind)  # fmt: skip
        if kind == "clip" and text_from is None:
            text_from = str(t["model"])
    student_cfg = StudentConfig(**scfg, adaptors=adaptors, text_from=text_from)
    student = build_student(student_cfg)
    data = build_dataset("train", dict(recipe["data"]))
    aug = dict(recipe.get("augment") or {})
    images = AugmentedImages(
        data, student_cfg.image_size, seeds=int(aug.get("seeds", 1)), hflip=bool(aug.get("hflip", True))
    )
    cache_root = Path(recipe.get("cache") or out / "teacher_cache")
    caches = {name: TeacherCache(cache_root, name) for name in teachers}
    lw = dict(recipe.get("loss") or {})
    w = dict(w_summary=float(lw.get("summary", 1.0)), w_cos=float(lw.get("patch_cosine", 0.9)),
             w_l1=float(lw.get("patch_smooth_l1", 0.1)))  # fmt: skip
    teacher_rows = {"computed": 0}

    def loss_fn(m: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        imgs, ids, seeds = batch
        seeds_l = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
        x = _normalise(m, imgs)
        total, logs = 0.0, {}
        for name in teachers:
            before = caches[name].stats.get("misses", 0)
            t = cached_forward(caches[name], fns[name], imgs.cpu(), list(ids), seeds_l)
            teacher_rows["computed"] += caches[name].stats.get("misses", 0) - before
            s_sum, s_pat = m.adaptor(x, name)
            dev = s_pat.device
            loss, lg = distill_loss(s_sum, s_pat, t["summary"].to(dev), t["patches"].to(dev), **w)
            total = total + loss
            logs.update({f"{name}/{k}": v for k, v in lg.items()})
        logs["teacher_rows_computed"] = float(teacher_rows["computed"])
        return total, logs

    trainer = Trainer(student, loss_fn, images, cfg)
    last = trainer.fit()
    for c in caches.values():
        c.flush()
    if trainer.accelerator.is_main_process:
        save_student(trainer.unwrapped_model(), out)
        (out / "distill_summary.json").write_text(json.dumps(
            {"recipe": recipe, "last_metrics": last, "teacher_rows_computed": teacher_rows["computed"]}, indent=1,
            default=str))  # fmt: skip
    return out
