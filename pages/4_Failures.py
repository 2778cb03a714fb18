"""Failures: the largest over- and under-estimates against gold, each with its strongest token pairs, and per
model the token pairs that dominate the highest- and lowest-similarity quartiles (BiLRP paper, Fig. 5)."""

import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets
from core.safe_text import literal

shell.require_store()
runs = data.runs()

st.title("Failures")
st.caption("Error = model score − gold (both on 0–1): red pairs were scored too similar, blue ones too dissimilar.")

candidates = views.order_runs(views.token_runs(runs))
if candidates.empty:
    candidates = views.order_runs(runs)
labels = views.run_labels(candidates)
ids = list(labels)

with st.container(border=True):
    c1, c2, c3, c4 = st.columns([2.4, 1, 1, 1])
    with c1:
        run_id = widgets.run_select("Run", ids, labels, key="fail_run")
    with c2:
        limit = st.slider("Pairs per list", 3, 50, 10, key="fail_limit")
    with c3:
        top_k = st.slider("Token pairs per pair", 1, 10, 3, key="fail_topk")
    with c4:
        special = st.toggle("Special tokens", value=False, key="fail_special",
                            help="include [CLS]/[SEP]/<s> pairs among each pair's strongest token pairs")
    find = widgets.find_inputs("fail")
if run_id is None:
    st.stop()
widgets.reset_on_change("fail_run", run_id, ["fail_pair", "fail_q_method"])  # they belong to the previous run
info = candidates.set_index("run_id").loc[run_id].to_dict()
covers = views.partial_note(runs, [run_id])
if covers:
    st.caption(literal(covers + ": the lists and charts below are about those pairs only."))
if not views.has_relevances(info["method"]):
    st.caption("A scores-only run: failures are listed without token pairs.")

tab_errors, tab_quartiles = st.tabs(["Largest errors", "Similarity quartiles (per model)"], key="fail_tab",
                                   on_change="rerun")
if tab_errors.open:
    with tab_errors:
        over = views.signed_failures(data.failures(run_id, kind="over", limit=limit, top_k=top_k,
                                                 include_special=special, **find), "over")
        under = views.signed_failures(data.failures(run_id, kind="under", limit=limit, top_k=top_k,
                                                  include_special=special, **find), "under")
        pred = data.predictions(run_id, **find)
        if find:
            st.caption(f"{len(pred):,} pair(s) of this run match {views.find_text(find)}.")

        left, right = st.columns([2, 3], gap="large")
        with left:
            highlight = [*over["pair_id"].tolist(), *under["pair_id"].tolist()]
            chart = charts.score_scatter_chart(pred, title="Model score against gold (listed pairs outlined)",
                                               highlight=highlight, width=380, height=330, subtitle=covers or None)
            widgets.show_chart(chart, "simlens_failures_scatter", "fail_chart_scatter")
            errors = pred["error"].dropna()
            if len(errors):
                with st.container(horizontal=True):
                    st.metric("pairs", f"{len(errors):,}")
                    st.metric("mean error", f"{errors.mean():+.3f}")
                    st.metric("mean |error|", f"{errors.abs().mean():.3f}")
        with right:
            tab_over, tab_under = st.tabs([f"Over-estimated ({len(over)})", f"Under-estimated ({len(under)})"])
            for tab, df, kind in ((tab_over, over, "over"), (tab_under, under, "under")):
                with tab:
                    if df.empty:
                        st.info(views.empty_reason(runs, [run_id], "pairs") if pred.empty else
                                "No pair in this run is " + ("scored above" if kind == "over" else "scored below")
                                + " its gold" + (" among the pairs found" if find else "")
                                + (" (the run has no gold scores)." if pred["error"].isna().all() else "."))
                        continue
                    table = views.with_links(views.failures_table(df), run_id=run_id)
                    widgets.show_table(table, f"simlens_failures_{kind}", f"fail_table_{kind}", link_col="open", height=360,
                                       column_config={"error": st.column_config.NumberColumn(format="%+.3f"),
                                                    "model_score": st.column_config.NumberColumn(format="%.3f"),
                                                    "gold_norm": st.column_config.NumberColumn(format="%.3f"),
                                                    "top_pairs_text": st.column_config.TextColumn("top token pairs",
                                                                                                  width="large")})

        st.subheader("Inspect one failure")
        choices = [*over["pair_id"].tolist(), *under["pair_id"].tolist()]
        if choices:
            rows = {int(r["pair_id"]): r for r in [*over.to_dict("records"), *under.to_dict("records")]}
            widgets.keep_valid("fail_pair", [int(c) for c in choices])  # and reset_on_change above
            pid = st.selectbox("Pair", [int(c) for c in choices], key="fail_pair",
                               format_func=lambda p: f"#{p} · error {rows[p]['error']:+.3f} · {rows[p]['sentence1']}")
            r = rows[pid]
            st.markdown(f"**1:** {literal(r['sentence1'])}  \n**2:** {literal(r['sentence2'])}")
            st.caption(f"gold {r['gold']:.2f} ({r['gold_norm']:.3f} on 0–1), model score {r['model_score']:.4f}, "
                       f"error {r['error']:+.4f}. Strongest token pairs: {literal(r['top_pairs_text'] or '–')}")
            if views.has_relevances(info["method"]):
                long = data.pair_matrix(run_id, pid, level="word", include_special=special)
                if not long.empty:
                    chart = charts.token_heatmap_chart(long, title=f"Pair {pid}, words")
                    widgets.show_chart(chart, f"simlens_failure_{pid}", "fail_chart_pair")
            widgets.example_link(run_id, pid, label=f"Open pair {pid} in Example (every method, subword view)")

