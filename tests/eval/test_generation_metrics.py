"""Generation metrics against direct formulas, scipy and torchmetrics' Fréchet-distance function."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch

from visionfm.eval.generation_metrics import (
    FeatureStats,
    clip_score,
    encoder_features,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features ``[n, d]`` with a random mixing matrix."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d) + shift


def _fd_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance written out with scipy.linalg.sqrtm."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(("seed", "d", "n1", "n2"), [(0, 16, 200, 300), (1, 32, 500, 250), (2, 64, 400, 500)])
def test_frechet_distance_matches_scipy_and_torchmetrics(seed, d, n1, n2):
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(seed)
    x, y = _features(rng, n1, d), _features(rng, n2, d)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got > 0
    assert got == pytest.approx(_fd_direct(x, y), rel=1e-6)
    t = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    assert got == pytest.approx(float(_compute_fid(*t)), rel=1e-6)
    # torch inputs give the same value
    assert frechet_distance(*t) == pytest.approx(got, rel=1e-12)


def test_frechet_distance_rank_deficient_covariances_stay_finite():
    rng = np.random.default_rng(3)
    x, y = _features(rng, 10, 32), _features(rng, 12, 32)  # fewer rows than dims: rank-deficient covariances
    fd = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(fd) and fd > 0


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mean vectors"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))


def test_feature_stats_streaming_and_merge_match_numpy():
    rng = np.random.default_rng(4)
    x = _features(rng, 437, 24) + 1e3  # large common offset: a naive sum of outer products would lose digits
    bounds = [0, 1, 9, 50, 51, 200, 333, 437]  # 7 uneven batches, one of a single row
    stats = FeatureStats()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        stats.update(torch.from_numpy(x[lo:hi]) if lo == 9 else x[lo:hi])  # tensors and arrays both accepted
    stats.update(np.zeros((0, 24)))  # an empty batch is a no-op
    assert stats.count == 437
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)

    shards = [FeatureStats(), FeatureStats(), FeatureStats()]
    for shard, part in zip(shards, np.array_split(x, [100, 301]), strict=True):
        shard.update(part[: len(part) // 2])
        shard.update(part[len(part) // 2 :])
    merged = FeatureStats().merge(shards[0]).merge(shards[1]).merge(shards[2])
    assert merged.count == 437
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)

    y = _features(rng, 300, 24) + 1e3
    ref = FeatureStats()
    ref.update(y)
    fd_arrays = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_from_stats(merged, ref) == pytest.approx(fd_arrays, rel=1e-8)
    assert frechet_distance_from_stats(stats, ref) == pytest.approx(fd_arrays, rel=1e-8)


def test_feature_stats_errors():
    stats = FeatureStats()
    with pytest.raises(ValueError, match="empty"):
        _ = stats.mean
    stats.update(np.ones((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.cov
    with pytest.raises(ValueError, match="width"):
        stats.update(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        stats.update(np.ones(4))


def test_frechet_distance_identity_and_monotone_in_shift():
    rng = np.random.default_rng(5)
    x = _features(rng, 400, 32)
    stats = FeatureStats()
    stats.update(x)
    assert abs(frechet_distance_from_stats(stats, stats)) < 1e-6
    fds = []
    for shift in [0.0, 0.1, 0.5, 1.0, 2.0]:
        shifted = FeatureStats()
        shifted.update(x + shift)
        fds.append(frechet_distance_from_stats(stats, shifted))
    assert abs(fds[0]) < 1e-6
    assert all(b > a for a, b in zip(fds[:-1], fds[1:], strict=True))
    # a pure mean shift adds exactly ||shift||^2
    assert fds[-1] == pytest.approx(32 * 2.0**2, rel=1e-6)


def _is_direct(probs: np.ndarray, splits: int) -> tuple[float, float]:
    """Salimans et al.'s ``inception_score.py``: part ``i`` is rows ``i * N // splits`` to ``(i + 1) * N // splits``."""
    n, scores = len(probs), []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        py = part.mean(0)
        kl = [sum(p[k] * np.log(p[k] / py[k]) for k in range(len(p)) if p[k] > 0) for p in part]
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize(("seed", "splits"), [(0, 1), (1, 10), (2, 7)])
def test_inception_score_matches_direct_formula(seed, splits):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(230, 12)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    want = _is_direct(probs, splits)
    for inp in (logits, torch.from_numpy(logits).float(), probs):
        mean, std = inception_score(inp, splits=splits)
        assert mean == pytest.approx(want[0], rel=1e-5)
        assert std == pytest.approx(want[1], rel=1e-4, abs=1e-6)
    assert inception_score(probs, splits=splits, from_logits=False) == pytest.approx(want, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(("seed", "n", "splits"), [(0, 230, 7), (1, 1003, 10), (2, 59, 4), (3, 21, 20)])
def test_inception_score_splits_equal_torch_fidelity(seed, n, splits):
    """Uneven splits (``N`` not a multiple of ``splits``) cut where Salimans et al. and torch-fidelity cut."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    assert n % splits
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 12)) * 3
    logits[:, 0] += np.linspace(-6, 6, n)  # the class mix drifts along the rows: where the cuts fall matters
    probs = scipy.special.softmax(logits, axis=1)
    want = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=False)
    want = (want["inception_score_mean"], want["inception_score_std"])
    assert inception_score(logits, splits=splits) == pytest.approx(want, rel=1e-12, abs=1e-13)
    assert inception_score(probs, splits=splits, from_logits=False) == pytest.approx(want, rel=1e-12, abs=1e-13)
    # torch-fidelity's default shuffles with its seed first; the same permutation here gives the same score
    shuffled = isc_features_to_metric(torch.from_numpy(logits), splits=splits)
    perm = np.random.RandomState(2020).permutation(n)
    assert inception_score(logits[perm], splits=splits) == pytest.approx(
        (shuffled["inception_score_mean"], shuffled["inception_score_std"]), rel=1e-12, abs=1e-13
    )


def test_inception_score_extremes():
    k = 10
    uniform = np.full((50, k), 1.0 / k)
    assert inception_score(uniform, splits=5) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert inception_score(np.zeros((50, k)), splits=5)[0] == pytest.approx(1.0)  # equal logits: uniform
    one_hot = np.tile(np.eye(k), (4, 1))  # each of 4 splits holds every class exactly once
    mean, std = inception_score(one_hot, splits=4)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="splits"):
        inception_score(one_hot, splits=41)


def test_clip_score_matches_definition():
    rng = np.random.default_rng(6)
    img = torch.from_numpy(rng.normal(size=(64, 16)))
    txt = torch.from_numpy(rng.normal(size=(64, 16)))
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    want = float(torch.clamp(100 * cos, min=0).mean())
    assert (cos < 0).any()  # the per-pair clamp matters here
    assert clip_score(img, txt) == pytest.approx(want, rel=1e-10)
    assert clip_score(img.numpy(), txt.numpy(), scale=2.5) == pytest.approx(want * 0.025, rel=1e-10)
    # matched pairs with positive cosines: same as torchmetrics' clamp-of-the-mean
    close = img + 0.1 * txt
    cos2 = torch.nn.functional.cosine_similarity(close, img, dim=-1)
    assert (cos2 > 0).all()
    assert clip_score(close, img) == pytest.approx(float(torch.clamp((100 * cos2).mean(), min=0)), rel=1e-10)
    assert clip_score(img, img) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        clip_score(img, txt[:3])


def test_feature_stats_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    protocol = {"image_size": 224, "dataset": "toy", "split": "val", "resize": [256, "bicubic"]}
    stats = FeatureStats(encoder="dinov2-small", protocol=protocol)
    stats.update(_features(rng, 123, 20))
    stats.update(_features(rng, 45, 20))
    path = tmp_path / "ref.safetensors"
    stats.save(path)
    loaded = FeatureStats.load(path)
    assert loaded.count == stats.count
    assert loaded.encoder == "dinov2-small" and loaded.protocol == protocol
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    assert frechet_distance_from_stats(loaded, stats) == frechet_distance_from_stats(stats, stats)
    # loaded statistics keep streaming
    more = _features(rng, 10, 20)
    loaded.update(more)
    stats.update(more)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    with pytest.raises(ValueError, match="empty"):
        FeatureStats().save(tmp_path / "empty.safetensors")


def test_encoder_features_on_tiny_encoder(tiny_root):
    import visionfm as vfm
    from visionfm.testing import tiny_checkpoint

    enc = vfm.load_encoder(tiny_checkpoint("dinov2", root=tiny_root), device="cpu")
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, size=(40 + 4 * i, 48, 3), dtype=np.uint8) for i in range(5)]
    feats = encoder_features(enc, images, batch_size=2)
    assert feats.shape == (5, enc.info.embed_dim)
    assert feats.dtype == torch.float64 and feats.device.type == "cpu"
    single = encoder_features(enc, images[3:4])
    torch.testing.assert_close(single[0], feats[3], rtol=1e-4, atol=1e-5)
    stats = FeatureStats(encoder=enc.info.name)
    stats.update(feats)
    assert stats.count == 5 and stats.cov.shape == (enc.info.embed_dim, enc.info.embed_dim)
