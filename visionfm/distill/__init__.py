"""Distillation utilities: an on-disk teacher feature cache so later epochs only pay for the student."""

from __future__ import annotations

from .cache import TeacherCache, cached_forward

__all__ = ["TeacherCache", "cached_forward"]
