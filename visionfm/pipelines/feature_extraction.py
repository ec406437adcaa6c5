"""``pipeline("feature-extraction")``: the encoder's ``Features``, batched, or plain arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..foundation.features import Features
from .base import Pipeline, register_pipeline


@register_pipeline("feature-extraction")
class FeatureExtractionPipeline(Pipeline):
    """``fx(images, layers=[...], output="features"|"numpy")``.

    ``output="features"`` (default) returns one :class:`Features` for the whole batch (or for the one
    image); ``"numpy"`` returns, per image, a dict of numpy arrays (``pooled [D]``, ``patches [h, w, C]``,
    ``cls``, ``registers``, ``layers``) that is JSON-friendly via ``.tolist()``.
    """

    default_model = "dinov2-small"

    def __call__(self, images: Any, *, layers: Sequence[int] | None = None, output: str = "features") -> Any:
        if output not in ("features", "numpy"):
            raise ValueError(f"output must be 'features' or 'numpy', got {output!r}")
        items, single = self._as_batch(images)
        feats = self.encoder.encode(items, batch_size=self.batch_size, layers=layers)
        if output == "features":
            return feats
        rows = [_to_numpy(feats[i]) for i in range(len(items))]
        return rows[0] if single else rows


def _to_numpy(f: Features) -> dict[str, Any]:
    out: dict[str, Any] = {"pooled": f.pooled[0].float().cpu().numpy(), "patches": f.patches[0].float().cpu().numpy()}
    if f.cls is not None:
        out["cls"] = f.cls[0].float().cpu().numpy()
    if f.registers is not None:
        out["registers"] = f.registers[0].float().cpu().numpy()
    if f.layers:
        out["layers"] = {k: v[0].float().cpu().numpy() for k, v in f.layers.items()}
    return out
