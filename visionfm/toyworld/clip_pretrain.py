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
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..foundation.clip import OPENAI_MEAN, OPENAI_STD
from ..foundation.preprocess import PreprocessConfig, preprocess_uint8
from ..foundation.towers import ensure_registered
from ..training.loop import TrainConfig, Trainer
from .datasets import training_world_args
from .world import ToyWorld

logger = logging.getLogger(__name__)


_GREY_TEMPLATES = ("a {}", "a photo of {}", "a black and white photo of {}", "{}")


def _fix_articles(words: list[str]) -> list[str]:
    """``a`` / ``an`` agreeing with the next word, after a word was replaced."""
    out = list(words)
    for i in range(len(out) - 1):
        if out[i] in ("a", "an"):
            out[i] = "an" if out[i + 1][:1] in "aeiou" else "a"
    return out


def hard_negative(caption: str, rng: np.random.Generator) -> str | None:
    """A false caption one edit away from ``caption`` (NegCLIP's hard negatives, Yuksekgonul et al., ICLR 2023):
    two objects' colours swapped (attribute binding) when the caption names two differently coloured shapes, else
    one colour or one shape word replaced. Only seen (colour, shape) pairs are ever written, so a negative never
    names a held-out composition. ``None`` when no edit applies.
    """
    from .world import COLOURS, SEEN_PAIRS, SHAPES

    words = caption.split(" ")
    bare = [w.strip(",:") for w in words]
    mentions = [i for i in range(len(bare) - 1) if bare[i] in COLOURS and bare[i + 1] in SHAPES]

    def put(i: int, new: str) -> None:
        words[i] = new + words[i][len(bare[i]) :]  # keep trailing punctuation

    if len(mentions) >= 2 and rng.random() < 0.5:
        i, j = (int(k) for k in rng.choice(mentions, 2, replace=False))
        ci, cj, si, sj = bare[i], bare[j], bare[i + 1], bare[j + 1]
        if ci != cj and (cj, si) in SEEN_PAIRS and (ci, sj) in SEEN_PAIRS:
            put(i, cj), put(j, ci)
            return " ".join(_fix_articles(words))
    if mentions:
        i = int(rng.choice(mentions))
        colour, shape = bare[i], bare[i + 1]
        if rng.random() < 0.5:
            options = [c for c in COLOURS if c != colour and (c, shape) in SEEN_PAIRS]
            put(i, str(rng.choice(options)))
        else:
            options = [s for s in SHAPES if s != shape and (colour, s) in SEEN_PAIRS]
            put(i + 1, str(rng.choice(options)))
        return " ".join(_fix_articles(words))
    shape_at = [i for i, w in enumerate(bare) if w in SHAPES]
    colour_at = [i for i, w in enumerate(bare) if w in COLOURS]
    if shape_at:
        i = int(rng.choice(shape_at))
        put(i, str(rng.choice([s for s in SHAPES if s != bare[i]])))
    elif colour_at:
        i = int(rng.choice(colour_at))
        put(i, str(rng.choice([c for c in COLOURS if c != bare[i]])))
    else:
        return None
    return " ".join(_fix_articles(words))


def background_tone(scene: Any) -> str:
    """``"dark"`` or ``"light"``: the mean grey level of ``scene``'s background pixels, below or from 128."""
    bg = scene.image[scene.instance == 0]
    return "dark" if float(bg.astype(np.float32).mean()) < 128.0 else "light"


def _shapes_phrase(shapes: list[str]) -> str:
    items = [("an " if s[0] in "aeiou" else "a ") + s for s in shapes]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class ToyCaptionDataset(Dataset):
    """Toyworld scenes as ``(pixels [3, S, S] float, token ids [context_length])`` pairs.

    One of each scene's captions is picked per epoch, deterministically from ``(seed, index, epoch)``.
    With probability ``grayscale_prob`` the image is turned grey and paired with a caption that names
    the shapes only (colour words would be false), which pushes the image tower to see shape apart from
    colour — the augmentation that lets held-out colour-shape pairs be recognised (docs/toyworld.md).
    With probability ``background_prob`` the caption also names the background (``"... on a dark grey
    background"``; dark or light by the mean grey level of the background pixels, below or above 128), so that
    the text side has a word for the background and dense features can learn it.
    """

    def __init__(
        self,
        world: Any,
        tokenizer: Any,
        preprocess: PreprocessConfig,
        seed: int = 0,
        grayscale_prob: float = 0.0,
        hard_negatives: bool = False,
        background_prob: float = 0.0,
    ) -> None:
        if not 0.0 <= grayscale_prob <= 1.0:
            raise ValueError(f"data.grayscale_prob must be in [0, 1], got {grayscale_prob}")
        if not 0.0 <= background_prob <= 1.0:
            raise ValueError(f"data.background_prob must be in [0, 1], got {background_prob}")
        self.background_prob = background_prob
        self.world, self.tokenizer, self.pp, self.seed = world, tokenizer, preprocess, seed
        self.grayscale_prob = grayscale_prob
        self.hard_negatives = bool(hard_negatives)
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
        if self.background_prob and rng.random() < self.background_prob:
            caption = f"{caption} on a {background_tone(scene)} grey background"
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        pixels, _ = preprocess_uint8([img], self.pp)
        if not self.hard_negatives:
            return pixels[0], self.tokenizer([caption])[0]
        negative = hard_negative(caption, rng)
        tokens = self.tokenizer([caption, negative or caption])
        return pixels[0], tokens[0], tokens[1], torch.tensor(negative is not None)


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
    hard_negatives = bool(data_cfg.pop("hard_negatives", False))
    background_prob = float(data_cfg.pop("background_prob", 0.0))
    train_cfg = TrainConfig.from_dict(dict(recipe["train"]))
    image_size = int(model_cfg["vision_cfg"]["image_size"])
    data_cfg = training_world_args(data_cfg, image_size, "clip_pretrain")
    torch.manual_seed(train_cfg.seed)
    ensure_registered(model_cfg)
    model = CLIP(**model_cfg)
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pp_cfg = _open_clip_preprocess_cfg(image_size)
    config_json = {"model_cfg": model_cfg, "preprocess_cfg": pp_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(config_json, indent=2))
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    world = ToyWorld(**data_cfg)
    dataset = ToyCaptionDataset(
        world, tokenizer, PreprocessConfig.from_open_clip(pp_cfg), seed=train_cfg.seed, grayscale_prob=grayscale_prob,
        hard_negatives=hard_negatives, background_prob=background_prob,
    )  # fmt: skip
    clip_loss = ClipLoss()

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        if len(batch) == 2:
            images, texts = batch
            img, txt, scale = m(images, texts)
            loss = clip_loss(img.float(), txt.float(), scale.float())
        else:  # NegCLIP: each image also scores every hard negative caption; texts score only the images
            images, texts, negatives, valid = batch
            n = len(images)
            img, both, scale = m(images, torch.cat([texts, negatives]))
            img, both, scale = img.float(), both.float(), scale.float()
            txt = both[:n]
            no_negative = torch.cat([torch.zeros_like(valid, dtype=torch.bool), ~valid.bool()])  # no edit applied
            i2t = (scale * img @ both.t()).masked_fill(no_negative[None, :], float("-inf"))
            target = torch.arange(n, device=img.device)
            loss = 0.5 * (F.cross_entropy(i2t, target) + F.cross_entropy(scale * txt @ img.t(), target))
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
