"""visionfm: vision foundation models (CLIP/SigLIP, AIMv2, DINO v1-v3, RADIO, SAM, SAM 3, DiT, PixArt, timm ViTs) behind
one interface.

>>> import visionfm as vfm
>>> sorted({m.family for m in vfm.list_models()})
['aimv2', 'clip', 'detector', 'dino', 'dinov2', 'dinov3', 'dit', 'pixart', 'radio', 'sam', 'sam3', 'timm']
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# The packages above foundation register their hooks and registry entries when imported: adapters (the
# load_encoder(adapter=...) hook), eval (a recipe's eval_suite), distill (the distill recipe task) and the toyworld
# (its dataset source, models, recipes, eval tasks and suites). This file is the top of the stack, so it may.
from . import adapters as _adapters  # noqa: E402, F401
from . import distill as _distill  # noqa: E402, F401
from . import eval as _eval  # noqa: E402, F401
from . import toyworld as _toyworld  # noqa: E402, F401
from .foundation.encoder import Encoder  # noqa: E402
from .foundation.features import EncoderInfo, Features  # noqa: E402
from .foundation.loading import load_encoder  # noqa: E402
from .foundation.preprocess import PreprocessConfig  # noqa: E402
from .foundation.registry import ModelSpec, list_models, register_family, register_model  # noqa: E402
from .pipelines.base import pipeline  # noqa: E402

__all__ = [
    "Encoder",
    "EncoderInfo",
    "Features",
    "ModelSpec",
    "PreprocessConfig",
    "__version__",
    "list_models",
    "load_encoder",
    "pipeline",
    "register_family",
    "register_model",
]
