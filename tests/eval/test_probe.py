"""Linear probe on sklearn's digits and on ill-conditioned synthetic features, against sklearn's LogisticRegression on
the same standardised features, at 1 and 2 threads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from visionfm.eval.probe import _fit_logreg, _standardise, linear_probe

GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
FIT = {"max_iter": 1000, "batch_size": 65536}  # _fit_logreg's settings as linear_probe passes them by default


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, ...]:
    """Digits (1797 x 64, 10 classes) split 60/20/20, stratified: train_x, train_y, val_x, val_y, test_x, test_y."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    tr_x, rest_x, tr_y, rest_y = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    va_x, te_x, va_y, te_y = train_test_split(rest_x, rest_y, test_size=0.5, random_state=0, stratify=rest_y)
    return tr_x, tr_y, va_x, va_y, te_x, te_y


def _tensors(split: tuple[np.ndarray, ...]) -> list[torch.Tensor]:
    return [torch.from_numpy(a).float() if a.ndim == 2 else torch.from_numpy(a) for a in split]


def test_linear_probe_on_digits_is_accurate_deterministic_and_matches_sklearn(digits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    got = linear_probe(*_tensors(digits), num_classes=10, weight_decays=GRID)
    assert got == linear_probe(*_tensors(digits), num_classes=10, weight_decays=GRID, seed=1)  # identical dict
    assert set(got) == {
        "acc1",
        "acc5",
        "mean_per_class_recall",
        "chosen_weight_decay",
        "val_acc1",
        "train_samples",
        "val_samples",
        "test_samples",
    }
    assert got["acc1"] > 0.9 and got["acc5"] >= got["acc1"]
    assert got["chosen_weight_decay"] in GRID
    assert set(got["val_acc1"]) == set(GRID)
    assert got["val_acc1"][got["chosen_weight_decay"]] == max(got["val_acc1"].values())
    tr_x, tr_y, va_x, va_y, te_x, te_y = digits
    assert (got["train_samples"], got["val_samples"], got["test_samples"]) == (len(tr_y), len(va_y), len(te_y))

    # sklearn: same objective (C = 1 / (wd * n)) on train+val standardised with its own statistics
    all_x, all_y = np.concatenate([tr_x, va_x]), np.concatenate([tr_y, va_y])
    scaler = StandardScaler().fit(all_x)
    wd = got["chosen_weight_decay"]
    clf = LogisticRegression(C=1.0 / (wd * len(all_y)) if wd > 0 else np.inf, max_iter=2000, tol=1e-8)
    sk_acc = clf.fit(scaler.transform(all_x), all_y).score(scaler.transform(te_x), te_y)
    assert abs(got["acc1"] - sk_acc) <= 0.03
    # and the validation choice: each grid point scored like sklearn would on train-standardised features
    scaler = StandardScaler().fit(tr_x)
    for wd, acc in got["val_acc1"].items():
        if wd > 0:  # wd = 0 on separable data has no optimum; the iteration cap decides
            clf = LogisticRegression(C=1.0 / (wd * len(tr_y)), max_iter=2000, tol=1e-8)
            sk_val = clf.fit(scaler.transform(tr_x), tr_y).score(scaler.transform(va_x), va_y)
            assert abs(acc - sk_val) <= 0.01, wd


def test_linear_probe_few_classes_and_chunking():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3, size=(3, 5))

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = rng.integers(0, 3, n)
        return torch.from_numpy(centres[y] + rng.normal(size=(n, 5))), torch.from_numpy(y)

    data = [*split(120), *split(40), *split(60)]
    got = linear_probe(*data, num_classes=3, weight_decays=(1e-3, 1e-1), epochs=50)
    assert "acc5" not in got and got["acc1"] > 0.8
    chunked = linear_probe(*data, num_classes=3, weight_decays=(1e-3, 1e-1), epochs=50, batch_size=16)
    assert chunked["chosen_weight_decay"] == got["chosen_weight_decay"]
    assert chunked["acc1"] == pytest.approx(got["acc1"], abs=1 / 60)


