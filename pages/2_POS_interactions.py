"""POS interactions: corpus-level POS x POS heatmaps of token-pair relevance (BiLRP paper, Fig. 3 and 9).

Click a cell (or pick it in the selector) to list the token pairs and sentence pairs behind it.
"""

import functools

import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets

shell.require_store()
runs = data.runs()
datasets = data.datasets()

st.title("POS interactions")
st.caption("Relevance of every token pair summed (or averaged per occurrence) by the part of speech of its two "
           "tokens, over all pairs of the selected runs. Each map is divided by its largest absolute value; red: "
           "the interaction raises the similarity, blue: it lowers it.")

opts = views.filter_options(datasets)
with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1.0, 2.2, 1.2, 1.4])
    with c1:
        name = st.selectbox("Corpus", opts["name"], key="pos_name")
        langs = st.selectbox("Languages", opts["languages"], key="pos_langs")
        split = st.selectbox("Split", opts["split"], key="pos_split")
    keys = views.filter_datasets(datasets, name, split, langs)
    candidates = views.filter_runs(runs, keys, with_tokens=True)
    labels = views.run_labels(candidates)
    ids = list(labels)
    with c2:
        widgets.keep_valid("pos_runs", ids)
        if not st.session_state.get("pos_runs"):
            st.session_state["pos_runs"] = views.default_run(candidates)  # one with pairs, if any
        run_ids = st.multiselect("Runs (their cells are summed)", ids, format_func=lambda r: labels.get(r, r),
                                 key="pos_runs", placeholder="choose one or more runs")
        st.caption(f"{len(ids)} run(s) with token pairs match the dataset filters.")
        widgets.reset_on_change("pos_runs", sorted(run_ids), ["pos_cell", "pos_example_run"])
    with c3:
        level = st.radio("Level", ["token", "word"], horizontal=True, key="pos_level",
                         format_func=lambda v: {"token": "subword tokens", "word": "words"}[v],
                         help="words: the relevances of a word's subword pieces are summed first")
        agg = st.radio("Aggregate", ["sum", "mean"], horizontal=True, key="pos_agg",
                       format_func=lambda v: {"sum": "sum", "mean": "mean per occurrence"}[v])
        special = st.toggle("Special tokens", value=False, key="pos_special",
                            help="[CLS], [SEP], <s> …; off: cells of special tokens are left out (they often "
                                 "dominate the scale)")
        sqrt = st.toggle("√ colour scale", value=False, key="pos_sqrt",
                         help="colour by the square root of |value| (sign kept): weak cells become visible; the "
                              "values themselves stay divided by the largest |value|")
    with c4:
        gold = st.slider("Gold band (0–1)", 0.0, 1.0, (0.0, 1.0), 0.05, key="pos_gold")
        err = st.slider("Error band (model score − gold, 0–1)", -1.0, 1.0, (-1.0, 1.0), 0.05, key="pos_err",
                        help="the ends at ±1 are open: −1 keeps every error below −1")
        find = widgets.find_inputs("pos")
        scale = views.dataset_table(datasets)
        scale = scale[scale["dataset_key"].isin(candidates.loc[candidates["run_id"].isin(run_ids), "dataset_key"])]
        if len(scale) == 1:
            st.caption(views.gold_band_text(gold, scale["gold_min"].iloc[0], scale["gold_max"].iloc[0]))

if not run_ids:
    st.info("Choose at least one run with token pairs (the filters above may exclude them all).")
    st.stop()

bands = dict(gold_band=views.band_arg(gold), error_band=views.band_arg(err, (-1.0, 1.0)), **find)
covers = views.partial_note(runs, run_ids)  # named under every map of a partial run
heat = data.pos_heatmap(list(run_ids), include_special=special, level=level, agg=agg, **bands)
if heat.empty:
    st.info(views.empty_reason(runs, list(run_ids)))
    st.stop()

agg_text = "mean per occurrence" if agg == "mean" else "sum"
unit = "word" if level == "word" else "token"
st.caption(f"{int(heat['count'].sum()):,} {unit} pairs from up to {int(heat['n_pairs'].max()):,} sentence pairs "
           f"per cell; {len(heat)} POS cells" + (f"; pairs matching {views.find_text(find)}" if find else "")
           + (f". {covers}." if covers else "."))


def _on_click(chart_key: str) -> None:
    cell = views.selected_cell(st.session_state.get(chart_key), "cell")
    if cell is not None:
        st.session_state["pos_cell"] = views.cell_label(*cell)


