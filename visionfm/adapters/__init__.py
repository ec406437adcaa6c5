"""Adapters on visionfm encoders.

- PEFT methods (LoRA, DoRA, LoHa, LoKr, IA3) through PEFT itself: :func:`attach`, :func:`save`, :func:`load_adapter`,
  :func:`merge`; saved adapters are standard PEFT directories.
- CLIP prompt learning (CoOp): :class:`PromptLearner`, :func:`coop_logits`.
- Task heads on ``Features``: :mod:`visionfm.adapters.heads`.
"""

from ..foundation.hooks import register_hook
from .peft_adapters import (
    METHODS,
    TargetLayout,
    attach,
    base_module,
    load_adapter,
    merge,
    register_layout,
    save,
    target_modules,
    trainable_parameters,
)
from .prompt_learning import PromptLearner, coop_logits

register_hook("adapter_loader", load_adapter)  # load_encoder(..., adapter=...) calls it

__all__ = [
    "METHODS",
    "PromptLearner",
    "TargetLayout",
    "attach",
    "base_module",
    "coop_logits",
    "load_adapter",
    "merge",
    "register_layout",
    "save",
    "target_modules",
    "trainable_parameters",
]
