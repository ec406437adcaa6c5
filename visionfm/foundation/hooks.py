"""Hooks a higher layer registers so foundation can call it without importing it (a leaf module).

- ``adapter_loader``: ``fn(encoder, source, *, allow_pickle, local_files_only, cache_dir) -> encoder``, what
  ``load_encoder(..., adapter=SOURCE)`` calls. :mod:`visionfm.adapters` registers it on import (``import visionfm``
  imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_HOOKS: dict[str, Callable[..., Any]] = {}
KNOWN = ("adapter_loader",)


def register_hook(name: str, fn: Callable[..., Any]) -> None:
    """Install ``fn`` as hook ``name`` (one of :data:`KNOWN`); installing the same function again is a no-op.

    Raises:
        ValueError: unknown hook name, or a different function is already installed.
    """
    if name not in KNOWN:
        raise ValueError(f"unknown hook {name!r}; known hooks: {list(KNOWN)}")
    if name in _HOOKS and _HOOKS[name] is not fn:
        raise ValueError(f"hook {name!r} is already installed ({_HOOKS[name]!r})")
    _HOOKS[name] = fn


def get_hook(name: str, *, needed_for: str, provider: str) -> Callable[..., Any]:
    """The installed hook ``name``.

    Raises:
        RuntimeError: nothing installed it; the message says which package provides it.
    """
    try:
        return _HOOKS[name]
    except KeyError:
        raise RuntimeError(f"{needed_for} needs {provider}, which is not imported; `import {provider}` first") from None
