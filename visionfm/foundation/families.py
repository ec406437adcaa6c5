"""Imports every built-in family module once, which registers the families and their aliases."""

from . import clip, detectors, dino, dinov2, dit, pixart, sam, student  # noqa: F401

student.register()
