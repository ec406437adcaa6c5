"""Imports every built-in family module once, which registers the families and their aliases."""

from . import clip, dinov2, dit, pixart, sam, student  # noqa: F401
from .registry import ModelSpec, register_model

student.register()


def _register_toy_clip() -> None:
    from ..demo import toy_clip_dir

    register_model(
        ModelSpec(
            name="toyworld-clip",
            family="clip",
            source=str(toy_clip_dir()),
            locate=lambda: str(toy_clip_dir()),
            backend="open_clip",
            description="tiny CLIP trained from scratch on toyworld by `visionfm demo` (local cache)",
        )
    )


_register_toy_clip()
