"""Train a small class-conditional DiT from scratch (recipe task ``dit``), with the shared training loop.

The model is diffusers' ``DiTTransformer2DModel`` trained with DDPM's noise-prediction loss
``|| eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y) ||^2`` on uniformly drawn timesteps, with
the class label dropped to the null class 10% of the time (DiT's ``class_dropout_prob``) so that
classifier-free guidance works. In pixel space (``in_channels: 3``, no VAE) the image itself, in [-1, 1], is
the "latent"; the output directory is then a pixel-space DiT pipeline (:func:`visionfm.foundation.dit.save_pixel_dit`)
that ``load_encoder`` and ``pipeline("generation")`` read.

Recipe (``recipes/dit_toyworld.yaml``)::

    task: dit
    model: {sample_size: 64, patch_size: 8, num_layers: 6, num_attention_heads: 4, attention_head_dim: 32}
    data: {source: toyworld, split: train, num: 20000, label: colour_shape, ...}   # or any eval data source
    scheduler: {num_train_timesteps: 1000, beta_schedule: linear}
    train: {...}                                                                 # TrainConfig
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .loop import TrainConfig, Trainer
from .registry import register_task

logger = logging.getLogger(__name__)

#: DiTTransformer2DModel arguments the recipe's ``model:`` may set, with the defaults used here.
MODEL_DEFAULTS: dict[str, Any] = {
    "sample_size": 64,
    "patch_size": 8,
    "num_layers": 6,
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "in_channels": 3,
    "learn_sigma": False,
}


class LabelledImages(Dataset):
    """``(pixels [3, S, S] float in [-1, 1], class id)`` pairs from a dataset source (see ``visionfm.data.datasets``).

    Samples that cannot be read raise, so the training loop skips and counts them. Random horizontal flips
    (``hflip``) are drawn from ``(seed, index, epoch)``.
    """

    def __init__(self, ds: Any, size: int, *, hflip: bool = False, seed: int = 0) -> None:
        self.ds, self.size, self.hflip, self.seed, self.epoch = ds, int(size), bool(hflip), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.ds[i]
        if s["image"] is None:
            raise ValueError(f"unreadable sample {s['id']}: {s['error']}")
        if s["label"] < 0:
            raise ValueError(f"sample {s['id']} has no class label (a class-conditional DiT needs one)")
        x = s["image"].float()[None]
        if x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", antialias=True)
        x = (x[0] / 127.5 - 1.0).clamp(-1, 1)
        if self.hflip and np.random.default_rng([self.seed, i, self.epoch]).random() < 0.5:
            x = x.flip(-1)
        return x, int(s["label"])


def build_transformer(model_cfg: dict[str, Any], num_classes: int) -> torch.nn.Module:
    """A ``DiTTransformer2DModel`` from the recipe's ``model:`` section (see :data:`MODEL_DEFAULTS`)."""
    from diffusers import DiTTransformer2DModel

    cfg = {**MODEL_DEFAULTS, **model_cfg}
    unknown = sorted(set(cfg) - set(MODEL_DEFAULTS) - {"dropout", "norm_num_groups"})
    if unknown:
        raise ValueError(f"unknown dit model option(s) {unknown}; valid: {sorted(MODEL_DEFAULTS)}")
    learn_sigma = bool(cfg.pop("learn_sigma"))
    c = int(cfg["in_channels"])
    return DiTTransformer2DModel(
        **cfg, out_channels=2 * c if learn_sigma else c, num_embeds_ada_norm=num_classes, norm_type="ada_norm_zero"
    )


@register_task("dit")
def run(recipe: dict[str, Any]) -> Path:
    """Train a class-conditional pixel-space DiT; returns the pipeline directory (``output_dir/pipeline``)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from ..data.datasets import build_dataset
    from ..foundation.dit import save_pixel_dit

    model_cfg = dict(recipe.get("model", {}))
    data_cfg = dict(recipe["data"])
    hflip = bool(data_cfg.pop("hflip", False))
    sched_cfg = {"num_train_timesteps": 1000, "beta_schedule": "linear", **dict(recipe.get("scheduler", {}))}
    train_cfg = TrainConfig.from_dict(dict(recipe["train"]))
    if int(model_cfg.get("in_channels", 3)) != 3:
        raise ValueError("the dit task trains pixel-space DiTs: model.in_channels must be 3")
    ds = build_dataset("train", data_cfg)
    names = list(ds.classnames)
    if not names:
        raise ValueError("dit: the training data has no class names (set data.label or data.classnames)")
    torch.manual_seed(train_cfg.seed)
    model = build_transformer(model_cfg, len(names))
    size = int(model.config.sample_size)
    noise_sched = DDPMScheduler(**sched_cfg)
    abar = noise_sched.alphas_cumprod.clone()
    n_t = int(sched_cfg["num_train_timesteps"])
    c = int(model.config.in_channels)
    data = LabelledImages(ds, size, hflip=hflip, seed=train_cfg.seed)

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x0, y = batch
        t = torch.randint(0, n_t, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a = abar.to(x0.device)[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = m(xt, timestep=t, class_labels=y).sample[:, :c]
        loss = torch.nn.functional.mse_loss(pred.float(), eps.float())
        return loss, {}

    trainer = Trainer(model, loss_fn, data, train_cfg)
    last = trainer.fit()
    out = Path(train_cfg.output_dir) / "pipeline"
    if trainer.accelerator.is_main_process:
        net = trainer.unwrapped_model().eval()
        sampler = DDIMScheduler(**sched_cfg, clip_sample=False)
        save_pixel_dit(out, net, sampler, dict(enumerate(names)))
        (Path(train_cfg.output_dir) / "train_summary.json").write_text(
            json.dumps({"recipe": recipe, "last_metrics": last}, indent=2, default=str)
        )
        logger.info("wrote pixel-space DiT pipeline to %s", out)
    trainer.accelerator.wait_for_everyone()
    return out
