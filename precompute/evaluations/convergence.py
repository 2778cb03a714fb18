"""Convergence (IJ Fig. 2): the attribution error of integrated Jacobians against the number of steps, and where
``steps="auto"`` lands: the steps it took and the error it reached."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from core.quadrature import AUTO, DEFAULT_MAX_STEPS, DEFAULT_TOL, QUADRATURES
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
                   "quadrature rule, mean and sd over pairs; and per layer, steps=auto: the steps each sentence took "
                   "(`auto_steps`), the error reached, and the pairs that hit the step cap.")
    example = "--limit 20"
    caption = ("Integrated Jacobians: |score − sum of attributions| against the number of integration steps, per "
               "layer and quadrature rule (mean over pairs; sd in the tooltip). Deeper layers converge with fewer "
               "steps; Gauss–Legendre converges much faster than the paper's uniform rule. `auto` points: steps=auto "
               "at its tolerance, placed at the mean steps its sentences took.")
    figures = (
        Lines("abs_residual", "integration steps", "|residual|", "simlens_convergence", log_x=True, log_y=True,
              band=False, toggle=("relative to |score|", "rel_residual", "relative residual")),
        Table(("abs_residual", "rel_residual", "auto_steps"), "simlens_convergence"),
    )

    @classmethod
    def add_options(cls, parser) -> None:
        parser.add_argument("--layers", type=opt.ints, default=None, help="comma-separated layers (default 0, L/2, L-1)")
        parser.add_argument("--steps", type=opt.step_list, default=list(DEFAULT_STEPS),
                            help="comma-separated step counts (default 1,2,4,8,16,32,64,128)")
        parser.add_argument("--quadratures", type=opt.names, default=list(QUADRATURES),
                            help=f"comma-separated rules from {', '.join(QUADRATURES)} (default both)")
        parser.add_argument("--tol", type=opt.positive_float, default=DEFAULT_TOL,
                            help=f"the tolerance of the steps=auto rows (default {DEFAULT_TOL:g})")
        parser.add_argument("--max-steps", type=opt.positive_int, default=DEFAULT_MAX_STEPS,
                            help=f"the step cap of the steps=auto rows (default {DEFAULT_MAX_STEPS})")

    def compute(self, ctx: Context, layers: Sequence[int] | None = None, steps: Sequence[int] = DEFAULT_STEPS,
                quadratures: Sequence[str] = QUADRATURES, tol: float = DEFAULT_TOL,
                max_steps: int = DEFAULT_MAX_STEPS) -> Output:
        """Mean ± sd over pairs of |score - sum(A)| and of that divided by |score|, per layer (default 0, L/2,
        L-1), rule and step count, and for ``steps="auto"`` at ``tol`` within ``max_steps`` (x: the mean steps
        its sentences took; ``auto_steps``: those steps, mean ± sd over sentences, with the pairs that hit the
        cap in ``extra``). A pair's matrix sums to the product of its sentences' factor-row sums, so each
        sentence's integrated-Jacobian factor (``core.methods``) is computed once per setting."""
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
        auto = ctx.settings("ij", None, AUTO, None, tol=tol, max_steps=max_steps)  # validates tol and max_steps
        settings = [(layer, quad, n) for layer in layers for quad in quadratures for n in steps]
        settings += [(layer, auto.quadrature, AUTO) for layer in layers]
        for layer, quad, n in tqdm(settings, desc="ij convergence", unit="setting", disable=not ctx.progress):
            integration = {"tol": auto.tol, "max_steps": auto.max_steps} if n == AUTO else {}
            found = ctx.factors(texts, "ij", layer, n, quad, **integration)
            targets = np.stack([f.target.astype(np.float64) for f in found])
            sums = np.stack([f.factor.astype(np.float64).sum(axis=0) for f in found])
            scale = np.array([f.scale for f in found])
            score = np.einsum("nd,nd->n", targets[ia], targets[ib]) * scale[ia] * scale[ib]
            total = np.einsum("nd,nd->n", sums[ia], sums[ib]) * scale[ia] * scale[ib]
            err = np.abs(score - total)
            rel = np.divide(err, np.abs(score), out=np.full_like(err, np.nan), where=score != 0)
            if n == AUTO:
                taken = np.array([f.steps for f in found], dtype=np.float64)
                capped = np.array([f.capped for f in found])
                common = dict(method="ij", layer=layer, steps=None, quadrature=quad, x=float(taken.mean()),
                              series=f"layer {layer} · auto {auto.tol:g}")
                cap = {"tol": auto.tol, "max_steps": auto.max_steps, "pairs_capped": int((capped[ia] | capped[ib]).sum()),
                       "steps_max": int(taken.max())}
                out.append(mean_row("auto_steps", taken, extra=cap | median(taken), **common))
            else:
                common = dict(method="ij", layer=layer, steps=n, quadrature=quad, series=f"layer {layer} · {quad}",
                              x=float(n))
            out.append(mean_row("abs_residual", err, extra=median(err), **common))
            out.append(mean_row("rel_residual", rel, extra=median(rel), **common))
        summary = [f"{r['series']:>28}  steps {r['x']:>7.1f}  |residual| {fmt(r['y'])} ± {fmt(r['y_sd'])}"
                   for r in out if r["metric"] == "abs_residual"]
        summary += [f"{r['series']:>28}  auto took {fmt(r['y'])} ± {fmt(r['y_sd'])} steps per sentence (at most "
                    f"{r['extra']['steps_max']}), {r['extra']['pairs_capped']} pair(s) hit the cap of "
                    f"{r['extra']['max_steps']}" for r in out if r["metric"] == "auto_steps"]
        params = {"layers": layers, "steps": steps, "quadratures": quadratures, "limit": ctx.limit,
                  "tol": auto.tol, "max_steps": auto.max_steps}
        return Output(out, params, summary)
