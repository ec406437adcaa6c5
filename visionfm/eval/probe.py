"""Linear probe: multinomial logistic regression on frozen features, L2 strength chosen on a validation split.

The objective is convex and solved to (near) optimality by full-batch L-BFGS from zero, so the result is defined
by the data and the regularisation, not by optimiser noise: no random initialisation, no shuffling, float64.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .metrics import classification_metrics

logger = logging.getLogger(__name__)


def _standardise(fit_x: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    """Standardise ``xs`` with the mean and std of ``fit_x`` (``[N, D]``); zero-variance features get std 1."""
    mean = fit_x.mean(0, keepdim=True)
    std = fit_x.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in xs]


def _fit_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    lr: float,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE(x W^T + b, y) + weight_decay / 2 * ||W||^2`` by full-batch L-BFGS from zero.

    Args:
        x: ``[N, D]`` float64 (standardised) features.
        y: ``[N]`` int64 labels.
        num_classes: ``K``.
        weight_decay: L2 strength on ``W`` (the bias is not penalised).
        max_iter: L-BFGS iterations.
        lr: L-BFGS step length (1 is the natural scale with the strong-Wolfe line search).
        batch_size: rows per chunk when evaluating the full-batch loss and gradient (memory only).

    Returns:
        ``W`` ``[K, D]`` and ``b`` ``[K]``.
    """
    n, d = x.shape
    w = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=lr,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for s in range(0, n, batch_size):  # exact full-batch gradient, accumulated chunk by chunk
            logits = torch.addmm(b, x[s : s + batch_size], w.T)
            loss = torch.nn.functional.cross_entropy(logits, y[s : s + batch_size], reduction="sum") / n
            loss.backward()
            total += loss.detach()
        reg = 0.5 * weight_decay * w.pow(2).sum()
        reg.backward()
        return total + reg.detach()

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    weight_decays: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1),
    epochs: int = 100,
    lr: float = 1.0,
    batch_size: int = 65536,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float | int | dict[float, float]]:
    """Linear-probe accuracy: logistic regression, L2 strength chosen on ``val``, refit on ``train + val``, tested.

    For each ``weight_decay`` in the grid a multinomial logistic regression is fitted on ``train`` (features
    standardised with train's mean and std) and scored on ``val``. The one with the best val top-1 accuracy (the
    largest weight decay among equals) is refitted on ``train + val`` (standardised with their statistics) and
    evaluated on ``test``. The loss is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias unpenalised), the
    same objective as sklearn's ``LogisticRegression(C=1 / (weight_decay * n_samples))``; it is minimised in float64
    by full-batch L-BFGS (strong-Wolfe line search) from zero weights.

    Args:
        train_x: ``[N, D]`` training features.
        train_y: ``[N]`` integer labels in ``0..num_classes-1``.
        val_x: ``[Nv, D]`` validation features (``Nv >= 1``).
        val_y: ``[Nv]`` validation labels.
        test_x: ``[Nt, D]`` test features.
        test_y: ``[Nt]`` test labels.
        num_classes: number of classes ``K``.
        weight_decays: L2 strengths tried (``>= 0``).
        epochs: maximum L-BFGS iterations per fit (each is one full pass plus line-search passes).
        lr: L-BFGS step length.
        batch_size: rows per chunk when computing the full-batch loss (bounds memory; does not change the objective).
        seed: kept for interface stability; the solve involves no randomness, so it does not change the result.
        device: where the fit runs.

    Returns:
        ``{"acc1", "acc5" (if K >= 5), "mean_per_class_recall", "chosen_weight_decay", "val_acc1": {wd: acc},
        "train_samples", "val_samples", "test_samples"}``; accuracies in ``[0, 1]`` on ``test``.
    """
    del seed  # deterministic without it; see the docstring
    if not weight_decays or any(wd < 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be a non-empty sequence of values >= 0, got {weight_decays}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    xs = [torch.as_tensor(t).to(device=device, dtype=torch.float64) for t in (train_x, val_x, test_x)]
    ys = [torch.as_tensor(t).to(device=device, dtype=torch.long) for t in (train_y, val_y, test_y)]
    for name, x, y in zip(("train", "val", "test"), xs, ys):
        if x.ndim != 2 or x.shape[1] != xs[0].shape[1] or y.shape != (x.shape[0],):
            raise ValueError(f"{name}: features must be [n, {xs[0].shape[1]}] and labels [n]; got {x.shape}, {y.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} split is empty")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"{name} labels outside 0..{num_classes - 1}")
    (tr_x, va_x, te_x), (tr_y, va_y, te_y) = xs, ys
    fit = {"num_classes": num_classes, "max_iter": epochs, "lr": lr, "batch_size": batch_size}

    tr_s, va_s = _standardise(tr_x, tr_x, va_x)
    val_acc1: dict[float, float] = {}
    for wd in weight_decays:
        w, b = _fit_logreg(tr_s, tr_y, weight_decay=float(wd), **fit)
        val_acc1[float(wd)] = classification_metrics(torch.addmm(b, va_s, w.T).cpu(), va_y.cpu(), topk=(1,))["acc1"]
        logger.info("linear probe: weight_decay=%g val acc1=%.4f", wd, val_acc1[float(wd)])
    best = max(val_acc1.values())
    chosen = max(wd for wd, acc in val_acc1.items() if acc == best)

    all_x, all_y = torch.cat([tr_x, va_x]), torch.cat([tr_y, va_y])
    all_s, te_s = _standardise(all_x, all_x, te_x)
    w, b = _fit_logreg(all_s, all_y, weight_decay=chosen, **fit)
    test = classification_metrics(torch.addmm(b, te_s, w.T).cpu(), te_y.cpu(), topk=(1, 5))
    logger.info("linear probe: chose weight_decay=%g, test acc1=%.4f", chosen, test["acc1"])
    out: dict[str, float | int | dict[float, float]] = {k: v for k, v in test.items() if k != "samples"}
    out.update(
        chosen_weight_decay=chosen,
        val_acc1=val_acc1,
        train_samples=int(tr_x.shape[0]),
        val_samples=int(va_x.shape[0]),
        test_samples=int(te_x.shape[0]),
    )
    return out
