"""Integrated Jacobians (Möller et al. 2023): exact pair attributions of the shifted dot-product score
(e(a) - e(r_a)) . (e(b) - e(r_b)), with r a reference of padding tokens of the same length (special tokens
kept), integrated along the straight path from the reference's hidden state to the input's: with a fixed number
of steps, or per sentence to a completeness tolerance (``AutoSteps``, the default)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from core.factors import token_factors
from core.methods.base import AttributionMethod, FactorBatch, ReferenceRecipe, register
from core.models import SimilarityModel, TokenBatch
from core.quadrature import (
    AUTO,
    DEFAULT_QUADRATURE,
    PANEL_POINTS,
    AutoSteps,
    panel_rule,
    panels_to_bisect,
    quadrature,
)


@register
class IntegratedJacobians(AttributionMethod):
    name = "ij"
    summary = ("Integrated Jacobians: exact attributions of the shifted dot product, integrated to a completeness "
               "tolerance (or N steps)")
    reference = ReferenceRecipe("gradient", path="reference", normalize=True)
    uses_steps = True
    default_steps = AUTO

    def factors(self, model: SimilarityModel, batch: TokenBatch, layer: int, steps, quadrature_rule, autodiff,
                max_rows):
        states = model.encode_states(batch, layer)
        hidden = states.hidden
        reference_states = model.encode_states(model.reference_batch(batch), layer)
        reference = reference_states.hidden
        _check_reference(model, batch, states.pooled, reference_states.pooled)
        direction = hidden - reference
        targets = model.normalized(states.pooled) - model.normalized(reference_states.pooled)
        if isinstance(steps, AutoSteps):
            path = _Path(model, batch, layer, reference, direction, autodiff, max_rows)
            factors, used, capped = path.integrate(targets, steps)
        else:
            alphas, weights = quadrature(quadrature_rule or DEFAULT_QUADRATURE, steps)
            alphas = torch.as_tensor(alphas, dtype=hidden.dtype, device=hidden.device)
            points = reference[:, None] + alphas[None, :, None, None] * direction[:, None]
            factors = token_factors(
                lambda n: model.head(batch.repeat(n), layer, normalize=True), points, direction,
                torch.as_tensor(weights, dtype=hidden.dtype, device=hidden.device), autodiff=autodiff,
                max_rows=max_rows,
            ).factors
            used = torch.full((hidden.shape[0],), steps, dtype=torch.long)
            capped = torch.zeros(hidden.shape[0], dtype=torch.bool)
        bad = torch.nonzero(~torch.isfinite(factors).all(dim=(1, 2))).flatten().tolist()
        if bad:
            raise ValueError(f"integrated Jacobians of {batch.texts[bad[0]]!r} with {model.display_name} are not "
                             f"finite: the path from its reference passes through a point where the model's function "
                             f"has no finite derivative (a zero embedding that the model normalises, or an overflow "
                             f"in half precision); explain it with another method (bilrp, hxp)")
        return FactorBatch(factors=factors, targets=targets, scales=torch.ones_like(targets[:, 0]),
                           pooled=states.pooled, steps=used, capped=capped)


def _check_reference(model: SimilarityModel, batch: TokenBatch, pooled: torch.Tensor, reference: torch.Tensor) -> None:
    """Refuse a reference whose pooled embedding (B, D) is zero (within rounding of the input's) when the model
    normalises: its normalised embedding is 0/0 and the normalised path jumps there, so no quadrature can
    integrate it and the explained score would be NaN or wrong."""
    if not model.normalize:
        return
    tolerance = torch.finfo(pooled.dtype).eps * pooled.norm(dim=-1)
    zero = torch.nonzero(reference.norm(dim=-1) <= tolerance).flatten().tolist()
    if zero:
        raise ValueError(
            f"integrated Jacobians cannot explain {batch.texts[zero[0]]!r} with {model.display_name}: its reference (every "
            f"token replaced by the padding token {model.tokenizer.pad_token!r}) has a zero sentence embedding (as "
            f"when the padding token's embedding row is zero, e.g. in Llama, Qwen2, Qwen3 and Mistral checkpoints), "
            f"and the model normalises embeddings: the reference's normalised embedding is 0/0 and the path from it "
            f"jumps, so no integration is exact. Explain it with another method (bilrp, hxp), or with a model whose "
            f"padding embedding is not zero: the integrated-Jacobians reference is always the padding sequence")


@dataclass
class _Panel:
    """An evaluated panel [start, stop] of one sentence's path: its factor (S, D) and the norm of its exact
    completeness residual."""

    start: float
    stop: float
    factor: torch.Tensor
    error: float


@dataclass
class _Path:
    """The integration paths reference + alpha * direction of a batch's sentences (``reference``, ``direction``:
    (B, S, H)), evaluated panel by panel (``core.quadrature.AutoSteps``); at most B panels per engine call, so
    that the batch's memory plan (made for ``PANEL_POINTS`` points per sentence) holds."""

    model: SimilarityModel
    batch: TokenBatch
    layer: int
    reference: torch.Tensor
    direction: torch.Tensor
    autodiff: str
    max_rows: int
    ends: dict[tuple[int, float], torch.Tensor] = field(default_factory=dict)

    def _chunks(self, items: list) -> list[list]:
        size = self.reference.shape[0]
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _embed_ends(self, wanted: list[tuple[int, float]]) -> None:
        """e(x(alpha)) (normalised as the head does; no derivative) for every (row, alpha) not known yet."""
        for chunk in self._chunks([key for key in dict.fromkeys(wanted) if key not in self.ends]):
            rows = [row for row, _ in chunk]
            alphas = torch.tensor([alpha for _, alpha in chunk], dtype=self.reference.dtype,
                                  device=self.reference.device)
            x = self.reference[rows] + alphas[:, None, None] * self.direction[rows]
            with torch.no_grad():
                out = self.model.head(self.batch.take(rows), self.layer, normalize=True)(x)
            self.ends.update(zip(chunk, out, strict=True))

    def _evaluate(self, panels: list[tuple[int, float, float]]) -> list[_Panel]:
        """The factor of each (row, start, stop) panel (its Gauss-Legendre points), and its residual norm."""
        self._embed_ends([(row, a) for row, a, _ in panels] + [(row, b) for row, _, b in panels])
        unit_nodes, unit_weights = panel_rule(0.0, 1.0)
        like = dict(dtype=self.reference.dtype, device=self.reference.device)
        nodes, weights = torch.as_tensor(unit_nodes, **like), torch.as_tensor(unit_weights, **like)
        done = []
        for chunk in self._chunks(panels):
            rows = [row for row, _, _ in chunk]
            starts = torch.tensor([a for _, a, _ in chunk], **like)
            widths = torch.tensor([b - a for _, a, b in chunk], **like)
            alphas = starts[:, None] + widths[:, None] * nodes[None]  # (P, PANEL_POINTS)
            points = self.reference[rows][:, None] + alphas[..., None, None] * self.direction[rows][:, None]
            sub = self.batch.take(rows)
            factors = token_factors(
                lambda n, sub=sub: self.model.head(sub.repeat(n), self.layer, normalize=True), points,
                self.direction[rows], weights, autodiff=self.autodiff, max_rows=self.max_rows,
            ).factors * widths[:, None, None]
            for (row, a, b), factor in zip(chunk, factors, strict=True):
                rho = factor.sum(0) - (self.ends[row, b] - self.ends[row, a])
                done.append(_Panel(a, b, factor, float(rho.norm())))
        return done

    def integrate(self, targets: torch.Tensor, auto: AutoSteps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(factors (B, S, D), steps (B,) long, capped (B,) bool): each sentence refined until its residual
        ``|sum_t F[t] - target|`` is within ``auto.sentence_tolerance`` or its rule has ``auto.max_steps``
        points."""
        count = targets.shape[0]
        eps = [auto.sentence_tolerance(float(t.norm())) for t in targets]
        factors = torch.zeros(*self.reference.shape[:2], targets.shape[1], dtype=targets.dtype,
                              device=targets.device)
        steps = [0] * count
        open_panels: list[list[_Panel]] = [[] for _ in range(count)]
        todo = [(row, 0.0, 1.0) for row in range(count)]
        while todo:
            for (row, _, _), panel in zip(todo, self._evaluate(todo), strict=True):
                steps[row] += PANEL_POINTS
                if panel.error <= eps[row] * (panel.stop - panel.start):
                    factors[row] += panel.factor  # within its share of the tolerance: kept for good
                else:
                    open_panels[row].append(panel)
            todo = []
            for row, panels in enumerate(open_panels):
                if not panels:
                    continue
                residual = (factors[row] + sum(p.factor for p in panels)).sum(0) - targets[row]
                pick = [] if float(residual.norm()) <= eps[row] else panels_to_bisect(
                    [p.stop - p.start for p in panels], [p.error for p in panels], steps[row], auto.max_steps)
                for i, panel in enumerate(panels):
                    if i in pick:
                        middle = (panel.start + panel.stop) / 2.0
                        todo += [(row, panel.start, middle), (row, middle, panel.stop)]
                        steps[row] -= PANEL_POINTS
                    else:
                        factors[row] += panel.factor
                open_panels[row] = []
        residuals = (factors.sum(1) - targets).norm(dim=-1)
        capped = torch.tensor([float(residuals[row]) > eps[row] for row in range(count)], dtype=torch.bool)
        return factors, torch.tensor(steps, dtype=torch.long), capped
