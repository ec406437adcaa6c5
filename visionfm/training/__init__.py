"""The shared Accelerate training loop and the recipe runner (``visionfm train RECIPE.yaml``)."""

from .loop import TrainConfig, Trainer, lr_factor, progress_listener

__all__ = ["TrainConfig", "Trainer", "lr_factor", "progress_listener"]
