"""Task pipelines built on the foundation encoders: ``pipeline(task, model=...)``."""

from .base import Pipeline, pipeline, pipeline_tasks, register_pipeline

__all__ = ["Pipeline", "pipeline", "pipeline_tasks", "register_pipeline"]
