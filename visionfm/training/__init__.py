"""The shared Accelerate training loop and the recipe runner (``visionfm train RECIPE.yaml``)."""

from .loop import TrainConfig, Trainer, lr_factor

__all__ = ["TrainConfig", "Trainer", "lr_factor"]
