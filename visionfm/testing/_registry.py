"""The table of tiny-checkpoint writers, filled by the writer modules of :mod:`visionfm.testing` themselves.

A leaf module (it imports nothing from visionfm): each family's writer module decorates its writers with
:func:`tiny_writer`, and :func:`visionfm.testing.tiny_checkpoint` imports every writer module before it looks a
kind up here, so adding a family means adding one module under ``visionfm/testing/``.

Example:
    >>> from visionfm.testing._registry import registered
    >>> import visionfm.testing.dinov2
    >>> registered()["dinov2"].default_backend
    'transformers'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

#: A writer: ``fn(path, backend=...)`` writes one tiny checkpoint into the existing directory ``path``; the caller
#: seeds torch.
Writer = Callable[..., None]
_W = TypeVar("_W", bound=Callable[..., Any])


@dataclass(frozen=True)
class TinyWriter:
    """One registered kind: its writer and the backend (on-disk format) written when none is asked for."""

    kind: str
    fn: Writer
    default_backend: str


_WRITERS: dict[str, TinyWriter] = {}


def tiny_writer(kind: str, *, default_backend: str) -> Callable[[_W], _W]:
    """Register the decorated function as the writer of ``kind`` (the function is returned unchanged).

    Registering the same function again (a module imported twice) is a no-op; a second writer for a kind raises.
    """

    def register(fn: _W) -> _W:
        prev = _WRITERS.get(kind)
        if prev is not None and _ident(prev.fn) != _ident(fn):
            raise ValueError(f"tiny checkpoint kind {kind!r} is already written by {'.'.join(_ident(prev.fn))}")
        _WRITERS[kind] = TinyWriter(kind=kind, fn=fn, default_backend=default_backend)
        return fn

    return register


def registered() -> dict[str, TinyWriter]:
    """A copy of the registered writers, ``{kind: TinyWriter}`` (only those whose modules have been imported)."""
    return dict(_WRITERS)


def _ident(fn: Callable[..., Any]) -> tuple[str, str]:
    return getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn))
