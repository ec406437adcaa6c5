"""Token merging: fewer tokens through a ViT's blocks, dense features restored to the full patch grid.

Two placements, chosen by the family (:meth:`visionfm.foundation.encoder.Encoder.token_merging_sites`):

- ``"sequence"`` (plain ViTs: CLIP / SigLIP, DINO, DINOv2, DINOv3, timm ViTs, AIMv2, RADIO, students). Bipartite
  soft matching as the ToMe paper describes it (Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023; our
  implementation of the paper's description, not compared against its code): before each block after the
  first, the patch tokens are split alternately into sets A and B, each A token is matched to its most similar B token
  (cosine), and the ``r`` best-matched A tokens are averaged into their partners, weighted by how many input patches
  each token already stands for. Prefix tokens (class token, registers) are never merged. The stream shrinks from
  block to block, so attention and MLP both get cheaper. Two differences from the paper's code: the similarity is
  measured on the block's input tokens rather than on the attention keys (so any block implementation works
  unchanged), and attention is not re-weighted by token size ("proportional attention"), which would need each
  backend's attention kernel. Rotary position embeddings (DINOv3) follow the tokens: a merged token keeps the
  position of the B token it was merged into.
- ``"mlp"`` (windowed backbones on a 2-D grid: SAM's ViT, whose attention windows and relative positions need the
  full grid). Tokens are merged only around each block's MLP, inside 2 x 2 cells: in every cell, the three other
  tokens are compared with the cell's top-left token, and the globally most similar ones are averaged into it; the MLP
  runs on the remaining tokens and its output is copied back to every token that was merged ("unmerged", the idea
  of ToMe for Stable Diffusion, with our own 2 x 2-cell matching). Attention and the residual stream stay on the
  full grid.

In both placements ``Features.patches`` and every ``Features.layers`` tap come back on the full patch grid: each
patch position gets the value of the token that it was merged into (the idea of restoring reduced tokens to the grid
comes from "Expediting Large-Scale Vision Transformer for Dense Prediction without Fine-tuning", Liang et al. 2022,
whose clustering and reconstruction layers are not reproduced here). With merging off nothing is
installed, so the encoder is bit-identical to the one loaded without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["TokenMergingSites", "TokenMerging", "apply_token_merging", "parse_token_merging"]


@dataclass
class TokenMergingSites:
    """Where a family's encoder lets tokens be merged.

    Attributes:
        blocks: the transformer blocks in order (the modules ``layers=[...]`` taps).
        mode: ``"sequence"`` (blocks take ``[B, prefix + n, C]`` token sequences) or ``"mlp"`` (blocks take
            ``[B, h, w, C]`` grids; merging happens around ``block.mlp``).
        prefix: tokens before the patch tokens (class token, registers); never merged. ``"sequence"`` only.
        batch_first: whether sequences are ``[B, N, C]`` (else ``[N, B, C]``, open_clip's older layout).
        rope_kwarg: the keyword argument that carries rotary ``(cos, sin)`` tables ``[n_patches, d]`` to each block,
            sliced to follow the merged tokens; ``None`` when the family has no rotary embeddings.
        mlp_attr: the attribute of each block holding its token-wise MLP (``"mlp"`` mode).
    """

    blocks: Sequence[nn.Module]
    mode: Literal["sequence", "mlp"] = "sequence"
    prefix: int = 1
    batch_first: bool = True
    rope_kwarg: str | None = None
    mlp_attr: str = "mlp"


def parse_token_merging(value: Any) -> int | float | None:
    """Validate ``token_merging``: ``None``/``0``/``False`` (off), an int ``r >= 1`` (tokens merged per block, as ToMe's
    ``r``) or a float ratio in ``(0, 1)`` (``"sequence"``: the fraction of patch tokens gone by the last block, the
    same number at each block; ``"mlp"``: the fraction merged around each MLP, at most 0.75)."""
    if (
        value is None
        or value is False
        or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)
    ):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"token_merging must be None, an int r >= 1 or a float ratio in (0, 1), got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"token_merging={value}: an int r must be >= 1 (tokens merged per block)")
        return value
    if not 0.0 < value < 1.0:
        raise ValueError(f"token_merging={value}: a float ratio must lie in (0, 1)")
    return float(value)


def _bipartite(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bipartite matching (the ToMe paper's description) on ``[B, n, C]`` unit vectors: A = even, B = odd tokens.

    Returns ``(unm_idx [B, na - r], src_idx [B, r], dst_idx [B, r])``: indices into A of the A tokens kept and of
    the A tokens merged (the ``r`` best matched), and the index into B that each merged one goes to.
    """
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)  # [B, na, nb]
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = node_idx.gather(1, src_idx)
    return unm_idx, src_idx, dst_idx


