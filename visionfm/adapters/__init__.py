"""Adapters on visionfm encoders: PEFT methods (LoRA, DoRA, LoHa, LoKr, IA3) through PEFT itself."""

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

__all__ = [
    "METHODS",
    "TargetLayout",
    "attach",
    "base_module",
    "load_adapter",
    "merge",
    "register_layout",
    "save",
    "target_modules",
    "trainable_parameters",
]
