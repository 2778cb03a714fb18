"""The first-launch demo store: a small audit of the project's demo pairs (the dashboard builds it when
``./store`` holds nothing yet; ``app.py`` hands :func:`build_demo_store` to the navigation shell)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.store.kinds import PREDICT
from core.views.location import DEMO_DATASET, DEMO_MODEL
from core.views.runs import setting_text


@dataclass(frozen=True)
class DemoStep:
    """One run of the demo store; ``weight``: its share of the progress bar (measured cost)."""

    method: str
    layer: int | None = None
    steps: int | None = None
    weight: float = 1.0


# all-MiniLM-L6-v2 on the 30 demo pairs with 2 CPU cores: predict ~1 s, BiLRP ~20 s, IJ ~80 s at 8 steps
# (the default 64 steps take ~400 s), plus ~5 s to load the model: about 1.8 minutes in all on a quiet machine.
DEMO_PLAN: tuple[DemoStep, ...] = (
    DemoStep(PREDICT.name, weight=1.0),
    DemoStep("bilrp", layer=0, weight=20.0),
    DemoStep("ij", steps=8, weight=80.0),
)
DEMO_PAIRS = 30  # the weights are seconds for this many pairs
LOAD_SECONDS = 5.0  # importing torch and loading the model


def estimate_seconds(plan: Sequence[DemoStep] = DEMO_PLAN, pairs: int | None = None) -> float:
    """The expected build time on a quiet 2-core CPU: the model load plus each step's weight (its measured
    seconds for the demo's pairs), scaled to ``pairs`` pairs (None: all demo pairs)."""
    share = 1.0 if pairs is None else min(max(pairs, 0), DEMO_PAIRS) / DEMO_PAIRS
    return LOAD_SECONDS + share * sum(s.weight for s in plan)


def build_demo_store(path: str | os.PathLike, model: Any = DEMO_MODEL, plan: Sequence[DemoStep] = DEMO_PLAN,
                     dataset: str | os.PathLike = DEMO_DATASET, limit: int | None = None, chunk_size: int = 5,
                     progress: Callable[[float, str], None] | None = None) -> list[Any]:
    """Write a small demo audit into ``path``: ``plan``'s runs of ``model`` over the project's demo pairs.

    ``model``: a name/folder or a loaded ``SimilarityModel``. ``progress(fraction, text)`` is called as pairs
    are done. Runs already in the store are skipped, so an interrupted build resumes. Returns the
    runner's ``RunResult`` per step. Loads torch and the model (only the first-launch path does).
    """
    from core.datasets import load_dataset
    from core.loading import as_model
    from precompute.runner import run

    report = progress or (lambda fraction, text: None)
    total = sum(s.weight for s in plan) or 1.0
    report(0.0, f"loading {model if isinstance(model, (str, os.PathLike)) else 'the model'}… (expected: about "
                f"{estimate_seconds(plan, limit):.0f} s on a quiet 2-core CPU, longer on a busy one)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = as_model(model)
        ds = load_dataset(str(dataset), lang="en", gold_range=(0, 5))
    results = []
    done = 0.0
    for step in plan:
        name = setting_text({"method": step.method, "layer": step.layer, "steps": step.steps})

        def tick(n: int, total_pairs: int, step: DemoStep = step, name: str = name, base: float = done) -> None:
            frac = (base + step.weight * n / max(total_pairs, 1)) / total
            report(min(frac, 1.0), f"{name}: {n}/{total_pairs} pairs")

        report(done / total, f"{name}: starting")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results.append(run(m, ds, path, method=step.method, layer=step.layer, steps=step.steps,
                               chunk_size=chunk_size, limit=limit, progress=tick))
        done += step.weight
    report(1.0, "demo store ready")
    return results
