"""A toy attribution method added as one new file in ``core/methods/`` shows up in the CLI, the store, the
Explain page and the registry-parametrised tests without any other edit (the registry is the one list)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, checkout_with
from test_precompute import write_pairs

from core.store import Store

TOY = '''
"""Toy method: the token-embedding baseline under another name (a newcomer's first method)."""

from core.methods.base import register
from core.methods.embedding import EmbeddingSimilarity


@register
class ToyEmbedding(EmbeddingSimilarity):
    name = "toy"
    summary = "Toy: mean-pooled token embeddings (a copy of the baseline)"
'''

PAGE = '''
import json
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("pages/6_Explain.py", default_timeout=120)
at.run()
print(json.dumps({"methods": list(at.selectbox(key="xp_method").options),
                  "errors": [str(e.value) for e in at.exception]}))
'''


@pytest.mark.slow
def test_a_toy_method_in_one_new_file_appears_everywhere(tmp_path, tiny_folders):
    run = checkout_with(tmp_path, "core/methods/toy.py", TOY)
    store = tmp_path / "store"

    # the CLI offers it and runs it into the store
    helped = run("-m", "precompute", "attribute", "--help")
    assert helped.returncode == 0 and "toy" in helped.stdout, helped.stderr
    pairs = write_pairs(tmp_path / "pairs.tsv", 4)
    done = run("-m", "precompute", "attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs),
               "--gold-range", "0,5", "--method", "toy", "--store", str(store))
    assert done.returncode == 0, done.stderr
    with Store(store) as s:
        runs = s.runs()
        assert list(runs["method"]) == ["toy"] and runs["complete"].all()
        rid = runs["run_id"].iloc[0]
        assert len(s.table("token_pairs", run_id=rid)) > 0
    # the Explain page lists it
    page = run("-c", PAGE)
    assert page.returncode == 0, page.stderr
    shown = json.loads(page.stdout.strip().splitlines()[-1])
    assert "toy" in shown["methods"] and not shown["errors"], shown
    # the registry-parametrised engine tests collect it (exactness against the slow reference included)
    collected = run("-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "tests/test_engine.py")
    assert "[toy" in collected.stdout, collected.stdout[-2000:]
    assert not (ROOT / "core" / "methods" / "toy.py").exists()  # the real tree is untouched
