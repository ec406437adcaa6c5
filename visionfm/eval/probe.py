"""Linear probe: multinomial logistic regression on frozen features, L2 strength chosen on a validation split.

The objective is strictly convex for a positive weight decay and is minimised in float64 by full-batch L-BFGS
(scipy's L-BFGS-B, the solver behind sklearn's ``lbfgs``), preconditioned by the features' principal axes, from zero
until converged: the gradient vanishes (max-abs ``<= tol``) or float64 can no longer lower the loss. The result is
then the optimum, defined by the data and the regularisation, not by optimiser noise (no random initialisation, no
shuffling) nor by the thread count, world size or chunking: those only change rounding, which moves a converged
solution by about 1e-8 in the logits, where an iteration-capped one can move by 1e-2. The iteration count is only a
cap; a fit that reaches it has not converged and logs a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.optimize
import torch

from .metrics import classification_metrics

logger = logging.getLogger(__name__)


def _standardise(fit_x: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    """Standardise ``xs`` with the mean and std of ``fit_x`` (``[N, D]``); zero-variance features get std 1."""
    mean = fit_x.mean(0, keepdim=True)
    std = fit_x.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return [(x - mean) / std for x in xs]


def _principal_axes(x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the second moment ``x^T x / N`` of ``x`` ``[N, D]`` (the covariance when centred).

    Returns:
        Eigenvalues ``[D]`` (``>= 0``, ascending) and orthonormal eigenvectors ``[D, D]`` (columns), ``x``'s dtype.
    """
    n, d = x.shape
    m = torch.zeros(d, d, dtype=x.dtype, device=x.device)
    for s in range(0, n, batch_size):
        m.addmm_(x[s : s + batch_size].T, x[s : s + batch_size])
    evals, evecs = torch.linalg.eigh(m / n)
    return evals.clamp(min=0), evecs