if tab_quartiles.open:
    with tab_quartiles:
        st.caption("Per model: the token pairs with the largest summed relevance among the 25% of pairs with the highest "
                   "(left) and the lowest (right) model score, on this run's dataset and method (BiLRP paper, Fig. 5).")
        token = views.token_runs(runs)
        methods = sorted(set(token.loc[token["dataset_key"] == info["dataset_key"], "method"]))
        if not methods:
            st.info("Quartiles need runs with token pairs on this dataset.")
            st.stop()
        q1, q2, q3 = st.columns([1, 1, 1])
        with q1:
            method = st.selectbox("Method", methods, index=methods.index(info["method"]) if info["method"] in methods else 0,
                                  key="fail_q_method")
        with q2:
            k = st.slider("Token pairs", 3, data.QUARTILE_TOP_MAX, 8, key="fail_q_k",
                          help="Text pairs per quartile (a finished run stores its top 20, read without aggregating its token pairs)")
        with q3:
            qlevel = st.radio("Level", ["token", "word"], horizontal=True, key="fail_q_level",
                              format_func=lambda v: {"token": "subword tokens", "word": "words"}[v])
        per_model = views.quartile_runs(runs, info["dataset_key"], method,
                                         prefer_layer=info["layer"] if method == info["method"] else None)
        for row in per_model.to_dict("records"):
            st.subheader(literal(f"{views.short_model(row['model_name'])} · {views.setting_text(row)}"))
            qa, qb = st.columns(2, gap="large")
            for col, quartile in ((qa, "high"), (qb, "low")):
                with col:
                    top = data.quartile_top_pairs(row["run_id"], quartile=quartile, k=k, include_special=special,
                                                  level=qlevel)
                    if top.empty:
                        st.info(views.empty_reason(runs, [row["run_id"]]))
                        continue
                    title = ("Highest" if quartile == "high" else "Lowest") + "-similarity quartile"
                    chart = charts.pair_bar_chart(top, "relevance", title=title, extra_tooltips=("mean_relevance", "count",
                                                                                                 "n_pairs"),
                                                  subtitle=views.partial_note(runs, [row["run_id"]]) or None)
                    widgets.show_chart(chart, f"simlens_quartile_{quartile}_{row['run_id']}", f"fail_q_{quartile}_{row['run_id']}")
                    with st.expander("table"):
                        widgets.show_table(top, f"simlens_quartile_{quartile}_{row['run_id']}",
                                           f"fail_q_table_{quartile}_{row['run_id']}")
