"""Training-free sampling speed-up for diffusion transformers: reuse of block residuals across denoising steps.

Consecutive denoising steps feed a diffusion transformer nearly the same input, so the change that a middle block
makes to its hidden states changes little from one step to the next. Related training-free methods reuse features
across steps: FORA (Selvaraju et al. 2024) caches the attention and MLP outputs of each DiT block and reuses them for
a fixed number of steps; Δ-DiT (Chen et al. 2024) reuses the offset that a range of blocks adds, choosing the range
by denoising stage; DeepCache (Ma et al. 2024) reuses a U-Net's high-level features. The variant here is none of
them: it reuses the whole residual ``out - in`` of each block, for a fixed set of middle blocks.

- On a *full* step every block runs, and every block except the first ``keep_first`` and the last ``keep_last``
  stores its residual ``out - in`` (``[N, T, C]``: batch, tokens, width).
- On a *cached* step those middle blocks do not run; each returns ``in + stored residual``. The kept blocks run
  as usual, so the new timestep and conditioning still enter through them.
- Step ``i`` of ``num_steps`` is full when ``i < warmup``, when ``(i - warmup) % interval == 0``, or when it is the
  last step.

:func:`cached_blocks` replaces each middle block's ``forward`` with an instance attribute for the duration of a
``with`` block and restores it on exit, also on error. It never changes the module tree or the ``state_dict``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: The accepted forms of the ``cache`` option, for error messages.
ACCEPTED = (
    "None or False (off), True or 'fast' (a full step every 2nd step), an int N >= 1 (a full step every N-th step; "
    "1 is off), a dict with keys interval, keep_first, keep_last, warmup, or a StepCache"
)

_MISSING = object()


@dataclass(frozen=True)
class StepCache:
    """Configuration of block-residual caching across denoising steps.

    Attributes:
        interval: after the warm-up, every ``interval``-th step is full; the steps between reuse the residuals of
            the last full step (``1``: every step is full, i.e. no caching).
        keep_first: leading blocks that run on every step.
        keep_last: trailing blocks that run on every step.
        warmup: leading steps that are all full.
    """

    interval: int = 2
    keep_first: int = 1
    keep_last: int = 1
    warmup: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value, lo = getattr(self, f.name), (1 if f.name == "interval" else 0)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
                raise ValueError(f"cache: {f.name} must be an int >= {lo}, got {value!r}")
            object.__setattr__(self, f.name, int(value))

    def is_full(self, i: int, num_steps: int) -> bool:
        """Whether step ``i`` (0-based) of ``num_steps`` runs every block."""
        return i < self.warmup or (i - self.warmup) % self.interval == 0 or i == num_steps - 1

    def schedule(self, num_steps: int) -> list[bool]:
        """``is_full`` for each step ``0 .. num_steps - 1``."""
        return [self.is_full(i, num_steps) for i in range(num_steps)]

    def protocol(self, num_steps: int) -> dict[str, Any]:
        """What a result records: the method, the fields, and the full and cached step counts of ``num_steps``."""
        full = sum(self.schedule(num_steps))
        return {"method": "block-residual", "interval": self.interval, "keep_first": self.keep_first,
                "keep_last": self.keep_last, "warmup": self.warmup, "full_steps": full,
                "cached_steps": num_steps - full}  # fmt: skip


def parse_cache(value: Any) -> StepCache | None:
    """The caching configuration that ``value`` asks for, or ``None`` for no caching.

    Args:
        value: ``None`` or ``False`` (off); ``True`` or ``"fast"`` (``StepCache(interval=2)``); an int ``N >= 1``
            (``StepCache(interval=N)``; ``1`` is off); a dict of :class:`StepCache` fields; or a :class:`StepCache`.
            A configuration with ``interval == 1`` caches nothing and is returned as ``None``.

    Returns:
        A :class:`StepCache`, or ``None`` when caching is off.

    Raises:
        ValueError: ``value`` is none of the above, or a field is invalid; the message names ``cache``.
    """
    if value is None or value is False:
        return None
    if value is True or (isinstance(value, str) and value == "fast"):
        cfg = StepCache(interval=2)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"cache must be >= 1 as an int (the full-step interval), got {value!r}; accepted: "
                             f"{ACCEPTED}")  # fmt: skip
        cfg = StepCache(interval=int(value))
    elif isinstance(value, Mapping):
        known = {f.name for f in fields(StepCache)}
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise ValueError(f"cache: unknown keys {unknown}; a dict takes {sorted(known)}")
        cfg = StepCache(**value)
    elif isinstance(value, StepCache):
        cfg = value
    else:
        raise ValueError(f"cache must be one of: {ACCEPTED}; got {value!r}")
    return None if cfg.interval == 1 else cfg


@dataclass
class CacheStats:
    """Counts of one :func:`cached_blocks` context.

    Attributes:
        full_blocks: block calls that ran the block (kept blocks, full steps, and fall-backs).
        cached_blocks: block calls answered with ``in + stored residual``.
        full_steps: :meth:`CacheController.step` calls for full steps.
        cached_steps: :meth:`CacheController.step` calls for cached steps.
    """

    full_blocks: int = 0
    cached_blocks: int = 0
    full_steps: int = 0
    cached_steps: int = 0


class CacheController:
    """The state of one :func:`cached_blocks` context: the current step's kind and the stored residuals.

    Attributes:
        config: the :class:`StepCache`.
        num_steps: the number of denoising steps (the last one is always full).
        cached: indices (into the block list) of the blocks that may be skipped.
        stats: a :class:`CacheStats`.
    """

    def __init__(self, config: StepCache, num_steps: int, cached: list[int]) -> None:
        self.config = config
        self.num_steps = int(num_steps)
        self.cached = cached
        self.stats = CacheStats()
        self.full = True  # before the first step() call every block runs
        self._residuals: dict[int, torch.Tensor] = {}

    def step(self, i: int) -> bool:
        """Declare that the next denoiser call is step ``i`` (0-based); returns whether it is a full step."""
        self.full = self.config.is_full(int(i), self.num_steps)
        if self.full:
            self.stats.full_steps += 1
        else:
            self.stats.cached_steps += 1
        return self.full

    def _forward(self, index: int, original: Any) -> Any:
        """The replacement ``forward`` of middle block ``index``, around its ``original`` forward."""

        def forward(*args: Any, **kwargs: Any) -> Any:
            hidden = args[0] if args else kwargs["hidden_states"]  # [N, T, C]
            residual = self._residuals.get(index)
            if not self.full and residual is not None and residual.shape == hidden.shape:
                self.stats.cached_blocks += 1
                return hidden + residual
            out = original(*args, **kwargs)
            self.stats.full_blocks += 1
            if isinstance(out, torch.Tensor) and out.shape == hidden.shape:
                self._residuals[index] = out - hidden
            else:  # not a residual block we understand: never skip it
                self._residuals.pop(index, None)
            return out

        return forward

    def _count_kept(self, _module: nn.Module, _inp: Any, _out: Any) -> None:
        self.stats.full_blocks += 1


@contextmanager
def cached_blocks(blocks: nn.ModuleList, cfg: StepCache, *, num_steps: int) -> Iterator[CacheController]:
    """Cache the middle blocks of ``blocks`` across denoising steps while the context is open.

    Call ``controller.step(i)`` before the denoiser call of step ``i``. A block whose stored residual does not match
    the shape of its input (or that has none yet) runs in full.

    Args:
        blocks: the denoiser's transformer blocks (diffusers ``BasicTransformerBlock``: ``forward(hidden_states
            [N, T, C], ...) -> [N, T, C]``), e.g. ``transformer.transformer_blocks`` of a DiT or PixArt model.
        cfg: the configuration.
        num_steps: the number of denoising steps (the last one is always full).

    Yields:
        A :class:`CacheController` with ``.step(i)`` and ``.stats``.
    """
    n = len(blocks)
    middle = list(range(cfg.keep_first, n - cfg.keep_last))
    if not middle:
        logger.warning("cache: the denoiser has %d blocks and keep_first=%d, keep_last=%d leave none to cache",
                       n, cfg.keep_first, cfg.keep_last)  # fmt: skip
    ctl = CacheController(cfg, num_steps, middle)
    saved: list[tuple[nn.Module, Any]] = []
    hooks = []
    try:
        for i, block in enumerate(blocks):
            if i in middle:
                saved.append((block, block.__dict__.get("forward", _MISSING)))
                block.forward = ctl._forward(i, block.forward)
            else:
                hooks.append(block.register_forward_hook(ctl._count_kept))
        yield ctl
    finally:
        for h in hooks:
            h.remove()
        for block, previous in reversed(saved):
            if previous is _MISSING:
                del block.forward
            else:
                block.forward = previous
        ctl._residuals.clear()
