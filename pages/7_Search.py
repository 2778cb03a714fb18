"""Search: a query against a stored index, the top-k passages by the model's own similarity, and why each one
matched (query x passage token heatmap from the query's live factor and the passage's stored factor); contrast
two hits on the query's tokens. Loads the index's model for the query only (one model pass per query)."""

import altair as alt
import pandas as pd
import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets
from core.safe_text import literal
from core.store import StoreError
from core.store.index import SEARCH_MODES
from core.store.index_search import IndexStore

shell.ensure_navigation()
st.title("Search")
st.caption("Type a query: the index's model embeds it (with the model's query prompt when it has one), the store "
           "ranks every stored passage by the model's own similarity, and each hit is explained token by token "
           "from the query's live factor and the passage's stored factor.")


@st.cache_resource(show_spinner=False, validate=data.still_current, on_release=IndexStore.close)
def open_indexes(path: str) -> IndexStore:
    return IndexStore(path)


@st.cache_resource(show_spinner=False, max_entries=2)
def load_model(path: str):
    from core import load_model as _load

    return _load(path)


@st.cache_data(show_spinner=False, max_entries=64)
def run_search(path: str, index_id: str, query: str, k: int, mode: str):
    from core.search import index_model_source, search_index

    reader = open_indexes(path)
    record = reader.index_info(index_id)
    return search_index(load_model(index_model_source(record)), reader, index_id, query, k=k, mode=mode)


path = str(data.current_store_path())
try:
    reader = open_indexes(path)
    indexes = reader.indexes()
except StoreError as exc:
    reader, indexes = None, pd.DataFrame()
    st.info(f"No store to search: {exc}")
if indexes.empty:
    st.warning("This store has no search index yet.", icon=":material/info:")
    st.markdown("Build one, then reload this page:\n\n```bash\n"
                f".venv/bin/python -m precompute index --dataset stsb:test --store {path}\n"
                f".venv/bin/python -m precompute index --corpus my_passages.txt --store {path}\n```")
    st.stop()

labels = {r["index_id"]: f"{r['corpus_key']} · {views.short_model(r['model_name'])} · {r['method']} L{r['layer']} · "
          f"{r['n_passages']:,} texts" + ("" if r["status"] == "done" else f" · {r['status']}")
          for r in indexes.to_dict("records")}
with st.form("sr_form", border=True):
    c1, c2, c3 = st.columns([2.4, 0.6, 0.8])
    with c1:
        index_id = st.selectbox("Index", list(labels), format_func=labels.get, key="sr_index")
    with c2:
        k = int(st.number_input("Hits", 1, 50, 5, key="sr_k"))
    with c3:
        mode = st.selectbox("Search", SEARCH_MODES, key="sr_mode",
                            format_func={"auto": "auto (HNSW when built)", "exact": "exact scan",
                                         "hnsw": "HNSW (approximate)"}.get)
    query = st.text_input("Query", key="sr_query", placeholder="A man is playing a guitar.")
    go = st.form_submit_button("Search", type="primary")

record = indexes.set_index("index_id").loc[index_id].to_dict() | {"index_id": index_id}
if go:
    if not query.strip():
        st.error("The query is empty: type some words to search for.")
        st.stop()
    st.session_state["sr_shown"] = (index_id, query, k, mode)

shown = st.session_state.get("sr_shown")
if shown is None:
    st.info("Type a query and press **Search**.")
    st.stop()
try:
    with st.spinner(f"Searching with {views.short_model(record['model_name'])}…"):
        result = run_search(path, *shown)
except Exception as exc:  # noqa: BLE001  (a moved model, an unfinished index, bad input: say so, never a trace)
    st.error(f"{type(exc).__name__}: {exc}")
    st.stop()
shown_record = indexes.set_index("index_id").loc[shown[0]].to_dict()

s = result.seconds
st.caption(f"{len(result.hits)} best of {shown_record['n_passages']:,} passages ({shown_record['n_windows']:,} "
           f"windows) of {literal(shown_record['corpus_key'])} · {result.mode} search · "
           f"{shown_record['similarity']} similarity · query encoded in {s['encode'] * 1000:.0f} ms, searched in "
           f"{s['search'] * 1000:.0f} ms, explained in {s['explain'] * 1000:.0f} ms"
           + (f" · query prompt {literal(repr(result.query_prompt))}" if result.query_prompt else ""))

runs = data.runs() if data.store_ok() else pd.DataFrame()


def example_run(dataset_key: str | None) -> str | None:
    """A stored attribution run of the hit's dataset (same model and method first), to open the pair in."""
    if dataset_key is None or runs.empty:
        return None
    cands = views.token_runs(runs)
    cands = cands[cands["dataset_key"] == dataset_key]
    if cands.empty:
        return None
    rank = (cands["model_id"] != shown_record["model_id"]).astype(int) * 2 + (cands["method"] != shown_record["method"])
    return cands.assign(_r=rank).sort_values("_r", kind="stable")["run_id"].iloc[0]


