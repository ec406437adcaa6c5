"""Encoders behind one feature contract: ``Features``, ``Encoder``, the registry and ``load_encoder``."""

from . import families as _families  # noqa: F401  (registers the built-in families and their aliases)
from .encoder import Encoder
from .features import EncoderInfo, Features
from .loading import load_encoder
from .preprocess import PreprocessConfig
from .registry import Family, ModelSpec, list_models, register_family, register_model

__all__ = [
    "Encoder",
    "EncoderInfo",
    "Family",
    "Features",
    "ModelSpec",
    "PreprocessConfig",
    "list_models",
    "load_encoder",
    "register_family",
    "register_model",
]
