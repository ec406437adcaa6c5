"""Linear probe on sklearn's digits, against sklearn's LogisticRegression on the same standardised features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionfm.eval.probe import linear_probe

GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


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
