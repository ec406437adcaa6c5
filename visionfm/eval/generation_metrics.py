"""Generation metrics in any encoder's feature space: Fréchet distance, Inception Score, CLIP score.

The Fréchet distance compares Gaussian fits of two feature sets. With Inception-v3 pool features it is FID (Heusel et
al. 2017); with ``Features.pooled`` of a DINOv2 or CLIP encoder it is FD-DINOv2 / FD-CLIP (Stein et al. 2023). Feature
statistics stream (:class:`FeatureStats`), merge across shards or workers, and save to safetensors, so the reference
statistics of a data set are computed once and reused.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> real, fake = FeatureStats(), FeatureStats()
    >>> real.update(rng.normal(size=(500, 8)))
    >>> fake.update(rng.normal(size=(500, 8)) + 1.0)
    >>> frechet_distance_from_stats(real, real) < 1e-6
    True
    >>> 7.0 < frechet_distance_from_stats(real, fake) < 10.0
    True
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import scipy.linalg
import scipy.special
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureStats",
    "clip_score",
    "encoder_features",
    "frechet_distance",
    "frechet_distance_from_stats",
    "InceptionFeatures",
    "convert_inception_weights",
    "find_inception_weights",
    "inception_score",
]

#: Format tag written into saved statistics, checked on load.
_STATS_FORMAT = "visionfm.FeatureStats/1"


def _as_float64(x: torch.Tensor | np.ndarray | Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


class FeatureStats:
    """Streaming mean and covariance of features, in float64.

    Batches are folded in with Chan et al.'s parallel update (the pairwise form of Welford's algorithm): each batch
    contributes its own mean and centred scatter matrix, so there is no catastrophic cancellation from a raw sum of
    outer products even when the features have a large common offset. ``merge`` uses the same update, so statistics
    computed on shards combine exactly (up to rounding) into those of the union.

    Args:
        encoder: name of the encoder the features came from (e.g. ``"dinov2-small"``), kept as metadata.
        protocol: how the features were made (image size, preprocessing, data set, split, ...), kept as metadata;
            must be JSON-serialisable.

    Attributes:
        count: number of rows seen.
        encoder: as given.
        protocol: as given.
    """

    def __init__(self, *, encoder: str | None = None, protocol: dict[str, Any] | None = None) -> None:
        self.encoder = encoder
        self.protocol: dict[str, Any] = dict(protocol or {})
        self.count = 0
        self._mean: np.ndarray | None = None  # [D]
        self._m2: np.ndarray | None = None  # [D, D] sum of centred outer products

    def __repr__(self) -> str:
        return f"FeatureStats(count={self.count}, dim={self.dim}, encoder={self.encoder!r})"

    @property
    def dim(self) -> int | None:
        """Feature width ``D``, or ``None`` before the first update."""
        return None if self._mean is None else int(self._mean.shape[0])

    @property
    def mean(self) -> np.ndarray:
        """``[D]`` float64 mean of all rows seen."""
        if self._mean is None or self.count == 0:
            raise ValueError("FeatureStats is empty; call update() first")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """``[D, D]`` float64 unbiased covariance (divides by ``count - 1``), as ``np.cov(feats, rowvar=False)``."""
        if self._m2 is None or self.count < 2:
            raise ValueError(f"covariance needs at least 2 rows, have {self.count}")
        return self._m2 / (self.count - 1)

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Fold in a group with ``n_b`` rows, mean ``mean_b`` [D] and centred scatter ``m2_b`` [D, D]."""
        if n_b == 0:
            return
        if self._mean is None or self._m2 is None or self.count == 0:
            self.count, self._mean, self._m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        if mean_b.shape != self._mean.shape:
            raise ValueError(f"feature width mismatch: have D={self._mean.shape[0]}, got D={mean_b.shape[0]}")
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        """Add a batch of features.

        Args:
            feats: ``[B, D]`` features (any float dtype; accumulated in float64). ``B = 0`` is a no-op.
        """
        x = _as_float64(feats)
        if x.ndim != 2:
            raise ValueError(f"feats must be [B, D], got shape {x.shape}")
        if x.shape[0] == 0:
            return
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._combine(x.shape[0], mean_b, centred.T @ centred)

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Fold another ``FeatureStats`` (e.g. another shard or worker) into this one.

        Args:
            other: statistics of other rows of features from the same encoder and protocol.

        Returns:
            ``self``, for chaining.
        """
        if other.count == 0 or other._mean is None or other._m2 is None:
            return self
        if self.encoder is not None and other.encoder is not None and self.encoder != other.encoder:
            logger.warning("merging FeatureStats of different encoders: %r and %r", self.encoder, other.encoder)
        self._combine(other.count, other._mean, other._m2)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the statistics to a safetensors file.

        Tensors: ``mean`` [D] and ``m2`` [D, D] (float64), ``count`` [1] (int64). Metadata: ``format``, ``encoder``
        and ``protocol`` (JSON).

        Args:
            path: output file, conventionally ``*.safetensors``.
        """
        from safetensors.numpy import save_file

        if self._mean is None or self._m2 is None or self.count == 0:
            raise ValueError("cannot save an empty FeatureStats")
        metadata = {
            "format": _STATS_FORMAT,
            "encoder": self.encoder or "",
            "protocol": json.dumps(self.protocol, sort_keys=True),
        }
        tensors = {
            "mean": np.ascontiguousarray(self._mean),
            "m2": np.ascontiguousarray(self._m2),
            "count": np.array([self.count], dtype=np.int64),
        }
        save_file(tensors, os.fspath(path), metadata=metadata)
        logger.info("saved FeatureStats (N=%d, D=%d) to %s", self.count, self.dim, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read statistics written by :meth:`save`.

        Args:
            path: a safetensors file from :meth:`save`.

        Returns:
            The ``FeatureStats``, bit-identical to the saved one, with its encoder and protocol.
        """
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _STATS_FORMAT:
                raise ValueError(f"{path} is not a FeatureStats file (format={metadata.get('format')!r})")
            mean, m2, count = f.get_tensor("mean"), f.get_tensor("m2"), f.get_tensor("count")
        stats = cls(encoder=metadata.get("encoder") or None, protocol=json.loads(metadata.get("protocol") or "{}"))
        stats.count, stats._mean, stats._m2 = int(count[0]), mean.astype(np.float64), m2.astype(np.float64)
        return stats


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
    *,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between two Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``, computed in float64 as in the pytorch-fid
    reference (``fid_score.calculate_frechet_distance``): ``sqrt`` is ``scipy.linalg.sqrtm``; if the square root of the
    product is not finite (singular product, e.g. fewer samples than dimensions), it is recomputed on
    ``(sigma1 + eps I)(sigma2 + eps I)``; a complex result with diagonal imaginary parts below ``1e-3`` is rounded to
    its real part, and a larger imaginary part raises. The value is returned as is (it can be a tiny negative number
    when the two Gaussians coincide).

    Args:
        mu1: ``[D]`` mean of the first set (e.g. generated images' features).
        sigma1: ``[D, D]`` covariance of the first set.
        mu2: ``[D]`` mean of the second set (e.g. reference images' features).
        sigma2: ``[D, D]`` covariance of the second set.
        eps: diagonal offset used when the covariance product is singular.

    Returns:
        The squared Fréchet distance (what is reported as FID / FD-DINOv2), ``>= 0`` up to rounding.

    Raises:
        ValueError: on mismatched shapes, or when ``sqrtm`` gives a significantly complex result.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors must both be [D], got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must both be [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")

    diff = mu1 - mu2
    with np.errstate(all="ignore"):
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("frechet_distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has a large imaginary component {np.abs(covmean.imag).max():g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats, *, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussian fits of two :class:`FeatureStats`.

    Args:
        a: statistics of one set (e.g. generated images).
        b: statistics of the other (e.g. reference images), same encoder and protocol.
        eps: see :func:`frechet_distance`.

    Returns:
        ``frechet_distance(a.mean, a.cov, b.mean, b.cov)``.
    """
    if a.encoder is not None and b.encoder is not None and a.encoder != b.encoder:
        logger.warning("Fréchet distance between features of different encoders: %r and %r", a.encoder, b.encoder)
    if a.protocol and b.protocol and a.protocol != b.protocol:
        logger.warning("Fréchet distance between features of different protocols: %r and %r", a.protocol, b.protocol)
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, eps=eps)