def _heatmap(value: str, title: str, cell: int, name: str, key: str, half: str | None = None) -> None:
    """One clickable POS map (every map outlines the current cell; a click picks a cell)."""
    chart = charts.pos_heatmap_chart(heat, value, title=title, order_a=order_a, order_b=order_b, cell=cell,
                                     highlight=current, scale="sqrt" if sqrt else "linear", half=half,
                                     limit=1.0 if half else None, subtitle=covers or None)
    widgets.show_chart(chart, name, key, on_select=functools.partial(_on_click, key))


order_a = charts.pos_order(heat["pos_a"])
order_b = charts.pos_order(heat["pos_b"])
cells = views.cell_options(heat)
widgets.keep_valid("pos_cell", cells)
st.session_state.setdefault("pos_cell", cells[0])
current = views.parse_cell(st.session_state["pos_cell"])  # outlined in every map
left, right = st.columns([3, 2], gap="large")
with left:
    _heatmap("relevance_norm", f"Relevance ({agg_text}, ÷ max |R|)", 24, "simlens_pos_relevance", "pos_chart_rel")

with right:
    st.subheader("Cell")
    label = st.selectbox("Click a cell in a heatmap, or pick one (strongest first)", cells, key="pos_cell")
    cell = views.parse_cell(label)
    row = views.cell_row(heat, cell) if cell else None
    if row is not None:
        with st.container(horizontal=True):
            st.metric("relevance ÷ max", f"{row['relevance_norm']:+.3f}")
            st.metric("positive", views.fmt_signed(row["pos_sum"]))
            st.metric("negative", views.fmt_signed(row["neg_sum"]))
            st.metric(f"{unit} pairs", f"{int(row['count']):,}")
            st.metric("sentence pairs", f"{int(row['n_pairs']):,}")
        run_for_examples = run_ids[0]
        if len(run_ids) > 1:
            run_for_examples = st.selectbox("Examples from run", list(run_ids), format_func=lambda r: labels.get(r, r),
                                            key="pos_example_run")
        order = st.segmented_control("Order", ["abs", "pos", "neg"], default="abs", key="pos_order",
                                     format_func=lambda v: {"abs": "strongest |R|", "pos": "most positive",
                                                            "neg": "most negative"}[v]) or "abs"
        limit = st.slider("Token pairs", 5, 100, 20, 5, key="pos_limit")
        examples = data.pos_cell_examples(run_for_examples, cell[0], cell[1], limit=limit,
                                          include_special=special, order=order, **bands)
        if examples.empty:
            st.info("No token pairs of that run in this cell: " + views.empty_reason(runs, [run_for_examples]))
        else:
            if level == "word":
                st.caption("Listed per subword token pair whose tokens carry these tags.")
            st.caption("Each token pair with its sentence pair's gold (0–1), model score and error (model − gold), "
                       "under the filters above.")
            widgets.show_table(views.cell_examples_table(views.with_links(examples, run_id=run_for_examples)),
                               "simlens_pos_cell_examples", "pos_examples", link_col="open", height=320,
                               column_config={"relevance": st.column_config.NumberColumn(format="%+.5f"),
                                              "gold_norm": st.column_config.NumberColumn("gold 0–1", format="%.3f"),
                                              "model_score": st.column_config.NumberColumn(format="%.3f"),
                                              "error": st.column_config.NumberColumn(format="%+.3f")})
            top = examples.iloc[0]
            widgets.example_link(run_for_examples, int(top["pair_id"]),
                                 label=f"Open the strongest example (pair {int(top['pair_id'])}) in Example")

heat, pos_max = views.own_maximum(heat, "pos_sum")
heat, neg_max = views.own_maximum(heat, "neg_sum")
c_pos, c_neg = st.columns(2, gap="large")
with c_pos:
    _heatmap("pos_sum_own", f"Positive relevance ({agg_text}, ÷ its max)", 20, "simlens_pos_positive",
             "pos_chart_pos", half="pos")
with c_neg:
    _heatmap("neg_sum_own", f"Negative relevance ({agg_text}, ÷ its max)", 20, "simlens_pos_negative",
             "pos_chart_neg", half="neg")
st.caption(views.own_maximum_text(pos_max, neg_max))

with st.expander("All cells as a table"):
    widgets.show_table(views.heatmap_table(heat), "simlens_pos_heatmap", "pos_table")
