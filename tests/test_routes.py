"""Router / Asym models (one route for queries, another for documents): each side of a pair goes through its own
route, exactly as sentence-transformers' ``encode_query``/``encode_document``/``encode`` route it; factors are
exact per route, BiLRP conserves per route with biases zeroed, routes make their own model variant, and the
precompute CLI takes them. The folders are saved by sentence-transformers itself."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from reference import reference_factor
from test_engine import assert_close
from tiny_models import save_sentence_transformer

from core import compute_factors, explain, explain_pairs, load_model

TEXTS = ["A man is playing a guitar.", "Two dogs run through the snow!", "The cat sat.", "A child rides a bike."]
PAIRS = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])]
PROMPTS = {"query": "query: ", "document": "doc: "}


def _st_modules():
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    return SentenceTransformer, modules.Dense, modules.Normalize, modules.Pooling, modules.Router, modules.Transformer


def _save(base, name: str, zero_bias: bool) -> object:
    """A Router model saved by sentence-transformers: ``two-encoders`` (a query encoder with CLS pooling, a
    document encoder with mean pooling, then Normalize; prompts), ``shared-dense`` (one Transformer and Pooling,
    then a Dense per route), ``mapped`` (routes named q_route/d_route, reached through route mappings)."""
    SentenceTransformer, Dense, Normalize, Pooling, Router, Transformer = _st_modules()
    folder = base / f"{name}-{int(zero_bias)}"
    q = Transformer(str(save_sentence_transformer(base / f"q-{int(zero_bias)}", "bert", seed=1, zero_bias=zero_bias)))
    d = Transformer(str(save_sentence_transformer(base / f"d-{int(zero_bias)}", "bert", seed=2, zero_bias=zero_bias)))
    bias = not zero_bias
    if name == "two-encoders":
        router = Router.for_query_document(query_modules=[q, Pooling(32, "cls")],
                                           document_modules=[d, Pooling(32, "mean")])
        model = SentenceTransformer(modules=[router, Normalize()], prompts=PROMPTS, device="cpu")
    elif name == "shared-dense":
        router = Router.for_query_document(query_modules=[Dense(32, 16, bias=bias)],
                                           document_modules=[Dense(32, 16, bias=bias)])
        model = SentenceTransformer(modules=[q, Pooling(32, "mean"), router], device="cpu")
    else:
        router = Router({"q_route": [q, Pooling(32, "mean")], "d_route": [d, Pooling(32, "max")]},
                        route_mappings={("query", None): "q_route", ("document", "text"): "d_route"})
        model = SentenceTransformer(modules=[router], device="cpu")
    model.save(str(folder))
    return folder


def _legacy_asym(base, source) -> object:
    """``shared-dense`` rewritten as a legacy ``Asym`` folder (``0_Asym``-style folder, ``config.json`` with the
    types and structure, no default route: the first route is the default)."""
    folder = base / "legacy-asym"
    shutil.copytree(source, folder)
    (folder / "2_Router").rename(folder / "2_Asym")
    config = json.loads((folder / "2_Asym" / "router_config.json").read_text())
    (folder / "2_Asym" / "router_config.json").unlink()
    config["parameters"] = {"allow_empty_key": True}
    config["types"] = {k: "sentence_transformers.models.Dense" for k in config["types"]}
    (folder / "2_Asym" / "config.json").write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    modules[2].update(path="2_Asym", type="sentence_transformers.models.Asym")
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("routes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = {(name, zero): _save(base, name, zero) for name in ("two-encoders", "shared-dense", "mapped")
                 for zero in (False, True)}
    found[("legacy-asym", False)] = _legacy_asym(base, found[("shared-dense", False)])
    return found


def _load(folder, double: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(folder, device="cpu")
    if double:  # float64, so that exactness tests see the algorithm, not rounding
        for view in model.router.views.values():
            view.encoder.double()
    return model


def _st(folder):
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def _st_pair_scores(st, pairs, side_a: dict, side_b: dict) -> np.ndarray:
    ea = st.encode([a for a, _ in pairs], convert_to_tensor=True, **side_a)
    eb = st.encode([b for _, b in pairs], convert_to_tensor=True, **side_b)
    return st.similarity_pairwise(ea, eb).double().numpy()


NAMES = ["two-encoders", "shared-dense", "mapped", "legacy-asym"]


@pytest.mark.parametrize("name", NAMES)
def test_embeddings_and_scores_equal_sentence_transformers_per_route(folders, name):
    folder = folders[(name, False)]
    model, st = _load(folder), _st(folder)
    assert len(model.route_names) == 2
    np.testing.assert_allclose(model.embed(TEXTS, routes="query"), st.encode(TEXTS, task="query", prompt=""),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.embed(TEXTS, routes="document"), st.encode(TEXTS, task="document", prompt=""),
                               rtol=1e-4, atol=1e-5)
    plain = st.encode(TEXTS)  # plain encode: the default route (and the default prompt: none here)
    np.testing.assert_allclose(model.embed(TEXTS), plain, rtol=1e-4, atol=1e-5)
    # query vs document through their routes, and every combination of routes per side
    for route_a, route_b in (("query", "document"), ("document", "query"), (None, "query")):
        side = {None: {}, "query": {"task": "query"}, "document": {"task": "document"}}
        scores = [e.model_score for e in explain_pairs(model, PAIRS, method="hxp", route_a=route_a, route_b=route_b,
                                                       prompt_a="", prompt_b="")]
        np.testing.assert_allclose(scores, _st_pair_scores(st, PAIRS, {**side[route_a], "prompt": ""},
                                                           {**side[route_b], "prompt": ""}), rtol=1e-5, atol=1e-6)
    # the two routes really differ (or this test would not see a wrong route)
    assert np.abs(model.embed(TEXTS[:1], routes="query") - model.embed(TEXTS[:1], routes="document")).max() > 1e-3


def test_routes_with_prompts_equal_encode_query_and_encode_document(folders):
    folder = folders[("two-encoders", False)]
    model, st = _load(folder), _st(folder)
    exps = explain_pairs(model, PAIRS, method="bilrp", route_a="query", route_b="document", prompt_a="query",
                         prompt_b="document")
    ea, eb = st.encode_query([a for a, _ in PAIRS]), st.encode_document([b for _, b in PAIRS])
    np.testing.assert_allclose([e.model_score for e in exps], st.similarity_pairwise(ea, eb).numpy(), rtol=1e-5)
    assert exps[0].prompt_text_a == "query: " and exps[0].prompt_text_b == "doc: "
    assert (exps[0].route_a, exps[0].route_b) == ("query", "document")
    # the same through a model whose side routes and prompts are set once (what a run does)
    routed = model.with_routes("query", "document").with_prompts("query", "document")
    assert explain(routed, *PAIRS[0], method="bilrp").model_score == pytest.approx(exps[0].model_score, rel=1e-7)


@pytest.mark.parametrize("method", ["bilrp", "hxp", "ij", "embedding"])
@pytest.mark.parametrize("name", ["two-encoders", "shared-dense"])
def test_factors_equal_the_slow_reference_of_each_route(folders, name, method):
    model = _load(folders[(name, False)], double=True)
    steps = 2 if method == "ij" else None
    layer = model.num_layers if method == "embedding" else 1
    got = compute_factors(model, TEXTS[:3], method=method, layer=layer, steps=steps, batch_size=2,
                          routes=["query", "document", "query"], prompts="")
    for text, route, factors in zip(TEXTS[:3], ["query", "document", "query"], got, strict=True):
        view = model.routed(route)
        assert_close(factors.factor, reference_factor(view, text, method, layer, steps))
        np.testing.assert_allclose(factors.embedding, model.embed([text], routes=route, prompts="")[0], rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.parametrize("name", ["two-encoders", "shared-dense", "mapped"])
def test_bilrp_conserves_per_route_without_biases(folders, name):
    model = _load(folders[(name, True)], double=True)
    for route_a, route_b in (("query", "document"), ("document", "document"), ("query", "query")):
        exp = explain(model, *PAIRS[0], method="bilrp", layer=0, route_a=route_a, route_b=route_b)
        assert exp.score == pytest.approx(exp.model_score, rel=1e-6)
        # factors are stored in float32: the residual is measured against the relevance that moves
        assert abs(exp.residual) <= 1e-6 * np.abs(exp.matrix).sum(), (route_a, route_b, exp.residual, exp.score)
        hxp = explain(model, *PAIRS[0], method="hxp", layer=0, route_a=route_a, route_b=route_b)
        assert abs(hxp.residual) > 1e-4 * np.abs(hxp.matrix).sum()  # plain gradients do not conserve


def test_routes_make_their_own_model_variant(folders):
    model = _load(folders[("two-encoders", False)])
    assert model.route == "document" and model.variant == ""  # plain encode runs the default route
    qd = model.with_routes("query", "document")
    assert qd.variant == 'routes=["query", "document"]' and qd.model_id != model.model_id
    # identity is content: tasks that resolve to the default routes are the model itself
    assert model.with_routes(None, "document").model_id == model.model_id
    assert model.with_routes("query", "document").with_prompts("query", None).model_id == \
        model.with_prompts("query", None).with_routes("query", "document").model_id
    mapped = _load(folders[("mapped", False)])
    assert mapped.resolve_route("query") == "q_route" and mapped.resolve_route("document") == "d_route"
    assert mapped.resolve_route("q_route") == "q_route" and mapped.resolve_route(None) == "q_route"
    # another folder with the same routes' weights is the same model; other weights are another
    other = _load(folders[("two-encoders", True)])
    assert other.revision != model.revision


def test_unknown_route_is_refused_as_sentence_transformers_refuses_it(folders):
    folder = folders[("two-encoders", False)]
    model, st = _load(folder), _st(folder)
    with pytest.raises(ValueError, match="No route found"):
        st.encode(TEXTS[:1], task="passage")
    with pytest.raises(ValueError, match=r"no route .* task 'passage'.*query, document"):
        explain(model, *PAIRS[0], route_a="passage")
    with pytest.raises(ValueError, match="pooling of plain Hugging Face models"):
        load_model(folder, device="cpu", pooling="cls")


def test_a_route_with_an_unsupported_module_is_refused_naming_it(folders, tmp_path):
    folder = tmp_path / "bad-route"
    shutil.copytree(folders[("shared-dense", False)], folder)
    config = json.loads((folder / "2_Router" / "router_config.json").read_text())
    config["types"]["query_0_Dense"] = "sentence_transformers.models.LayerNorm"
    (folder / "2_Router" / "router_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"route 'query'.*LayerNorm.*not supported"):
        load_model(folder, device="cpu")


def test_precompute_run_with_routes(folders, tmp_path):
    import pandas as pd
    from test_precompute import write_pairs

    from core.store import Store
    from precompute.cli import main

    folder = folders[("two-encoders", False)]
    pairs = write_pairs(tmp_path / "pairs.tsv", 4)
    store = tmp_path / "store"
    common = ["--model", str(folder), "--dataset", str(pairs), "--store", str(store), "--gold-range", "0,5"]
    assert main(["predict", *common]) == 0
    assert main(["predict", *common, "--route-a", "query", "--route-b", "document", "--prompt", ""]) == 0
    reader = Store(store)
    runs = reader.runs()
    assert len(runs) == 2 and runs["model_id"].nunique() == 2  # the routed run is another model variant
    model, st = _load(folder), _st(folder)
    routed_id = model.with_routes("query", "document").with_prompts("", "").model_id
    run_id = runs.set_index("model_id").loc[routed_id, "run_id"]
    got = reader.predictions(run_id).sort_values("pair_id")["model_score"].to_numpy()
    source = pd.read_csv(pairs, sep="\t")
    expected = _st_pair_scores(st, list(zip(source["sentence1"], source["sentence2"], strict=True)),
                               {"task": "query", "prompt": ""}, {"task": "document", "prompt": ""})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def explain_page(monkeypatch, tmp_path, folder):
    """The Explain page with ``folder`` typed as the model (no store)."""
    from streamlit.testing.v1 import AppTest

    from core import views
    from tests.conftest import ROOT

    monkeypatch.setenv(views.STORE_ENV, str(tmp_path / "no-store"))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "pages" / "6_Explain.py"), default_timeout=120)
    at.run()
    at.selectbox(key="xp_model_choice").set_value("Other (folder path or hub id)…")
    at.run()
    at.text_input(key="xp_model_path").input(str(folder))
    at.text_area(key="xp_text_a").input(PAIRS[0][0])
    at.text_area(key="xp_text_b").input(PAIRS[0][1])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_explain_page_routes_each_side(folders, monkeypatch, tmp_path):
    folder = folders[("two-encoders", False)]
    at = explain_page(monkeypatch, tmp_path, folder)
    at.selectbox(key="xp_route_a").set_value("query")
    at.selectbox(key="xp_route_b").set_value("document")
    at.selectbox(key="xp_prompt_a").set_value("query")
    at.selectbox(key="xp_prompt_b").set_value("document")
    at.button(key="xp_go").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    st = _st(folder)
    expected = float(st.similarity(st.encode_query(PAIRS[0][:1]), st.encode_document(PAIRS[0][1:]))[0, 0])
    assert page_metric(at, "model score") == f"{expected:.4f}"
    assert page_metric(at, "route of text 1") == "query" and page_metric(at, "route of text 2") == "document"


def test_attribute_run_explains_each_side_through_its_route(folders, tmp_path):
    import pandas as pd
    from test_precompute import write_pairs

    from core.store import Store
    from precompute.cli import main

    folder = folders[("shared-dense", False)]
    pairs = write_pairs(tmp_path / "pairs.tsv", 3)
    store = tmp_path / "store"
    assert main(["attribute", "--model", str(folder), "--dataset", str(pairs), "--store", str(store), "--gold-range",
                 "0,5", "--method", "hxp", "--route-a", "query", "--route-b", "document", "--lang", "en"]) == 0
    reader = Store(store)
    run_id = reader.runs().loc[0, "run_id"]
    predictions = reader.predictions(run_id).set_index("pair_id")
    source = pd.read_csv(pairs, sep="\t")
    model = _load(folder)
    for pid in range(3):
        exp = explain(model, source.loc[pid, "sentence1"], source.loc[pid, "sentence2"], method="hxp",
                      route_a="query", route_b="document")
        assert predictions.loc[pid, "model_score"] == pytest.approx(exp.model_score, rel=1e-6)
        assert predictions.loc[pid, "explained_score"] == pytest.approx(exp.score, rel=1e-6)
        stored = reader.pair_matrix(run_id, pid).pivot(index="i", columns="j", values="relevance").to_numpy()
        np.testing.assert_allclose(stored, exp.matrix, rtol=1e-5, atol=1e-7)
