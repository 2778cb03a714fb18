"""Compare two runs: two models, two methods, two layers, or two settings of one dataset (e.g. mstsb:en vs
mstsb:en-de). Metric deltas, the POS difference heatmap, and the POS and token pairs that changed most."""

import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets
from core.safe_text import literal

shell.require_store()
runs = data.runs()

st.title("Compare runs")
st.caption("B − A everywhere: red where run B puts more relevance (or a higher score) than run A.")

ordered = views.order_runs(runs)
labels = views.run_labels(ordered)
ids = list(labels)
if len(ids) < 2:
    st.info("Comparisons need at least two runs in the store.")
    st.stop()
default = views.default_comparison(runs) or (ids[0], ids[1])
for key, rid in (("cmp_a", default[0]), ("cmp_b", default[1])):
    widgets.keep_valid(key, ids)
    st.session_state.setdefault(key, rid)


def _swap() -> None:
    st.session_state["cmp_a"], st.session_state["cmp_b"] = st.session_state["cmp_b"], st.session_state["cmp_a"]


with st.container(border=True):
    c1, c2, c3 = st.columns([2, 2, 1.3])
    with c1:
        run_a = st.selectbox("Run A", ids, format_func=lambda r: labels.get(r, r), key="cmp_a")
    with c2:
        run_b = st.selectbox("Run B", ids, format_func=lambda r: labels.get(r, r), key="cmp_b")
    with c3:
        st.button("Swap A and B", icon=":material/swap_horiz:", on_click=_swap, key="cmp_swap")
        special = st.toggle("Special tokens", value=True, key="cmp_special")
        sqrt = st.toggle("√ colour scale", value=False, key="cmp_sqrt", help="weak cells become visible")
    c4, c5, c6 = st.columns([1.2, 1.2, 2])
    with c4:
        level = st.radio("POS level", ["token", "word"], horizontal=True, key="cmp_level",
                         format_func=lambda v: {"token": "subword tokens", "word": "words"}[v])
    with c5:
        agg = st.radio("Aggregate", ["sum", "mean"], horizontal=True, key="cmp_agg",
                       format_func=lambda v: {"sum": "sum", "mean": "mean per occurrence"}[v])
    with c6:
        gold = st.slider("Gold band (0–1)", 0.0, 1.0, (0.0, 1.0), 0.05, key="cmp_gold")

info_a = ordered.set_index("run_id").loc[run_a].to_dict() | {"run_id": run_a}
info_b = ordered.set_index("run_id").loc[run_b].to_dict() | {"run_id": run_b}
if run_a == run_b:
    st.warning("Run A and run B are the same run: pick two different runs.")
diffs = views.run_difference(info_a, info_b)
st.markdown("**A** — " + literal(labels[run_a]) + "  \n**B** — " + literal(labels[run_b]))
if diffs:
    st.caption("Differences: " + literal("; ".join(diffs)))

# ---- metrics -------------------------------------------------------------------------------------
st.header("Metrics")
cmp = views.metric_deltas(data.compare_metrics(run_a, run_b))
if cmp.empty:
    st.info("No metrics for one of the runs yet.")
else:
    by = cmp.set_index("metric")
    with st.container(horizontal=True):
        for m, name, inverse in (("spearman", "Spearman", False), ("pearson", "Pearson", False),
                                 ("mse", "MSE", True), ("mean_abs_error", "mean |error|", True)):
            if m not in by.index:
                continue
            va, vb = by.at[m, "run_a"], by.at[m, "run_b"]
            kind = m if m in ("spearman", "pearson") else "mse"
            delta = None if views.is_na(va) or views.is_na(vb) else round(float(vb - va), 4) + 0.0  # no "-0.0"
            st.metric(f"{name} (B)", views.fmt_metric(vb, kind), delta=delta, border=True,
                      delta_color="inverse" if inverse else "normal", help=f"A: {views.fmt_metric(va, kind)}")
    with st.expander("All metrics of A and B"):
        widgets.show_table(cmp, "simlens_compare_metrics", "cmp_metrics",
                           column_config={c: st.column_config.NumberColumn(format="%.4f")
                                        for c in ("run_a", "run_b", "diff")} |
                         {"rel_change": st.column_config.NumberColumn(format="percent")})

tab_pos, tab_tok, tab_pairs = st.tabs(["POS interactions", "Token pairs", "Per-pair scores"], key="cmp_tab",
                                     on_change="rerun")
