"""Contrastive (CLIP) pretraining of an open_clip architecture on toyworld captions.

The output directory is an open_clip checkpoint (``open_clip_config.json`` +
``open_clip_model.safetensors``) that ``visionfm.load_encoder(path)`` loads like any other CLIP.
The text side uses the real open_clip BPE tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..foundation.clip import OPENAI_MEAN, OPENAI_STD
from ..foundation.preprocess import PreprocessConfig, preprocess_uint8
from ..training.loop import TrainConfig, Trainer
from .world import ToyWorld

logger = logging.getLogger(__name__)


_GREY_TEMPLATES = ("a {}", "a photo of {}", "a black and white photo of {}", "{}")


def _shapes_phrase(shapes: list[str]) -> str:
    items = [("an " if s[0] in "aeiou" else "a ") + s for s in shapes]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class ToyCaptionDataset(Dataset):
    """Toyworld scenes as ``(pixels [3, S, S] float, token ids [context_length])`` pairs.

    One of each scene's captions is picked per epoch, deterministically from ``(seed, index, epoch)``.
    With probability ``grayscale_prob`` the image is turned grey and paired with a caption that names
    the shapes only (colour words would be false), which pushes the image tower to see shape apart from
    colour — the augmentation that lets held-out colour-shape pairs be recognised (docs/toyworld.md).
    """

    def __init__(
        self, world: Any, tokenizer: Any, preprocess: PreprocessConfig, seed: int = 0, grayscale_prob: float = 0.0
    ) -> None:
        if not 0.0 <= grayscale_prob <= 1.0:
            raise ValueError(f"data.grayscale_prob must be in [0, 1], got {grayscale_prob}")
        self.world, self.tokenizer, self.pp, self.seed = world, tokenizer, preprocess, seed
        self.grayscale_prob = grayscale_prob
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop at each epoch start (changes the caption choice)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = self.world[i]
        rng = np.random.default_rng([self.seed, i, self.epoch])
        caption = scene.captions[int(rng.integers(len(scene.captions)))]
        image = scene.image
        if rng.random() < self.grayscale_prob:
            grey = (image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
            image = np.repeat(grey[..., None], 3, axis=-1)
            order = rng.permutation(len(scene.objects))
            phrase = _shapes_phrase([scene.objects[k].shape for k in order])
            caption = _GREY_TEMPLATES[int(rng.integers(len(_GREY_TEMPLATES)))].format(phrase)
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        pixels, _ = preprocess_uint8([img], self.pp)
        return pixels[0], self.tokenizer([caption])[0]


def _open_clip_preprocess_cfg(image_size: int) -> dict[str, Any]:
    return {
        "size": image_size,
        "mode": "RGB",
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }


def run(recipe: dict[str, Any]) -> Path:
    """Train a CLIP from scratch; returns the open_clip checkpoint directory (the run's output_dir)."""
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    model_cfg = dict(recipe["model"])
    data_cfg = dict(recipe.get("data", {}))
    grayscale_prob = float(data_cfg.pop("grayscale_prob", 0.0))
    if data_cfg.pop("source", "toyworld") != "toyworld":
        raise ValueError("clip_pretrain supports data.source: toyworld")
    train_cfg = TrainConfig.from_dict(dict(recipe["train"]))
    image_size = int(model_cfg["vision_cfg"]["image_size"])
    if int(data_cfg.get("image_size", image_size)) != image_size:
        raise ValueError("data.image_size must equal model.vision_cfg.image_size")
    data_cfg["image_size"] = image_size
    torch.manual_seed(train_cfg.seed)
    model = CLIP(**model_cfg)
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pp_cfg = _open_clip_preprocess_cfg(image_size)
    config_json = {"model_cfg": model_cfg, "preprocess_cfg": pp_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(config_json, indent=2))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    world = ToyWorld(**data_cfg)
    dataset = ToyCaptionDataset(
        world, tokenizer, PreprocessConfig.from_open_clip(pp_cfg), seed=train_cfg.seed, grayscale_prob=grayscale_prob
    )
    clip_loss = ClipLoss()

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        images, texts = batch
        img, txt, scale = m(images, texts)
        loss = clip_loss(img.float(), txt.float(), scale.float())
        with torch.no_grad():
            acc = (img @ txt.t()).argmax(-1).eq(torch.arange(len(img), device=img.device)).float().mean()
        return loss, {"i2t_acc": float(acc), "logit_scale": float(scale.detach())}

    trainer = Trainer(model, loss_fn, dataset, train_cfg)
    last = trainer.fit()
    if trainer.accelerator.is_main_process:
        sd = {k: v.detach().contiguous().cpu() for k, v in trainer.unwrapped_model().state_dict().items()}
        save_file(sd, str(out / "open_clip_model.safetensors"))
        (out / "train_summary.json").write_text(json.dumps({"recipe": recipe, "last_metrics": last}, indent=2))
    logger.info("wrote open_clip checkpoint to %s", out)
    return out