special = st.toggle("Special tokens", value=False, key="sr_special")
for hit in result.hits:
    exp = hit.explanation
    title = f"#{hit.rank} · {hit.score:.4f} · {hit.passage[:110]}"
    with st.expander(literal(title), expanded=hit.rank <= 2):  # indexed corpora are untrusted text
        window = "" if hit.window_start == 0 and hit.window_end == len(hit.passage) else \
            f" · best window {hit.window_index} (characters {hit.window_start}–{hit.window_end})"
        where = f"{hit.dataset_key} · pair {hit.pair_id} · sentence {'1' if hit.side == 'a' else '2'}" \
            if hit.dataset_key else f"passage {hit.passage_id}"
        st.markdown(literal(hit.passage if not window else f"…{hit.passage[hit.window_start:hit.window_end]}…"))
        st.caption(literal(where + window))
        with st.container(horizontal=True):
            st.metric("score", f"{hit.score:.4f}", border=True, help="the model's similarity, computed in the store")
            st.metric("explained score", f"{exp.score:.4f}", border=True, help="the quantity the matrix decomposes")
            st.metric("Σ matrix", f"{float(exp.matrix.sum()):.4f}", border=True)
            st.metric("residual", f"{exp.residual:+.4f}", border=True, help="explained score − Σ matrix")
        long = views.explanation_frame(exp)
        if not special:
            long = views.drop_special(long)
        left, right = st.columns([3, 2], gap="large")
        with left:
            chart = charts.token_heatmap_chart(long, title="query (rows) × passage (columns)")
            widgets.show_chart(chart, f"simlens_search_{hit.rank}", f"sr_chart_{hit.rank}")
        with right:
            st.markdown("**Strongest pairs** (query token ↔ passage token)")
            widgets.show_table(views.top_token_pairs(long, k=8), f"simlens_search_top_{hit.rank}", f"sr_top_{hit.rank}",
                             column_config={"relevance": st.column_config.NumberColumn(format="%+.5f"),
                                            "share": st.column_config.NumberColumn("share of Σ|R|", format="percent")})
            run_id = example_run(hit.dataset_key)
            if run_id is not None:
                widgets.example_link(run_id, int(hit.pair_id), label="Open its pair in Example", key=f"sr_ex_{hit.rank}")
            elif hit.dataset_key:
                st.caption(literal(f"No attribution run of {hit.dataset_key} in this store to open the pair in "
                                   f"(python -m precompute attribute --dataset {hit.dataset_key})."))

# ---- contrast two hits -----------------------------------------------------------------------------------
if len(result.hits) < 2:
    st.stop()
st.header("Contrast two hits")
st.caption("Why A ranks above B: each query token's relevance to A minus its relevance to B (rows of the two "
           "matrices summed over the passage). Positive: the token pushes A up relative to B.")
ranks = [h.rank for h in result.hits]
hit_label = {h.rank: f"#{h.rank} · {h.score:.4f} · {h.passage[:70]}" for h in result.hits}
c1, c2 = st.columns(2)
with c1:
    ra = st.selectbox("Hit A", ranks, index=0, format_func=hit_label.get, key="sr_a")
with c2:
    rb = st.selectbox("Hit B", ranks, index=1, format_func=hit_label.get, key="sr_b")
if ra == rb:
    st.info("Pick two different hits.")
    st.stop()

from core.search import contrast_hits  # noqa: E402  (torch: loaded with the search)

con = contrast_hits(result.hits[ra - 1].explanation, result.hits[rb - 1].explanation)
table = pd.DataFrame({"position": range(len(con.tokens)), "query token": con.tokens, "special": con.special,
                      "to A": con.relevance_a, "to B": con.relevance_b, "A − B": con.difference})
visible = table if special else table[~table["special"]]
visible = visible.assign(label=[f"{p}:{t}" for p, t in zip(visible["position"], visible["query token"], strict=True)])
bars = alt.Chart(visible).mark_bar().encode(
    y=alt.Y("label:N", sort=visible["label"].tolist(), title="query token"),
    x=alt.X("A − B:Q", title="relevance to A − relevance to B"),
    color=alt.Color("A − B:Q", scale=charts.signed_scale(charts.max_abs(visible["A − B"])), legend=None),
    tooltip=[alt.Tooltip("query token:N"), alt.Tooltip("to A:Q", format="+.5f"), alt.Tooltip("to B:Q", format="+.5f"),
             alt.Tooltip("A − B:Q", format="+.5f")],
).properties(width=420, height=alt.Step(22), title=f"#{ra} vs #{rb}")
left, right = st.columns([3, 2], gap="large")
with left:
    widgets.show_chart(bars, f"simlens_search_contrast_{ra}_{rb}", "sr_contrast_chart")
with right:
    widgets.show_table(visible.drop(columns=["label"]), f"simlens_search_contrast_{ra}_{rb}", "sr_contrast_table",
                     column_config={c: st.column_config.NumberColumn(format="%+.5f") for c in ("to A", "to B", "A − B")})
st.markdown(
    f"Σ (A − B) over all query tokens = **{con.total:+.5f}**; explained score A − B = {con.explained_difference:+.5f}; "
    f"the gap {con.gap:+.5f} is the residuals' difference −(residual A − residual B) = "
    f"{-(con.residual_a - con.residual_b):+.5f}. Model score A − B = {con.model_score_a - con.model_score_b:+.5f}.")
