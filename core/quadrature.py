"""Integration rules for integrated Jacobians: points on [0, 1] and their weights, for a fixed number of steps
or refined to a tolerance (``steps="auto"``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

QUADRATURES = ("gauss-legendre", "uniform")
DEFAULT_QUADRATURE = "gauss-legendre"
#: ``steps="auto"``: integrate each sentence to a completeness tolerance (see :class:`AutoSteps`).
AUTO = "auto"
#: The default completeness tolerance of ``steps="auto"`` (absolute, on a pair's explained score).
DEFAULT_TOL = 1e-3
#: The default cap on the steps of one sentence's integral under ``steps="auto"``.
DEFAULT_MAX_STEPS = 512
#: Gauss-Legendre points per panel of the adaptive rule: a panel is the unit that is evaluated and bisected.
PANEL_POINTS = 8


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in (0, 1] and weights summing to 1 for ``steps`` evaluations of the integrand.

    ``uniform`` is the rule of Möller et al. (2023), Eq. 4: alpha_n = n / N, weight 1 / N.
    ``gauss-legendre`` places the nodes at the Legendre roots mapped to [0, 1] and converges much faster
    for the smooth integrands of transformer encoders.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if rule == "uniform":
        return np.arange(1, steps + 1, dtype=np.float64) / steps, np.full(steps, 1.0 / steps)
    if rule == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1.0) / 2.0, w / 2.0
    raise ValueError(f"unknown quadrature {rule!r}: choose one of {', '.join(QUADRATURES)}")


@dataclass(frozen=True)
class AutoSteps:
    """``steps="auto"``: each sentence's integral is refined until its completeness error is below what ``tol``
    asks of it (:meth:`sentence_tolerance`), or until it has ``max_steps`` steps (then it is *capped*).

    The rule is composite Gauss-Legendre with adaptive bisection: panels of ``PANEL_POINTS`` points, starting
    from the single panel [0, 1]. Each panel [a, b] has an exact error: the rows of its factor sum to
    ``sum_t F_p[t] = integral_a^b d e(x(alpha)) / d alpha`` in the limit, which is ``e(x(b)) - e(x(a))`` (two
    forward passes, no derivative), so ``rho_p = sum_t F_p[t] - (e(x(b)) - e(x(a)))`` is the panel's
    completeness residual, and the sentence's residual ``r = sum_t F[t] - target`` is the sum of its panels'.
    A panel is kept once ``|rho_p| <= eps * (b - a)``; the others are bisected, worst first, while the steps
    allow, until ``|r| <= eps``. Bisection cannot reuse a panel's points (the Gauss nodes of a panel are not
    nodes of its halves): at most as many points are evaluated again as the final rule has.
    """

    tol: float = DEFAULT_TOL
    max_steps: int = DEFAULT_MAX_STEPS

    def __post_init__(self) -> None:
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        cap = self.max_steps
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < PANEL_POINTS:
            raise ValueError(f"max_steps must be an integer of at least {PANEL_POINTS} (one panel), got {cap!r}")

    def sentence_tolerance(self, target_norm: float) -> float:
        """The bound on one sentence's completeness residual ``|r|`` (Euclidean norm over embedding dims).

        A pair's residual is ``score - sum(matrix) = -(t_a . r_b + r_a . t_b + r_a . r_b)`` for targets ``t``
        and residuals ``r``; with ``|t| <= 2`` (shifted unit vectors: always for models that normalise) and
        ``|r| <= eps``, Cauchy-Schwarz bounds it by ``4 eps + eps^2``, which ``eps = sqrt(4 + tol) - 2`` makes
        ``tol``. A target longer than 2 scales its sentence's bound by ``|t| / 2``: the pair's bound is then
        ``tol * max(1, |t_a| / 2) * max(1, |t_b| / 2)``."""
        return (math.sqrt(4.0 + self.tol) - 2.0) * max(1.0, target_norm / 2.0)


def panel_rule(start: float, stop: float, points: int = PANEL_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights (summing to ``stop - start``) on the panel [start, stop]."""
    x, w = np.polynomial.legendre.leggauss(points)
    half = (stop - start) / 2.0
    return start + half * (x + 1.0), half * w


def panels_to_bisect(widths: np.ndarray, errors: np.ndarray, steps: int, max_steps: int,
                     points: int = PANEL_POINTS) -> list[int]:
    """Which of a sentence's open panels (those over their share of the tolerance; ``widths`` and exact residual
    norms ``errors``) to bisect: worst (largest error per width) first, as many as ``max_steps`` allows when the
    rule has ``steps`` points now (each bisection adds ``points``)."""
    widths, errors = np.asarray(widths, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    order = np.argsort(-(errors / widths), kind="stable")
    return [int(i) for i in order[: max(0, (max_steps - steps) // points)]]
