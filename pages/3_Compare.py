"""Compare two runs: two models, two methods, two layers, or two settings of one dataset (e.g. mstsb:en vs
mstsb:en-de). Metric deltas, the POS difference heatmap, and the POS and token pairs that changed most."""

from collections.abc import Callable

import pandas as pd
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
band = views.band_arg(gold)
comp = data.comparability(run_a, run_b)
unwritten = [f"run {name}: " + views.empty_reason(runs, [rid]) for name, rid, n in
             (("A", run_a, comp.n_a), ("B", run_b, comp.n_b)) if n == 0]
if unwritten:
    st.info(literal(" ".join(unwritten)))
elif comp.reason:
    st.warning(literal(comp.reason + "."), icon=":material/rule:")
else:
    st.caption(views.comparison_caption(comp, band))
if comp.untagged:
    st.info(f"No POS tags on {', '.join(comp.untagged)} (no tagger for that language was installed when the run "
            f"was made): its words show as “untagged” in the POS maps, one row or column, not a part of speech.")

# ---- metrics -------------------------------------------------------------------------------------
st.header("Metrics")
cmp = views.metric_deltas(data.compare_metrics(run_a, run_b, gold_band=band))
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
refused = comp.token_pairs_reason or ("" if comp.n_shared else "the runs share no pair yet")
covers = {"A": views.partial_note(runs, [run_a]), "B": views.partial_note(runs, [run_b])}
shared_note = f"{comp.n_shared:,} shared pairs" + (" in the gold band" if band else "")


def compared(load: Callable[[], pd.DataFrame]) -> pd.DataFrame | None:
    """What ``load`` returns, or None after saying why nothing is compared (refused, or nothing in the band)."""
    if refused:
        st.info(f"Not compared: {literal(refused)}.")
        return None
    frame = load()
    if frame.empty:
        st.info("No token pairs in this gold band on the pairs both runs cover.")
        return None
    return frame


if tab_pos.open:
    with tab_pos:
        pos = compared(lambda: data.compare_pos(run_a, run_b, gold_band=band, include_special=special, level=level,
                                                agg=agg))
        if pos is not None:
            order_a = charts.pos_order(pos["pos_a"])
            order_b = charts.pos_order(pos["pos_b"])
            for side, column in zip("AB", st.columns(2, gap="large"), strict=True):
                with column:
                    ch = charts.pos_heatmap_chart(
                        pos, f"relevance_norm_{side.lower()}", title=f"{side} (÷ max |R|)", selection=None,
                        order_a=order_a, order_b=order_b, cell=18, limit=1.0, scale="sqrt" if sqrt else "linear",
                        subtitle=f"{shared_note} · {covers[side]}" if covers[side] else shared_note)
                    widgets.show_chart(ch, f"simlens_compare_pos_{side.lower()}", f"cmp_chart_{side.lower()}")
            cd, ct = st.columns([3, 2], gap="large")
            with cd:
                ch = charts.pos_heatmap_chart(pos, "diff_norm", title="Difference B − A (normalised maps)", selection=None,
                                              order_a=order_a, order_b=order_b, cell=22,
                                              scale="sqrt" if sqrt else "linear", subtitle=shared_note)
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
        tok = compared(lambda: data.compare_token_pairs(run_a, run_b, limit=k, include_special=special, level=tl,
                                                        gold_band=band))
        if tok is not None:
            note = views.unmatched_text(tok, tl)
            if note:
                st.caption(note)
            ct1, ct2 = st.columns([2, 3], gap="large")
            with ct1:
                ch = charts.pair_bar_chart(tok, "diff", title="Summed relevance, B − A", subtitle=shared_note,
                                           extra_tooltips=("relevance_a", "relevance_b", "count_a", "count_b"))
                widgets.show_chart(ch, "simlens_compare_token_pairs", "cmp_chart_tok")
            with ct2:
                widgets.show_table(tok, "simlens_compare_token_pairs", "cmp_tok_table",
                                   column_config={c: st.column_config.NumberColumn(format="%+.4f")
                                                for c in ("relevance_a", "relevance_b", "diff")})

if tab_pairs.open:
    with tab_pairs:
        if not comp.reason:
            changes = data.compare_scores(run_a, run_b, gold_band=band)
            if changes.empty:
                st.info("The runs share no pairs in this gold band yet.")
            else:
                cs1, cs2 = st.columns([2, 3], gap="large")
                with cs1:
                    ch = charts.score_compare_chart(changes, "A", "B", title="Model score per pair",
                                                    subtitle=shared_note)
                    widgets.show_chart(ch, "simlens_compare_scores", "cmp_chart_scores")
                with cs2:
                    st.caption("Pairs whose score changed most (links open run B's explanation).")
                    widgets.show_table(views.with_links(changes.head(50), run_id=run_b, pair_col="pair_id_b"),
                                       "simlens_compare_scores",
                                       "cmp_scores_table", link_col="open", height=360,
                                       column_config={c: st.column_config.NumberColumn(format="%.4f")
                                                    for c in ("score_a", "score_b", "delta", "error_a", "error_b")})
        else:
            st.caption("Per-pair scores are compared on the pairs both runs share: the same text pair and gold "
                       "(whatever the datasets), or aligned datasets (the same rows in two languages, e.g. "
                       "mstsb:en and mstsb:en-de).")
