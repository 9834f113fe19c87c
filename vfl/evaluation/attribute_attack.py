"""E's attribute-inference attack on ``z_B`` (issue 14, item 4), numpy only.

Threat: E decrypts ``z_B = b·W_B`` for every user it asks about. ``W_B`` is of full rank, so
``z_B`` is a linear image of P's embedding ``b`` and hence of P's features. Suppose E also
knows P's true attributes for ``k`` users (customers who told both companies, a leaked
sample, E's own survey). It fits a linear model on those ``k`` and predicts the rest:

(a) from E's own per-user features only (what E could infer without the federation);
(b) from E's own features and ``z_B``.

The **excess** ``(b) - (a)`` is what the federation leaks about the attribute. Scores are
on the ``n - k`` users E does not know: R² for a numeric attribute (``1 - SSE/SST`` with the
test mean, so 0 is "no better than the mean", and it is ``<= 1``), accuracy for a
categorical one (chance = the share of the test users in the majority class of the known).

Models: ridge regression (numeric) and a one-vs-rest ridge classifier (least squares on
class indicators, the class with the largest score wins), on features standardised with
the known users' mean and deviation, with the ridge penalty ``λ`` chosen from a fixed grid
by leave-one-out error on the known users (closed form ``e_i / (1 - H_ii)``, the centring
on all known users aside). Both are linear: a
non-linear attacker may do better, so the figures are a lower bound on what E can learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AttackReport",
    "AttackScore",
    "Attribute",
    "AttributeKind",
    "attribute_inference",
]

Floats = NDArray[np.float64]
LAMBDAS = tuple(10.0**p for p in range(-3, 5))  # ridge penalties tried by leave-one-out
DEFAULT_KNOWN = 100


class AttributeKind(Enum):
    """How an attribute is predicted and scored."""

    NUMERIC = "numeric"  # ridge regression, R²
    CATEGORICAL = "categorical"  # one-vs-rest ridge classifier, accuracy


@dataclass(frozen=True)
class Attribute:
    """One of P's attributes for every user, in the same order as E's rows."""

    name: str
    kind: AttributeKind
    values: NDArray[np.float64] | NDArray[np.int64]  # (n,) numbers or class codes


@dataclass(frozen=True)
class AttackScore:
    """Scores on the users E does not know: own features (a), with ``z_B`` (b), chance."""

    attribute: str
    metric: str  # "r2" or "accuracy"
    own: float
    with_zb: float
    chance: float

    @property
    def excess(self) -> float:
        """``(b) - (a)``: what ``z_B`` adds to E's own knowledge."""
        return self.with_zb - self.own

    def as_dict(self) -> dict[str, float | str]:
        """JSON-ready, with the excess."""
        return {**asdict(self), "excess": self.excess}


@dataclass(frozen=True)
class AttackReport:
    """One attack run: ``k`` known users, ``n_test`` scored, a score per attribute."""

    known: int
    n_test: int
    scores: tuple[AttackScore, ...]

    def score(self, name: str) -> AttackScore:
        """The score of attribute ``name``.

        Raises:
            KeyError: naming the attributes there are.
        """
        for s in self.scores:
            if s.attribute == name:
                return s
        raise KeyError(f"no attribute {name!r}; attacked: {[s.attribute for s in self.scores]}")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "known": self.known,
            "n_test": self.n_test,
            "scores": {s.attribute: s.as_dict() for s in self.scores},
        }


def attribute_inference(
    own: NDArray[np.floating],
    z_b: NDArray[np.floating],
    attributes: list[Attribute],
    *,
    known: int = DEFAULT_KNOWN,
    seed: int = 0,
) -> AttackReport:
    """Run the attack: ``known`` random users train it, the others score it.

    ``own`` (n x p, ``p`` may be 0) are E's own features per user, ``z_B`` (n x h) what E
    decrypted for the same users, in the same order as each attribute's ``values``.

    Raises:
        ValueError: for mismatched row counts, non-finite inputs, or ``known`` not in
            ``[2, n - 2]``.
    """
    own_x, z = _matrix(own, "own features"), _matrix(z_b, "z_B")
    n = len(z)
    if len(own_x) != n or any(len(a.values) != n for a in attributes):
        raise ValueError(f"E's features, z_B and every attribute need the same {n} users")
    if not 2 <= known <= n - 2:
        raise ValueError(f"known = {known} users: need 2 <= known <= n - 2 = {n - 2}")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:known], order[known:]
    both = np.hstack([own_x, z])
    scores = tuple(_score(a, own_x, both, train, test) for a in attributes)
    return AttackReport(known=known, n_test=len(test), scores=scores)


def _matrix(x: NDArray[np.floating], what: str) -> Floats:
    m: Floats = np.asarray(x, dtype=np.float64)
    m = m.reshape(len(m), -1)
    if not np.isfinite(m).all():
        raise ValueError(f"{what}: values must be finite")
    return m


def _score(
    attr: Attribute, own: Floats, both: Floats, train: NDArray[np.intp], test: NDArray[np.intp]
) -> AttackScore:
    """Fit on ``train`` from own features and from both, score on ``test``."""
    if attr.kind is AttributeKind.NUMERIC:
        y = np.asarray(attr.values, dtype=np.float64)
        a, b = (_r2(y[test], _ridge_predict(x, y, train, test)) for x in (own, both))
        return AttackScore(attr.name, "r2", a, b, 0.0)
    codes = np.asarray(attr.values, dtype=np.int64)
    classes = np.unique(codes[train])
    onehot = (codes[:, None] == classes[None, :]).astype(np.float64)
    a, b = (
        float(np.mean(classes[_ridge_predict(x, onehot, train, test).argmax(1)] == codes[test]))
        for x in (own, both)
    )
    majority = classes[onehot[train].sum(0).argmax()]
    return AttackScore(attr.name, "accuracy", a, b, float(np.mean(codes[test] == majority)))


def _r2(y: Floats, pred: Floats) -> float:
    """``1 - SSE/SST`` around the scored users' own mean."""
    sst = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else 0.0


def _ridge_predict(x: Floats, y: Floats, train: NDArray[np.intp], test: NDArray[np.intp]) -> Floats:
    """Ridge on standardised ``x`` (intercept unpenalised), ``λ`` by leave-one-out."""
    y_train = y[train]
    mean_y = y_train.mean(0)
    if x.shape[1] == 0:  # no features: the known users' mean (majority for indicators)
        return np.broadcast_to(mean_y, (len(test), *y.shape[1:])).astype(np.float64)
    mu, sd = x[train].mean(0), x[train].std(0)
    sd[sd == 0] = 1.0
    xs = (x - mu) / sd
    xt, yc = xs[train], y_train - mean_y
    best = min(LAMBDAS, key=lambda lam: _loo_error(xt, yc, lam))
    w = np.linalg.solve(xt.T @ xt + best * np.eye(xt.shape[1]), xt.T @ yc)
    pred: Floats = xs[test] @ w + mean_y
    return pred


def _loo_error(x: Floats, y: Floats, lam: float) -> float:
    """Leave-one-out squared error of ridge in closed form: residuals ``e_i / (1 - H_ii)``."""
    inv = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    hat_diag = np.einsum("ij,jk,ik->i", x, inv, x)
    resid = y - x @ (inv @ (x.T @ y))
    denom = np.clip(1.0 - hat_diag, 1e-9, None)
    loo = resid / (denom[:, None] if resid.ndim == 2 else denom)
    return float(np.sum(loo**2))
