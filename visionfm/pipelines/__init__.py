"""Task pipelines built on the foundation encoders: ``pipeline(task, model=...)``."""

# Importing the task modules registers their pipelines (and the zero-shot-seg methods).
from . import (  # noqa: F401
    feature_extraction,
    generation,
    grounding,
    mask_generation,
    sam3_concepts,
    seg_corrclip,
    seg_trident,
    zero_shot,
    zero_shot_seg,
)
from .base import Pipeline, pipeline, pipeline_tasks, register_pipeline

__all__ = ["Pipeline", "pipeline", "pipeline_tasks", "register_pipeline"]