def test_linear_probe_rejects_bad_input():
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match="outside"):
        linear_probe(x, y, x, y + 3, x, y, num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        linear_probe(x, y, x[:0], y[:0], x, y, num_classes=3)
    with pytest.raises(ValueError, match="weight_decays"):
        linear_probe(x, y, x, y, x, y, num_classes=3, weight_decays=(-1.0,))


# ----------------------------------------------------------------------------------------------------------------------
# convergence: thread-count invariance, agreement with sklearn, the iteration cap
# ----------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _low_rank_features() -> tuple[np.ndarray, np.ndarray]:
    """22000 x 200 features of rank 20 plus 1% isotropic noise (180 directions of tiny variance: ill-conditioned) and
    10 classes from a noisy linear teacher."""
    rng = np.random.default_rng(0)
    n, d, k, rank = 22000, 200, 10, 20
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + 0.01 * rng.normal(size=(n, d))
    y = np.argmax(x @ rng.normal(size=(d, k)) / np.sqrt(d * rank) + rng.gumbel(size=(n, k)), 1)
    return x, y


def _power_law_features(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` x 200 features with a power-law spectrum (axis ``i`` has std ``1 / i``, randomly rotated, offset by 3), as
    real features have, and ``k`` classes from a noisy linear teacher."""
    rng = np.random.default_rng(seed)
    d = 200
    rot, _ = np.linalg.qr(rng.normal(size=(d, d)))
    g = rng.normal(size=(n, d))
    x = (g / np.arange(1, d + 1)) @ rot.T + 3.0
    teacher = rng.normal(size=(d, k)) / np.sqrt(np.arange(1, d + 1))[:, None]
    return x, np.argmax(g @ teacher + rng.gumbel(size=(n, k)), 1)


def test_fit_is_converged_and_the_same_at_1_and_2_threads():
    """1 and 2 threads only change rounding; a converged fit absorbs it. (Capped at 100 iterations, this fit's weights
    differed by 9e-3 between thread counts and predictions off the training span flipped.)"""
    from sklearn.linear_model import LogisticRegression

    x, y = _low_rank_features()
    n, wd = 2000, 1e-4
    off_span = x[n : 2 * n] + 3.0 * np.random.default_rng(123).normal(size=(n, x.shape[1]))
    tr_x, tr_y = torch.from_numpy(x[:n]), torch.from_numpy(y[:n])
    fits = {}
    for threads in (1, 2):
        with _torch_threads(threads):
            assert torch.get_num_threads() == threads
            tr, held, off = _standardise(tr_x, tr_x, torch.from_numpy(x[n:]), torch.from_numpy(off_span))
            w, b = _fit_logreg(tr, tr_y, num_classes=10, weight_decay=wd, **FIT)
            fits[threads] = (w, torch.addmm(b, held, w.T), torch.addmm(b, off, w.T))
    (w1, held1, off1), (w2, held2, off2) = fits[1], fits[2]
    assert torch.equal(held1.argmax(1), held2.argmax(1))  # 20000 held-out points
    assert torch.equal(off1.argmax(1), off2.argmax(1))  # 2000 points off the span, where only the optimum is pinned
    assert float((w1 - w2).abs().max()) <= 1e-6 * float(w1.abs().max())

    # the optimum itself: sklearn's multinomial lbfgs, C = 1 / (wd * n), on the same standardised features
    clf = LogisticRegression(C=1.0 / (wd * n), tol=1e-10, max_iter=10000).fit(tr.numpy(), tr_y.numpy())
    want = clf.predict_proba(held.numpy())
    np.testing.assert_allclose(torch.softmax(held1, 1).numpy(), want, rtol=0, atol=1e-5)
    assert np.array_equal(held1.argmax(1).numpy(), want.argmax(1))


@pytest.mark.parametrize("k", [10, 2])
def test_fit_matches_sklearn_on_ill_conditioned_features(k):
    """Probabilities equal sklearn's at the documented C: ``1 / (wd * n)`` for K >= 3, ``2 / (wd * n)`` for K = 2 (one
    weight vector ``W[1] - W[0]`` in sklearn). sklearn's newton-cholesky solves to machine precision: a tighter check.
    (Capped at 100 iterations, these fits were off by 0.1 in probability.)"""
    from sklearn.linear_model import LogisticRegression

    x, y = _power_law_features(4000, k)
    n, wd = 2000, 1e-3
    tr_x, tr_y = torch.from_numpy(x[:n]), torch.from_numpy(y[:n])
    tr, held = _standardise(tr_x, tr_x, torch.from_numpy(x[n:]))
    w, b = _fit_logreg(tr, tr_y, num_classes=k, weight_decay=wd, **FIT)
    got = torch.softmax(torch.addmm(b, held, w.T), 1).numpy()
    c = (1.0 if k >= 3 else 2.0) / (wd * n)
    sk = {"X": tr.numpy(), "y": tr_y.numpy()}
    lbfgs = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(**sk)
    np.testing.assert_allclose(got, lbfgs.predict_proba(held.numpy()), rtol=0, atol=1e-5)
    assert np.array_equal(got.argmax(1), lbfgs.predict(held.numpy()))
    newton = LogisticRegression(C=c, solver="newton-cholesky", tol=1e-12, max_iter=100).fit(**sk)
    np.testing.assert_allclose(got, newton.predict_proba(held.numpy()), rtol=0, atol=1e-7)
    if k == 2:  # the K >= 3 mapping is the wrong objective here
        wrong = LogisticRegression(C=1.0 / (wd * n), tol=1e-10, max_iter=10000).fit(**sk)
        assert np.abs(wrong.predict_proba(held.numpy()) - got).max() > 1e-3

    # end to end: one grid point, refit on train + val, test accuracy equal to sklearn's on the same split
    split = [torch.from_numpy(a) for a in (x[:1500], y[:1500], x[1500:n], y[1500:n], x[n:], y[n:])]
    out = linear_probe(*split, num_classes=k, weight_decays=(wd,))
    all_x = torch.from_numpy(x[:n])
    all_s, test_s = _standardise(all_x, all_x, torch.from_numpy(x[n:]))
    ref = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(all_s.numpy(), y[:n])
    assert out["acc1"] == pytest.approx(ref.score(test_s.numpy(), y[n:]), abs=1e-12)


def test_linear_probe_warns_when_the_iteration_cap_is_hit(caplog, capsys):
    x, y = _power_law_features(900, 10)
    split = [torch.from_numpy(a) for a in (x[:500], y[:500], x[500:700], y[500:700], x[700:], y[700:])]
    with caplog.at_level(logging.WARNING, logger="visionfm.eval.probe"):
        linear_probe(*split, num_classes=10, weight_decays=(1e-3,), epochs=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("did not converge" in m and "raise epochs" in m for m in warnings)  # fit, refit
    assert capsys.readouterr().out == ""  # logging, not print
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="visionfm.eval.probe"):
        linear_probe(*split, num_classes=10, weight_decays=(1e-3,))  # the default cap is not reached
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_train_val_split_is_stratified_seeded_and_deterministic():
    from visionfm.eval.probe import train_val_split

    y = torch.arange(5).repeat_interleave(torch.tensor([10, 20, 5, 1, 14]))  # sorted by class, like an imagefolder
    tr, va = train_val_split(y, val_fraction=0.2, seed=0)
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(len(y)))  # disjoint, covers everything
    assert tr.tolist() == sorted(tr.tolist()) and va.tolist() == sorted(va.tolist())
    per_class = torch.bincount(y[va], minlength=5).tolist()
    assert per_class == [2, 4, 1, 0, 3]  # 20% of each class, at least one; a singleton class stays in train
    assert set(y[tr].tolist()) == set(range(5))
    again = train_val_split(y, val_fraction=0.2, seed=0)
    assert torch.equal(again[0], tr) and torch.equal(again[1], va)
    other = train_val_split(y, val_fraction=0.2, seed=1)[1]
    assert not torch.equal(other, va) and torch.bincount(y[other], minlength=5).tolist() == per_class


def test_linear_probe_task_without_val_validates_on_every_class(monkeypatch):
    from types import SimpleNamespace

    import visionfm.eval.probe as probe_module
    from visionfm.eval.tasks import linear_probe as probe_task

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(4, 6))
    y = torch.arange(4).repeat_interleave(25)  # dataset order = class order: the last 20% is class 3 only
    x = torch.from_numpy(centres[y.numpy()] + rng.normal(size=(len(y), 6))).float()
    feats = {"pooled": x, "label": y, "valid": torch.ones(len(y), dtype=torch.bool), "index": torch.arange(len(y))}
    seen = []
    real = probe_module.linear_probe
    monkeypatch.setattr(probe_module, "linear_probe", lambda *a, **k: seen.append(a) or real(*a, **k))
    task = {"name": "lp", "task": "linear_probe", "train": "tr", "test": "te", "epochs": 50,
            "weight_decays": [1e-3, 1e-1], "classnames": ["a", "b", "c", "d"]}  # fmt: skip
    res = probe_task(SimpleNamespace(features=lambda name: feats), task)
    fit_y, val_y = seen[0][1], seen[0][3]
    assert torch.bincount(val_y, minlength=4).tolist() == [5, 5, 5, 5]  # every class, 20% of each
    assert torch.bincount(fit_y, minlength=4).tolist() == [20, 20, 20, 20]
    assert res["metrics"]["acc1"] > 0.9 and "stratified" in res["protocol"]["val"]
    again = probe_task(SimpleNamespace(features=lambda name: feats), task)
    assert torch.equal(seen[1][3], val_y) and again == res  # seeded: the same split and result every time
