"""Integration rules for integrated Jacobians: points on [0, 1] and their weights."""

from __future__ import annotations

import numpy as np

QUADRATURES = ("gauss-legendre", "uniform")
DEFAULT_QUADRATURE = "gauss-legendre"


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