def inception_score(
    logits: torch.Tensor | np.ndarray, *, splits: int = 10, from_logits: bool | None = None
) -> tuple[float, float]:
    """Inception Score from the class predictions of any classifier.

    ``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean prediction, computed on each of ``splits`` contiguous
    parts of the rows, in order: part ``i`` is rows ``i * N // splits`` to ``(i + 1) * N // splits`` (exclusive), the
    boundaries of the original Salimans et al. 2016 code and of torch-fidelity's ``isc_features_to_metric`` (which
    shuffles the rows first by default; torchmetrics shuffles too and cuts with ``torch.chunk``, which differs when
    ``N`` is not a multiple of ``splits``). With Inception-v3 logits on 50k images this is the classic IS; here it
    is defined for any classifier.
    It ranges from 1 (every prediction identical) to ``K`` (confident and uniformly spread over the classes).

    Args:
        logits: ``[N, K]`` class logits, or probabilities (rows non-negative, summing to 1).
        splits: number of parts; each needs at least one row.
        from_logits: ``True``: softmax the rows; ``False``: they are probabilities; ``None``: probabilities when
            every row is non-negative and sums to 1 (within 1e-6), else logits.

    Returns:
        ``(mean, std)`` of the score over the splits (``std`` with ``ddof=0``, as in the original code).
    """
    x = _as_float64(logits)
    if x.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    if from_logits is None:
        from_logits = not (np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, rtol=0, atol=1e-6))
    probs = scipy.special.softmax(x, axis=1) if from_logits else x
    scores = []
    for i in range(splits):  # Salimans et al.'s boundaries, also torch-fidelity's: not np.array_split's
        part = probs[i * n // splits : (i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        kl = scipy.special.rel_entr(part, py).sum(axis=1)  # 0 log 0 = 0
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def clip_score(
    image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray, *, scale: float = 100.0
) -> float:
    """CLIP score of paired image and text embeddings.

    ``mean_i max(scale * cos(image_emb[i], text_emb[i]), 0)``: Hessel et al. 2021's CLIP-S with ``w = scale`` (they
    use 2.5; torchmetrics and most generation papers use 100). The clamp is per pair, as in Hessel et al.;
    torchmetrics' ``CLIPScore`` clamps the mean instead, which gives the same number whenever no pair has a negative
    cosine (the usual case for matched image-caption pairs).

    Args:
        image_emb: ``[N, D]`` image embeddings (``Features.pooled`` of a CLIP/SigLIP encoder); need not be normalised.
        text_emb: ``[N, D]`` text embeddings of the matching captions (``Encoder.encode_text``).
        scale: the multiplier ``w``.

    Returns:
        The mean score, in ``[0, scale]``.
    """
    a, b = _as_float64(image_emb), _as_float64(text_emb)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"image_emb and text_emb must both be [N, D] with N > 0, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1).clip(min=1e-12)
    nb = np.linalg.norm(b, axis=1).clip(min=1e-12)
    cos = (a * b).sum(axis=1) / (na * nb)
    return float(np.maximum(scale * cos, 0.0).mean())


def encoder_features(encoder: Any, images: Any, *, batch_size: int = 64, progress: bool | None = None) -> torch.Tensor:
    """Pooled features of images from any encoder, for FD-DINOv2 / FD-CLIP.

    Args:
        encoder: a :class:`visionfm.Encoder` (anything with ``encode(images, batch_size=..., ...)`` returning
            ``Features``).
        images: what ``Encoder.encode`` takes: HWC uint8 arrays, PIL images, paths, or a list of them.
        batch_size: images per forward pass.
        progress: tqdm bar; default: when there is more than one batch.

    Returns:
        ``[N, D]`` float64 CPU tensor of ``Features.pooled``, one row per image in input order.

    Example:
        >>> import numpy as np, visionfm as vfm
        >>> from visionfm.testing import tiny_checkpoint
        >>> enc = vfm.load_encoder(tiny_checkpoint("dinov2"), device="cpu")
        >>> tuple(encoder_features(enc, [np.zeros((32, 32, 3), np.uint8)] * 3).shape)
        (3, 32)
    """
    feats = encoder.encode(images, batch_size=batch_size, progress=progress, output_device="cpu")
    return feats.pooled.detach().to(dtype=torch.float64)


# -- classic FID / IS: Inception-v3 as in torch-fidelity / torchmetrics ------------------------------------------------
#: Where :func:`find_inception_weights` looks when no path is given (after ``$VISIONFM_INCEPTION_WEIGHTS``).
INCEPTION_CACHE = os.path.join("~", ".cache", "visionfm", "inception", "pt_inception-2015-12-05.safetensors")


def find_inception_weights(path: str | os.PathLike | None = None) -> str | None:
    """The local FID Inception weights: ``path``, else ``$VISIONFM_INCEPTION_WEIGHTS``, else :data:`INCEPTION_CACHE`.

    Returns ``None`` when none of them is an existing file (nothing is ever downloaded).
    """
    for cand in (path, os.environ.get("VISIONFM_INCEPTION_WEIGHTS"), INCEPTION_CACHE):
        if cand and os.path.isfile(os.path.expanduser(os.fspath(cand))):
            return os.path.expanduser(os.fspath(cand))
    return None


class InceptionFeatures(torch.nn.Module):
    """The FID Inception-v3 (torch-fidelity's ``FeatureExtractorInceptionV3``, the network torchmetrics' FID and IS
    use), loaded from a local file; it never downloads.

    Input: uint8 ``[B, 3, H, W]`` images of any size (resized to 299 inside, as TF1's bilinear resize did).
    Output: ``{"pool": [B, 2048] float32, "logits_unbiased": [B, 1008] float32}`` — pool features for FID, logits
    for the Inception Score.

    Args:
        weights: ``pt_inception-2015-12-05`` weights as safetensors (preferred; see
            :func:`convert_inception_weights`) or the original ``.pth`` — the latter only with
            ``allow_pickle=True`` (read with ``torch.load(weights_only=True)``).
        allow_pickle: permit a pickle ``.pth`` file.

    Raises:
        ImportError: torch-fidelity is not installed (``pip install "visionfm[fid]"``).
        ValueError: a pickle file without ``allow_pickle=True``.
    """

    def __init__(self, weights: str | os.PathLike, *, allow_pickle: bool = False) -> None:
        super().__init__()
        state = read_inception_weights(weights, allow_pickle=allow_pickle)
        self.net = _build_fidelity_inception(state)
        self.weights = os.fspath(weights)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"InceptionFeatures takes uint8 [B, 3, H, W] images, got {images.dtype} {tuple(images.shape)}"
            )
        pool, logits = self.net(images)
        return {"pool": pool, "logits_unbiased": logits}


