"""The evaluation registry: every registered evaluation keeps the contract the CLI, the store and the Faithfulness
page rely on (parametrised over the registry, so a new evaluation is checked without editing this file), and a
toy evaluation added as one new file shows up as a CLI verb, a stored kind, a page section and registry-driven
tests without any other edit."""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, checkout_with
from test_precompute import write_pairs

from core.store import Store
from core.views import evidence as ev
from precompute import evaluations
from precompute.cli import _SHARED_DESTS, build_parser

FRAME = {"model", "dataset", "store", "limit", "batch_size", "data_dir", "device", "dataset_options"}


def figure_types(figures) -> list[type]:
    out = []
    for f in figures:
        out += figure_types(f.figures) if isinstance(f, ev.Side) else [type(f)]
    return out


@pytest.mark.parametrize("verb", evaluations.verbs())
def test_every_evaluation_keeps_the_contract(verb):
    cls = evaluations.get_evaluation(verb)
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", cls.kind), cls.kind  # what the store accepts
    assert cls.title and cls.help and cls.description
    assert evaluations.by_kind(cls.kind) is not None and cls.kind in evaluations.kinds()
    # its CLI options parse, and map onto compute's keyword arguments
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    required = [a for a in parser._actions if a.required]
    args = parser.parse_args([x for a in required for x in (a.option_strings[0], "x")])
    own = [a.dest for a in parser._actions if a.dest not in _SHARED_DESTS and a.dest != "help"]
    kwargs = cls.arguments(args, own)
    options = {k: v for k, v in kwargs.items() if k not in FRAME}
    inspect.signature(cls.compute).bind(cls(), None, **options)  # raises TypeError on a mismatch
    # every figure it declares has a renderer on the page
    from core.dashboard import evidence

    assert set(figure_types(cls.figures)) <= set(evidence._DRAW), figure_types(cls.figures)


def test_the_cli_verbs_are_the_registry():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(evaluations.verbs()) <= set(sub.choices)
    listing = sub.choices["evaluations"]
    kind = next(a for a in listing._actions if a.dest == "kind")
    assert list(kind.choices) == evaluations.kinds()


def test_a_verb_registered_twice_is_an_error():
    class Again(evaluations.get_evaluation("agreement")):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        evaluations.register(Again)
    with pytest.raises(ValueError, match="unknown evaluation 'nope': choose from"):
        evaluations.get_evaluation("nope")


TOY = '''
"""A toy evaluation for the registry test: the mean explained score per method."""

from core.views.evidence import Bars
from precompute.evaluations.base import Context, Evaluation, Output, mean_row, register


@register
class Toy(Evaluation):
    kind = "toy-score"
    title = "Toy score"
    help = "mean explained score per method (a toy)"
    description = "The mean explained score of each method's explanations."
    caption = "A toy section."
    figures = (Bars(("score",), "series", "mean explained score", "simlens_toy"),)

    @classmethod
    def add_options(cls, parser):
        parser.add_argument("--methods", default="embedding,bilrp")

    def compute(self, ctx: Context, methods: str = "embedding,bilrp") -> Output:
        rows = []
        for m in ctx.methods(methods, ()):
            exps = ctx.explain(ctx.pairs, m)
            rows.append(mean_row("score", [e.score for e in exps], method=m, series=m))
        return Output(rows, {"methods": methods, "limit": ctx.limit}, [f"{r['series']}: {r['y']:.4f}" for r in rows])
'''

PAGE = '''
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("pages/9_Faithfulness.py", default_timeout=120)
at.run()
print(json.dumps({"tabs": [t.label for t in at.tabs], "charts": len(at.get("vega_lite_chart")),
                  "errors": [str(e.value) for e in at.exception] + [e.value for e in at.error],
                  "captions": [c.value for c in at.caption]}))
'''


@pytest.mark.slow
def test_a_toy_evaluation_in_one_new_file_appears_everywhere(tmp_path, tiny_folders):
    run = checkout_with(tmp_path, "precompute/evaluations/toy.py", TOY)

    # the CLI: a verb with its own option, and the listing's --kind
    helped = run("-m", "precompute", "toy-score", "--help")
    assert helped.returncode == 0 and "--methods" in helped.stdout, helped.stderr
    pairs = write_pairs(tmp_path / "pairs.tsv", 4)
    done = run("-m", "precompute", "toy-score", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs),
               "--gold-range", "0,5", "--limit", "3", "--store", str(tmp_path / "store"))
    assert done.returncode == 0, done.stderr
    assert "stored evaluation" in done.stdout and "embedding:" in done.stdout
    # the store
    rows = Store(tmp_path / "store").evaluations(kind="toy-score")
    assert sorted(rows["series"]) == ["bilrp", "embedding"] and (rows["n"] == 3).all()
    assert json.loads(rows["params"].iloc[0]) == {"methods": "embedding,bilrp", "limit": 3}
    listed = run("-m", "precompute", "evaluations", "--kind", "toy-score", "--store", str(tmp_path / "store"))
    assert listed.returncode == 0 and "toy-score" in listed.stdout, listed.stderr
    # the schema documentation lists it among the evaluations table's kinds
    schema = run("-m", "precompute", "schema")
    assert schema.returncode == 0 and "| `toy-score` | `toy-score` |" in schema.stdout, schema.stderr
    # the Faithfulness page: a tab with the toy's title, its caption and its chart
    page = run("-c", PAGE)
    assert page.returncode == 0, page.stderr
    shown = json.loads(page.stdout.strip().splitlines()[-1])
    assert shown["tabs"] == ["Toy score"] and not shown["errors"], shown
    assert shown["charts"] == 1 and "A toy section." in shown["captions"]
    # the registry-driven tests collect it
    collected = run("-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                    "tests/test_evaluation_registry.py")
    assert "test_every_evaluation_keeps_the_contract[toy-score]" in collected.stdout, collected.stdout[-2000:]
    assert not Path(ROOT / "precompute" / "evaluations" / "toy.py").exists()  # the real tree is untouched
