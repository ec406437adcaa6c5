"""Task pipelines built on the foundation encoders: ``pipeline(task, model=...)``."""

# Importing the task modules registers their pipelines (and the zero-shot-seg methods).
from . import feature_extraction, generation, grounding, mask_generation  # noqa: F401
from . import seg_corrclip, seg_trident, zero_shot, zero_shot_seg  # noqa: F401
from .base import Pipeline, pipeline, pipeline_tasks, register_pipeline

__all__ = ["Pipeline", "pipeline", "pipeline_tasks", "register_pipeline"]
