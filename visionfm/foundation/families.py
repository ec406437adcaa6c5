"""Imports every built-in family module once, which registers the families and their aliases."""

from . import aimv2, clip, detectors, dino, dinov2, dinov3, dit, pixart, radio, sam, sam3, student, timm_vit  # noqa: F401

student.register()