class TokenMerging:
    """Hooks that merge tokens in an encoder's blocks; :meth:`remove` takes them out again.

    Args:
        sites: where to merge (from the family).
        r: tokens merged per block (int) or a ratio (float); see :func:`parse_token_merging`.
    """

    def __init__(self, sites: TokenMergingSites, r: int | float) -> None:
        self.sites = sites
        self.r = r
        self.handles: list[Any] = []
        self._map: torch.Tensor | None = None  # [B, n_full] -> index into the current patch tokens
        self._size: torch.Tensor | None = None  # [B, n_cur, 1] input patches per current token
        self._rep: torch.Tensor | None = None  # [B, n_cur] original position whose rotary phase a token uses
        self._rope: tuple[torch.Tensor, ...] | None = None
        self._cell: dict[int, Any] = {}
        blocks = list(sites.blocks)
        if not blocks:
            raise ValueError("token merging needs at least one block")
        if sites.mode == "sequence":
            for i, blk in enumerate(blocks):
                self.handles.append(blk.register_forward_pre_hook(self._make_pre(i), with_kwargs=True))
                blk._vfm_unmerge = self._unmerge_sequence  # read by tap_blocks for layer taps
            self.handles.append(blocks[-1].register_forward_hook(self._post_last))
        elif sites.mode == "mlp":
            if isinstance(r, float) and r > 0.75:
                raise ValueError(f"token_merging={r}: 'mlp' merging inside 2x2 cells can merge at most 0.75")
            for i, blk in enumerate(blocks):
                mlp = getattr(blk, sites.mlp_attr, None)
                if not isinstance(mlp, nn.Module):
                    raise ValueError(
                        f"block {i} ({type(blk).__name__}) has no {sites.mlp_attr!r} module to merge around"
                    )
                self.handles.append(mlp.register_forward_pre_hook(self._make_mlp_pre(i)))
                self.handles.append(mlp.register_forward_hook(self._make_mlp_post(i)))
        else:
            raise ValueError(f"unknown token merging mode {sites.mode!r}; expected 'sequence' or 'mlp'")

    def remove(self) -> None:
        """Take every hook out: the encoder runs as if merging had never been applied."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for blk in self.sites.blocks:
            if hasattr(blk, "_vfm_unmerge"):
                del blk._vfm_unmerge

    # -- sequence mode ---------------------------------------------------------------------------------------------
    def _r_for(self, n_full: int, n_cur: int) -> int:
        n_merges = max(1, len(self.sites.blocks) - 1)
        r = self.r if isinstance(self.r, int) else math.floor(self.r * n_full / n_merges)
        return max(0, min(int(r), n_cur // 2))

    def _make_pre(self, i: int):
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            s = self.sites
            if args:
                x, rest, key = args[0], args[1:], None
            else:
                key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                x, rest = kwargs[key], ()
            xb = x if s.batch_first else x.transpose(0, 1)
            b, n, _ = xb.shape
            if i == 0:  # a new forward pass: every patch token stands for itself
                n_full = n - s.prefix
                self._map = torch.arange(n_full, device=x.device).expand(b, n_full)
                self._size = None
                self._rep = self._map
                self._rope = None
            elif self._map is not None:
                r = self._r_for(self._map.shape[1], n - s.prefix)
                if r > 0:
                    xb = self._merge(xb, r)
                    x = xb if s.batch_first else xb.transpose(0, 1)
            if s.rope_kwarg and self._rep is not None and self._rep.shape[1] != self._map.shape[1]:
                kwargs = dict(kwargs)
                kwargs[s.rope_kwarg] = self._slice_rope(kwargs[s.rope_kwarg])
            if key is None:
                return (x, *rest), kwargs
            kwargs = dict(kwargs)
            kwargs[key] = x
            return args, kwargs

        return hook

    def _merge(self, x: torch.Tensor, r: int) -> torch.Tensor:
        p = self.sites.prefix
        prefix, tok = x[:, :p], x[:, p:]
        b, n, c = tok.shape
        size = self._size if self._size is not None else tok.new_ones(b, n, 1)
        metric = tok / tok.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        unm_idx, src_idx, dst_idx = _bipartite(metric, r)
        na, nb = (n + 1) // 2, n // 2
        keep = na - r

        def merge(t: torch.Tensor) -> torch.Tensor:  # [B, n, d] -> [B, n - r, d], summing merged rows
            a, bb = t[:, ::2], t[:, 1::2]
            d = t.shape[-1]
            unm = a.gather(1, unm_idx[..., None].expand(-1, -1, d))
            src = a.gather(1, src_idx[..., None].expand(-1, -1, d))
            bb = bb.scatter_add(1, dst_idx[..., None].expand(-1, -1, d), src)
            return torch.cat([unm, bb], dim=1)

        merged = merge(tok * size)
        new_size = merge(size)
        merged = merged / new_size
        # where every current token goes: A tokens kept -> 0..keep-1, merged -> keep + dst, B tokens -> keep + j
        ar = torch.arange(keep, device=x.device).expand(b, keep)
        new_a = torch.empty(b, na, dtype=torch.long, device=x.device)
        new_a.scatter_(1, unm_idx, ar)
        new_a.scatter_(1, src_idx, keep + dst_idx)
        new_of_cur = torch.empty(b, n, dtype=torch.long, device=x.device)
        new_of_cur[:, ::2] = new_a
        new_of_cur[:, 1::2] = keep + torch.arange(nb, device=x.device).expand(b, nb)
        self._map = new_of_cur.gather(1, self._map)
        self._size = new_size
        rep_a, rep_b = self._rep[:, ::2], self._rep[:, 1::2]
        self._rep = torch.cat([rep_a.gather(1, unm_idx), rep_b], dim=1)
        return torch.cat([prefix, merged.to(x.dtype)], dim=1)

    def _slice_rope(self, tables: Any) -> Any:
        """``(cos, sin)`` ``[n_full, d]`` (or ``[B, n_full, d]``) -> ``[B, 1, n_cur, d]`` at each token's position."""
        out = []
        for t in tables:
            t3 = t.expand(self._rep.shape[0], *t.shape[-2:]) if t.ndim == 2 else t
            idx = self._rep[..., None].expand(-1, -1, t3.shape[-1])
            out.append(t3.gather(1, idx)[:, None])
        return type(tables)(out)

    def _unmerge_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """A block output ``[B, prefix + n_cur, C]`` (or ``[n, B, C]``) back on the full token sequence."""
        s = self.sites
        if self._map is None:
            return x
        xb = x if s.batch_first else x.transpose(0, 1)
        if xb.shape[1] - s.prefix == self._map.shape[1]:
            return x
        p = s.prefix
        idx = self._map[..., None].expand(-1, -1, xb.shape[-1])
        full = torch.cat([xb[:, :p], xb[:, p:].gather(1, idx)], dim=1)
        return full if s.batch_first else full.transpose(0, 1)

    def _post_last(self, _module: nn.Module, _inp: Any, out: Any) -> Any:
        if isinstance(out, (tuple, list)):
            return type(out)([self._unmerge_sequence(out[0]), *out[1:]])
        return self._unmerge_sequence(out)

    # -- mlp mode --------------------------------------------------------------------------------------------------
    def _make_mlp_pre(self, i: int):
        def hook(_module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            if x.ndim != 4:
                raise ValueError(f"'mlp' token merging expects [B, h, w, C] grids at block {i}, got {tuple(x.shape)}")
            b, h, w, c = x.shape
            h2, w2 = h // 2 * 2, w // 2 * 2
            # cells of 2x2: slot 0 (top-left) is the destination, slots 1..3 may merge into it
            cells = x[:, :h2, :w2].reshape(b, h2 // 2, 2, w2 // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
            cells = cells.reshape(b, -1, 4, c)  # [B, m, 4, C]
            m = cells.shape[1]
            n_src = 3 * m
            r = self.r if isinstance(self.r, int) else math.floor(self.r * h * w)
            r = max(0, min(int(r), n_src))
            if r == 0:
                self._cell[i] = None
                return args
            unit = cells / cells.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            sim = (unit[:, :, 1:] * unit[:, :, :1]).sum(-1).reshape(b, n_src)  # [B, 3m]
            order = sim.argsort(dim=-1, descending=True)
            merged_src = order[:, :r]  # flat indices cell*3 + (slot-1)
            mask = torch.zeros(b, n_src, dtype=torch.bool, device=x.device)
            mask.scatter_(1, merged_src, True)
            mask = mask.reshape(b, m, 3)
            weights = torch.cat([mask.new_ones(b, m, 1), mask], dim=2).to(x.dtype)  # [B, m, 4]
            dst = (cells * weights[..., None]).sum(2) / weights.sum(2, keepdim=True)  # [B, m, C]
            kept_src = cells[:, :, 1:][~mask].reshape(b, -1, c)  # same count per image: 3m - r
            rest = [x[:, h2:].reshape(b, -1, c), x[:, :h2, w2:].reshape(b, -1, c)]
            tokens = torch.cat([dst, kept_src, *rest], dim=1)
            self._cell[i] = (mask, (b, h, w, c), m)
            return (tokens, *args[1:])

        return hook

    def _make_mlp_post(self, i: int):
        def hook(_module: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
            info = self._cell.pop(i, None)
            if info is None:
                return out
            mask, (b, h, w, _), m = info
            c = out.shape[-1]
            h2, w2 = h // 2 * 2, w // 2 * 2
            dst, rest = out[:, :m], out[:, m:]
            n_kept = int((~mask).sum()) // b
            kept_src, rest = rest[:, :n_kept], rest[:, n_kept:]
            src = dst[:, :, None].expand(b, m, 3, c).clone()
            src[~mask] = kept_src.reshape(-1, c)
            cells = torch.cat([dst[:, :, None], src], dim=2)  # [B, m, 4, C]
            grid = cells.reshape(b, h2 // 2, w2 // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h2, w2, c)
            if h2 == h and w2 == w:
                return grid
            full = out.new_empty(b, h, w, c)
            full[:, :h2, :w2] = grid
            n_bottom = (h - h2) * w
            full[:, h2:] = rest[:, :n_bottom].reshape(b, h - h2, w, c)
            full[:, :h2, w2:] = rest[:, n_bottom:].reshape(b, h2, w - w2, c)
            return full

        return hook


def apply_token_merging(encoder: nn.Module, r: int | float | None) -> TokenMerging | None:
    """Install token merging on an encoder (see the module docstring); ``None`` or ``0`` installs nothing.

    Args:
        encoder: a :class:`visionfm.foundation.encoder.Encoder` whose family implements ``token_merging_sites``.
        r: ``int`` tokens merged per block, or a ``float`` ratio (see :func:`parse_token_merging`).

    Returns:
        The installed :class:`TokenMerging` (also kept as ``encoder.token_merging``), or ``None`` when off.
    """
    r = parse_token_merging(r)
    old = getattr(encoder, "token_merging", None)
    if old is not None:
        old.remove()
        encoder.token_merging = None
    if r is None:
        return None
    sites = encoder.token_merging_sites()
    tm = TokenMerging(sites, r)
    encoder.token_merging = tm
    logger.info("token merging on %s: %s mode, r=%s over %d blocks", type(encoder).__name__, sites.mode, r,
                len(sites.blocks))  # fmt: skip
    return tm
