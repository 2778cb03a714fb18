"""Convergence (IJ Fig. 2): the attribution error of integrated Jacobians against the number of steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from core.quadrature import QUADRATURES
from core.views.evidence import Lines, Table
from precompute import options as opt
from precompute.evaluations.base import Context, Evaluation, Output, fmt, mean_row, median, positive, register

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


@register
class Convergence(Evaluation):
    kind = "convergence"
    title = "ij convergence"
    order = 30
    help = "ij attribution error against integration steps (IJ Fig. 2)"
    description = ("Residual |sum(A) - score| of integrated Jacobians against the number of steps, per layer and "
                   "quadrature rule, mean and sd over pairs.")
    example = "--limit 20"
    caption = ("Integrated Jacobians: |score − sum of attributions| against the number of integration steps, per "
               "layer and quadrature rule (mean over pairs; sd in the tooltip). Deeper layers converge with fewer "
               "steps; Gauss–Legendre converges much faster than the paper's uniform rule.")
    figures = (
        Lines("abs_residual", "integration steps", "|residual|", "simlens_convergence", log_x=True, log_y=True,
              band=False, toggle=("relative to |score|", "rel_residual", "relative residual")),
        Table(("abs_residual", "rel_residual"), "simlens_convergence"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        parser.add_argument("--layers", type=opt.ints, default=None, help="comma-separated layers (default 0, L/2, L-1)")
        parser.add_argument("--steps", type=opt.step_list, default=list(DEFAULT_STEPS),
                            help="comma-separated step counts (default 1,2,4,8,16,32,64,128)")
        parser.add_argument("--quadratures", type=opt.names, default=list(QUADRATURES),
                            help=f"comma-separated rules from {', '.join(QUADRATURES)} (default both)")

    def compute(self, ctx: Context, layers: Sequence[int] | None = None, steps: Sequence[int] = DEFAULT_STEPS,
                quadratures: Sequence[str] = QUADRATURES) -> Output:
        """Mean ± sd over pairs of |score - sum(A)| and of that divided by |score|, per layer (default 0, L/2,
        L-1), rule and step count. A pair's matrix sums to the product of its sentences' factor-row sums, so
        each sentence's integrated-Jacobian factor (``core.methods``) is computed once per setting."""
        layers = ctx.layers(layers, ctx.common_layers())
        steps = sorted({positive(s, "steps") for s in steps})
        if not steps:
            raise ValueError("no steps given")
        quadratures = list(dict.fromkeys(quadratures))
        bad = [q for q in quadratures if q not in QUADRATURES]
        if bad or not quadratures:
            raise ValueError(f"quadrature must be one of {', '.join(QUADRATURES)}, got {', '.join(bad) or 'none'}")
        pairs = ctx.pairs
        texts = list(dict.fromkeys(t for p in pairs for t in p))
        index = {t: i for i, t in enumerate(texts)}
        ia = np.array([index[a] for a, _ in pairs])
        ib = np.array([index[b] for _, b in pairs])
        out = []
        settings = [(layer, quad, n) for layer in layers for quad in quadratures for n in steps]
        for layer, quad, n in tqdm(settings, desc="ij convergence", unit="setting", disable=not ctx.progress):
            found = ctx.factors(texts, "ij", layer, n, quad)
            targets = np.stack([f.target.astype(np.float64) for f in found])
            sums = np.stack([f.factor.astype(np.float64).sum(axis=0) for f in found])
            scale = np.array([f.scale for f in found])
            score = np.einsum("nd,nd->n", targets[ia], targets[ib]) * scale[ia] * scale[ib]
            total = np.einsum("nd,nd->n", sums[ia], sums[ib]) * scale[ia] * scale[ib]
            err = np.abs(score - total)
            rel = np.divide(err, np.abs(score), out=np.full_like(err, np.nan), where=score != 0)
            common = dict(method="ij", layer=layer, steps=n, quadrature=quad, series=f"layer {layer} · {quad}",
                          x=float(n))
            out.append(mean_row("abs_residual", err, extra=median(err), **common))
            out.append(mean_row("rel_residual", rel, extra=median(rel), **common))
        summary = [f"{r['series']:>28}  steps {int(r['x']):>5}  |residual| {fmt(r['y'])} ± {fmt(r['y_sd'])}"
                   for r in out if r["metric"] == "abs_residual"]
        params = {"layers": layers, "steps": steps, "quadratures": quadratures, "limit": ctx.limit}
        return Output(out, params, summary)