def read_inception_weights(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The Inception state dict from safetensors, or from a ``.pth`` pickle when ``allow_pickle=True``."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    if not allow_pickle:
        raise ValueError(
            f"Inception weights {path} are a pickle file; convert them once with "
            "visionfm.eval.generation_metrics.convert_inception_weights(path, out.safetensors), "
            "or pass allow_pickle=True"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def convert_inception_weights(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Convert torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth`` (pickle) to safetensors, once.

    Read with ``torch.load(weights_only=True)``: tensors only, no code runs.
    """
    from safetensors.torch import save_file

    state = read_inception_weights(src, allow_pickle=True)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(dst))), exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, os.fspath(dst))


def _build_fidelity_inception(state: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """torch-fidelity's extractor with ``state`` loaded (``None``: keep the random init); never downloads."""
    from unittest import mock

    try:
        from torch_fidelity import feature_extractor_inceptionv3 as fi
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError('classic FID/IS need torch-fidelity: pip install "visionfm[fid]"') from e
    cls = fi.FeatureExtractorInceptionV3
    # Its constructor downloads when given no path and torch.load()s (unsafely) when given one; hand it our tensors.
    with mock.patch.object(fi, "load_state_dict_from_url", lambda *a, **k: state if state is not None else {}):
        if state is None:
            with mock.patch.object(cls, "load_state_dict", lambda self, sd, strict=True: None):
                net = cls("inception-v3-compat", ["2048", "logits_unbiased"])
        else:
            net = cls("inception-v3-compat", ["2048", "logits_unbiased"])
    return net.eval()


def write_random_inception_weights(path: str | os.PathLike, *, seed: int = 0, pickle_copy: bool = False) -> None:
    """Random FID-Inception weights for tests (the real ones need a download), with calibrated BatchNorm statistics
    so that activations stay finite through the 40-odd layers. Writes ``path`` (safetensors) and, with
    ``pickle_copy``, ``path`` with suffix ``.pth`` for libraries that only read pickles (torchmetrics)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = _build_fidelity_inception(None)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (8, 3, 299, 299), generator=g, dtype=torch.uint8)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, os.fspath(path))
    if pickle_copy:
        torch.save(state, os.path.splitext(os.fspath(path))[0] + ".pth")