if tab_pos.open:
    with tab_pos:
        kw = dict(gold_band=views.band_arg(gold), include_special=special, level=level, agg=agg)
        pos = data.compare_pos(run_a, run_b, **kw)
        if pos.empty or views.token_runs(ordered[ordered["run_id"].isin([run_a, run_b])]).empty:
            st.info("POS maps need runs with token pairs (not scores-only `predict` runs).")
        else:
            order_a = charts.pos_order(pos["pos_a"])
            order_b = charts.pos_order(pos["pos_b"])
            ca, cb = st.columns(2, gap="large")
            with ca:
                ch = charts.pos_heatmap_chart(pos, "relevance_norm_a", title="A (÷ max |R|)", selection=None,
                                              order_a=order_a, order_b=order_b, cell=18, limit=1.0,
                                              scale="sqrt" if sqrt else "linear")
                widgets.show_chart(ch, "simlens_compare_pos_a", "cmp_chart_a")
            with cb:
                ch = charts.pos_heatmap_chart(pos, "relevance_norm_b", title="B (÷ max |R|)", selection=None,
                                              order_a=order_a, order_b=order_b, cell=18, limit=1.0,
                                              scale="sqrt" if sqrt else "linear")
                widgets.show_chart(ch, "simlens_compare_pos_b", "cmp_chart_b")
            cd, ct = st.columns([3, 2], gap="large")
            with cd:
                ch = charts.pos_heatmap_chart(pos, "diff_norm", title="Difference B − A (normalised maps)", selection=None,
                                              order_a=order_a, order_b=order_b, cell=22,
                                              scale="sqrt" if sqrt else "linear")
                widgets.show_chart(ch, "simlens_compare_pos_diff", "cmp_chart_diff")
            with ct:
                st.subheader("POS pairs that changed most")
                n = st.slider("Rows", 5, 50, 15, 5, key="cmp_pos_rows")
                widgets.show_table(views.heatmap_table(pos, "diff_norm").head(n), "simlens_compare_pos", "cmp_pos_table",
                    column_config={c: st.column_config.NumberColumn(format="%+.4f")
                                   for c in ("relevance_a", "relevance_b", "diff", "relevance_norm_a", "relevance_norm_b",
                                             "diff_norm")})

if tab_tok.open:
    with tab_tok:
        auto = views.comparison_level(info_a, info_b)
        tl = st.radio("Match pairs by", ["token", "word"], index=0 if auto == "token" else 1, horizontal=True,
                      key=f"cmp_tok_level_{auto}",
                      format_func=lambda v: {"token": "token text", "word": "word text (across tokenizers)"}[v],
                      help="different models tokenize differently: compare word texts then")
        k = st.slider("Token pairs", 5, 50, 15, 5, key="cmp_tok_k")
        tok = data.compare_token_pairs(run_a, run_b, limit=k, include_special=special, level=tl)
        if tok.empty:
            st.info("No token pairs to compare.")
        else:
            ct1, ct2 = st.columns([2, 3], gap="large")
            with ct1:
                ch = charts.pair_bar_chart(tok, "diff", title="Summed relevance, B − A",
                                           extra_tooltips=("relevance_a", "relevance_b", "count_a", "count_b"))
                widgets.show_chart(ch, "simlens_compare_token_pairs", "cmp_chart_tok")
            with ct2:
                widgets.show_table(tok, "simlens_compare_token_pairs", "cmp_tok_table",
                                   column_config={c: st.column_config.NumberColumn(format="%+.4f")
                                                for c in ("relevance_a", "relevance_b", "diff")})

if tab_pairs.open:
    with tab_pairs:
        if info_a["dataset_key"] == info_b["dataset_key"]:
            changes = views.score_changes(data.predictions(run_a), data.predictions(run_b))
            if changes.empty:
                st.info("The runs share no pairs yet.")
            else:
                cs1, cs2 = st.columns([2, 3], gap="large")
                with cs1:
                    ch = charts.score_compare_chart(changes, "A", "B", title="Model score per pair")
                    widgets.show_chart(ch, "simlens_compare_scores", "cmp_chart_scores")
                with cs2:
                    st.caption("Pairs whose score changed most (links open run B's explanation).")
                    widgets.show_table(views.with_links(changes.head(50), run_id=run_b), "simlens_compare_scores",
                                       "cmp_scores_table", link_col="open", height=360,
                                       column_config={c: st.column_config.NumberColumn(format="%.4f")
                                                    for c in ("score_a", "score_b", "delta")})
        else:
            st.caption("Per-pair scores are compared when both runs are on the same dataset.")