def _fit_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    weight_decay: float,
    max_iter: int,
    batch_size: int,
    tol: float = 1e-10,
    axes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE(x W^T + b, y) + weight_decay / 2 * ||W||^2`` by full-batch L-BFGS from zero, to convergence.

    The loss and its exact gradient are computed in ``x``'s dtype (float64 from :func:`linear_probe`) on ``x``'s
    device; scipy's L-BFGS-B (20 corrections, up to 50 line-search steps) takes the steps. The variables are
    preconditioned, which changes the path but not the optimum: ``W = V S U^T`` with ``U`` the principal axes of ``x``
    and ``S`` the diagonal ``(lambda / K + weight_decay)^(-1/2)``, the inverse square root of the objective's curvature
    along each axis at the start (``lambda`` its eigenvalue), and L-BFGS works on ``V``. Ill-conditioned features (a
    few dominant directions, as real features have) then converge in tens of iterations instead of thousands.

    It stops when the preconditioned gradient's largest absolute entry is ``<= tol``, or when a step no longer lowers
    the loss in float64 (the precision floor). With the strong convexity a positive ``weight_decay`` gives, either
    means the optimum is reached to within rounding. Reaching ``max_iter`` instead means the fit did not converge
    (the cap is too low, or ``weight_decay = 0`` on separable data, which has no optimum): the last iterate is
    returned and a warning is logged.

    Args:
        x: ``[N, D]`` float (standardised) features.
        y: ``[N]`` int64 labels in ``0..num_classes-1``.
        num_classes: ``K``.
        weight_decay: L2 strength on ``W`` (``>= 0``; the bias is not penalised).
        max_iter: cap on L-BFGS iterations (each is one full pass, plus more when the line search needs them).
        batch_size: rows per chunk when evaluating the full-batch loss and gradient (memory only).
        tol: convergence threshold on the preconditioned gradient's max-abs entry.
        axes: :func:`_principal_axes` of ``x`` if already computed (it does not depend on ``weight_decay``).

    Returns:
        ``W`` ``[K, D]`` and ``b`` ``[K]``, in ``x``'s dtype and on its device.
    """
    n, d = x.shape
    k = num_classes
    evals, u = _principal_axes(x, batch_size) if axes is None else axes
    curv = evals / k + weight_decay  # [D] initial curvature along each axis (softmax Hessian ~ 1/K at W = 0)
    scale_w = curv.clamp(min=1e-10 * float(curv.max())).rsqrt()  # [D]; the floor only matters when weight_decay = 0
    scale_b = float(k) ** 0.5
    rows = torch.arange(min(n, batch_size), device=x.device)

    def unpack(theta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Optimiser variables -> ``W`` ``[K, D]`` (through the principal axes) and ``b`` ``[K]``."""
        params = torch.from_numpy(theta).to(device=x.device, dtype=x.dtype)
        return (params[: k * d].view(k, d) * scale_w) @ u.T, params[k * d :] * scale_b

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = unpack(theta)
        loss = torch.zeros((), dtype=x.dtype, device=x.device)
        grad_w, grad_b = weight_decay * w, torch.zeros_like(b)
        for s in range(0, n, batch_size):  # exact full-batch loss and gradient, accumulated chunk by chunk
            xc, yc = x[s : s + batch_size], y[s : s + batch_size]
            logits = torch.addmm(b, xc, w.T)
            lse = torch.logsumexp(logits, dim=1)
            loss += (lse - logits.gather(1, yc.view(-1, 1)).view(-1)).sum()
            resid = torch.exp(logits - lse.view(-1, 1))  # softmax - onehot: d(sum CE) / d logits
            resid[rows[: len(yc)], yc] -= 1.0
            grad_w.addmm_(resid.T, xc, alpha=1.0 / n)
            grad_b += resid.sum(0) / n
        loss = loss / n + 0.5 * weight_decay * w.pow(2).sum()
        grad = torch.cat([((grad_w @ u) * scale_w).reshape(-1), grad_b * scale_b])  # chain rule through unpack
        return float(loss), grad.to(device="cpu", dtype=torch.float64).numpy()

    res = scipy.optimize.minimize(
        loss_grad,
        np.zeros(k * (d + 1), dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        options={
            "maxiter": max_iter,
            "maxfun": 50 * max_iter + 50,
            "maxcor": 20,
            "maxls": 50,
            "gtol": tol,
            "ftol": 0.0,
        },
    )
    if res.status != 0:
        logger.warning(
            "linear probe: L-BFGS did not converge for weight_decay=%g (%s after %d iterations; preconditioned "
            "gradient max-abs %.2e, tol %.0e)%s; the result is an unconverged iterate and may depend on rounding "
            "(thread count, hardware)",
            weight_decay,
            res.message,
            res.nit,
            float(np.abs(res.jac).max()),
            tol,
            "; raise epochs" if res.nit >= max_iter else "",
        )
    return unpack(res.x)


def train_val_split(
    labels: torch.Tensor | np.ndarray | Sequence[int], val_fraction: float = 0.2, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded train/val split of a labelled set: ``(fit indices, val indices)``, each ascending.

    Each class's samples are shuffled by a generator seeded with ``(seed, class)`` and
    ``round(val_fraction * n_class)`` of them go to val, at least one and never all: a class with a single
    sample stays in train. So val holds every class that has two or more samples, whatever the dataset order (an
    imagefolder lists its samples class by class, where "the last 20%" would be classes the fit never sees),
    the split is the same on every run, and a class's split does not depend on the other classes. The linear
    probe task uses it, with ``val_fraction = 0.2``, when a suite gives no ``val``.

    Args:
        labels: ``[N]`` integer labels.
        val_fraction: the share of each class held out, in ``(0, 1)``.
        seed: selects the split.

    Returns:
        Two int64 index tensors that partition ``range(N)``. Val is empty when no class has two samples.
    """
    import hashlib

    y = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    val: list[torch.Tensor] = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c)[:, 0]
        n = len(idx)
        k = min(max(int(np.floor(val_fraction * n + 0.5)), 1), n - 1) if n >= 2 else 0
        digest = hashlib.sha256(f"{int(seed)}:{int(c)}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        val.append(idx[torch.randperm(n, generator=gen)[:k]])
    val_idx = torch.sort(torch.cat(val)).values if val else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep)[:, 0], val_idx


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
    epochs: int = 1000,
    lr: float = 1.0,
    batch_size: int = 65536,
    seed: int = 0,
    device: str | torch.device = "cpu",
    tol: float = 1e-10,
) -> dict[str, float | int | dict[float, float]]:
    """Linear-probe accuracy: logistic regression, L2 strength chosen on ``val``, refit on ``train + val``, tested.

    For each ``weight_decay`` in the grid a multinomial logistic regression is fitted on ``train`` (features
    standardised with train's mean and std) and scored on ``val``. The one with the best val top-1 accuracy (the
    largest weight decay among equals) is refitted on ``train + val`` (standardised with their statistics) and
    evaluated on ``test``. The loss is ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias unpenalised), the
    same objective as sklearn's ``LogisticRegression(C=1 / (weight_decay * n_samples))`` for ``K >= 3`` classes. For
    ``K = 2`` sklearn fits one weight vector ``v = W[1] - W[0]`` and, since the optimum has ``W[0] = -W[1]``, the
    penalty is ``weight_decay / 4 * ||v||^2``: the equivalent is ``C = 2 / (weight_decay * n_samples)``. Both give
    the same probabilities at the optimum. It is minimised in float64 by preconditioned full-batch L-BFGS from zero
    weights until converged (preconditioned gradient max-abs ``<= tol``, or no float64 decrease left); ``epochs``
    only caps the iterations, and a fit that hits the cap logs a warning. Converged fits agree to rounding (about
    1e-8 in the logits) at any thread count, world size or ``batch_size``. ``weight_decay = 0`` on linearly separable
    features has no optimum: that fit stops where the loss is flat to ``tol`` or at the cap, and is not reproducible
    in that sense; prefer positive weight decays when the features separate the training set.

    Args:
        train_x: ``[N, D]`` training features.
        train_y: ``[N]`` integer labels in ``0..num_classes-1``.
        val_x: ``[Nv, D]`` validation features (``Nv >= 1``). Suites without a val set hold out a stratified,
            seeded 20% of train (:func:`train_val_split`).
        val_y: ``[Nv]`` validation labels.
        test_x: ``[Nt, D]`` test features.
        test_y: ``[Nt]`` test labels.
        num_classes: number of classes ``K``.
        weight_decays: L2 strengths tried (``>= 0``).
        epochs: cap on L-BFGS iterations per fit (each is one full pass plus line-search passes); reaching it logs a
            warning. Fits stop earlier, on convergence.
        lr: ignored (the L-BFGS line search chooses step lengths); kept for interface stability.
        batch_size: rows per chunk when computing the full-batch loss (bounds memory; does not change the objective).
        seed: kept for interface stability; the solve involves no randomness, so it does not change the result.
        device: where the loss and gradient are computed.
        tol: convergence threshold on the max-abs entry of the preconditioned gradient (``> 0``; in the
            preconditioned variables it bounds the distance to the optimum, roughly in logit units).

    Returns:
        ``{"acc1", "acc5" (if K >= 5), "mean_per_class_recall", "chosen_weight_decay", "val_acc1": {wd: acc},
        "train_samples", "val_samples", "test_samples"}``; accuracies in ``[0, 1]`` on ``test``.
    """
    del seed  # deterministic without it; see the docstring
    if lr != 1.0:
        logger.warning("linear probe: lr=%g is ignored; the L-BFGS line search chooses step lengths", lr)
    if not weight_decays or any(wd < 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be a non-empty sequence of values >= 0, got {weight_decays}")
    if epochs < 1 or batch_size < 1 or not tol > 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and tol > 0, got {epochs}, {batch_size}, {tol}")
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
    fit = {"num_classes": num_classes, "max_iter": epochs, "batch_size": batch_size, "tol": tol}

    tr_s, va_s = _standardise(tr_x, tr_x, va_x)
    axes = _principal_axes(tr_s, batch_size)  # shared by the grid
    val_acc1: dict[float, float] = {}
    for wd in weight_decays:
        w, b = _fit_logreg(tr_s, tr_y, weight_decay=float(wd), axes=axes, **fit)
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
