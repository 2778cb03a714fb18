"""Example: one pair in depth. Its token x token relevance matrix, scores, gold and residual, and every stored
model/method/layer for the same pair side by side. Linked from every page as ``Example?run=<id>&pair=<id>``."""

import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets
from core.safe_text import literal, parse_ascii_int

shell.require_store()
runs = data.runs()

st.title("Example")

ordered = views.order_runs(runs)
ordered = ordered.assign(_p=~ordered["method"].map(views.has_relevances)).sort_values("_p", kind="stable").drop(columns="_p")
labels = views.run_labels(ordered)
ids = list(labels)

# ---- query parameters (?run=...&pair=...) are applied once per change, then mirror the selection ----
qp_run, qp_pair = st.query_params.get("run"), st.query_params.get("pair")
if (qp_run or qp_pair) and st.session_state.get("_ex_qp") != (qp_run, qp_pair):
    st.session_state["_ex_qp"] = (qp_run, qp_pair)
    if qp_run in ids:
        st.session_state["ex_run"] = qp_run
    elif qp_run:
        st.warning(f"Run {literal(qp_run)} is not in this store; showing another run.")
    wanted_pair = None if qp_pair is None else parse_ascii_int(qp_pair)
    st.session_state["_ex_pair_wanted"] = wanted_pair
    if qp_pair is not None and wanted_pair is None:
        st.warning(f"pair={literal(qp_pair)} is not a pair id (ASCII digits).")

with st.container(border=True):
    c1, c2, c3 = st.columns([2.2, 2.6, 1])
    with c1:
        run_id = widgets.run_select("Run", ids, labels, key="ex_run")
    if run_id is None:
        st.stop()
    info = ordered.set_index("run_id").loc[run_id].to_dict() | {"run_id": run_id}
    # pair ids of another dataset are other pairs: a pair kept from the previous run must be of the same dataset
    widgets.reset_on_change("ex_dataset", info["dataset_key"], ["ex_pair", "ex_side"])
    with c3:
        sort = st.selectbox("Order pairs by", ["pair", "abs", "over", "under"], key="ex_sort",
                            format_func=lambda v: {"pair": "pair id", "abs": "largest |error|",
                                                   "over": "most over-estimated", "under": "most under-estimated"}[v])
    find = widgets.find_inputs("ex")
    pred = data.predictions(run_id, **find)
    options = views.pair_options(pred, sort)
    if find:
        st.caption(f"{len(options):,} pair(s) of this run match {views.find_text(find)}.")
    if not options:
        st.info(views.empty_reason(runs, [run_id], "pairs") if not find or data.predictions(run_id).empty else
                f"No pair of this run matches {views.find_text(find)}.")
        st.stop()
    wanted = st.session_state.pop("_ex_pair_wanted", None)
    if wanted is not None:
        if wanted in options:
            st.session_state["ex_pair"] = wanted
        else:
            st.warning(f"Pair {wanted} is not in this run" + (" among the pairs found" if find else "")
                       + "; showing another pair.")
    widgets.keep_valid("ex_pair", options)
    pair_labels = views.pair_option_labels(pred)
    with c2:
        pair_id = st.selectbox("Pair", options, key="ex_pair", format_func=lambda p: pair_labels.get(p, str(p)))

st.query_params.update({"run": run_id, "pair": str(pair_id)})
st.session_state["_ex_qp"] = (run_id, str(pair_id))

row = pred.set_index("pair_id").loc[pair_id].to_dict()
pinfo = data.pair_info(info["dataset_key"], pair_id)
meta = pinfo.iloc[0].to_dict() if len(pinfo) else {}
st.markdown(f"**Sentence 1:** {literal(row.get('sentence1') or meta.get('sentence1', ''))}  \n"
            f"**Sentence 2:** {literal(row.get('sentence2') or meta.get('sentence2', ''))}")
scale = "" if views.is_na(meta.get("gold_max")) else f" on {meta['gold_min']:g}–{meta['gold_max']:g}"
st.caption(literal(f"{info['dataset_key']} · pair {pair_id} · {views.languages(meta.get('lang_a'), meta.get('lang_b'))} · "
                   f"{views.short_model(info['model_name'])} · {views.setting_text(info)}"
                   + (f" · the run covers {info['coverage']}" if views.is_partial(info) else "")
                   + (" · truncated to the model's maximum length" if bool(row.get("truncated")) else "")))


def _num(v: object, fmt: str) -> str:
    return "–" if views.is_na(v) else format(float(v), fmt)


with st.container(horizontal=True):
    st.metric(f"gold{scale}", _num(row.get("gold"), ".2f"), border=True)
    st.metric("gold 0–1", _num(row.get("gold_norm"), ".3f"), border=True)
    st.metric("model score", _num(row.get("model_score"), ".4f"), border=True,
              help="the model's own similarity of the two sentences")
    st.metric("explained score", _num(row.get("explained_score"), ".4f"), border=True,
              help="the quantity the matrix decomposes (ij: the shifted dot product)")
    st.metric("Σ matrix", _num(row.get("matrix_sum"), ".4f"), border=True)
    st.metric("residual", _num(row.get("residual"), "+.4f"), border=True,
              help="explained score − Σ matrix (BiLRP: relevance absorbed by biases)")
    st.metric("error", _num(row.get("error"), "+.4f"), border=True, help="model score − gold (0–1)")
note, capped = views.integration_notes(info, row)
if note:
    st.caption(note)
if capped:
    st.warning(capped)

level, special, show_values = widgets.matrix_options("ex")

# every stored run of this pair, and the side-by-side selection (its widget is further down): this run's matrix
# and the selected runs' come from one store read
others = data.pair_runs(info["dataset_key"], pair_id)
token_others = views.token_runs(others)
other_labels = {r["run_id"]: f"{views.short_model(r['model_name'])} · {views.setting_text(r)}"
                for r in token_others.to_dict("records")}
other_ids = list(other_labels)
widgets.keep_valid("ex_side", other_ids)
st.session_state.setdefault("ex_side", other_ids[:6])
own = [run_id] if views.has_relevances(info["method"]) else []
# the pair is its content: another run may hold it under another id (a subset or another dataset)
ids_in_run = {str(r): int(p) for r, p in zip(others["run_id"], others["pair_id"], strict=True)} | {run_id: pair_id}
mats = data.pair_matrices(list(dict.fromkeys([*own, *st.session_state["ex_side"]])), ids_in_run, level=level,
                          include_special=special)

if not own:
    st.info("A scores-only run stores no matrix: pick an attribution run above, or see the other runs below.")
    long = None
else:
    long = mats[run_id]
    left, right = st.columns([3, 2], gap="large")
    with left:
        if long.empty:
            st.info("No token pairs stored for this pair.")
        else:
            chart = charts.token_heatmap_chart(long, title=f"{views.short_model(info['model_name'])} · "
                                               f"{views.setting_text(info)}", show_values=show_values)
            widgets.show_chart(chart, f"simlens_example_{run_id}_{pair_id}", "ex_chart")
    with right:
        st.subheader("Strongest pairs")
        top = views.top_token_pairs(long, k=12)
        widgets.show_table(top, f"simlens_example_top_{run_id}_{pair_id}", "ex_top",
                           column_config={"relevance": st.column_config.NumberColumn(format="%+.5f"),
                                        "share": st.column_config.NumberColumn("share of Σ|R|", format="percent")})
        with st.expander("Whole matrix (long form)"):
            widgets.show_table(long, f"simlens_example_matrix_{run_id}_{pair_id}", "ex_matrix", height=300)

# ---- every stored run of this pair ------------------------------------------------------------------------
st.header("Every stored explanation of this pair")
if others.empty:
    st.info("No other run holds this pair.")
    st.stop()
table = others.assign(model=others["model_name"].map(views.short_model))
widgets.show_table(views.with_links(table), f"simlens_example_runs_{pair_id}", "ex_runs", link_col="open",
                   column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in ("model_score", "explained_score", "matrix_sum", "residual", "error")})
if token_others.empty:
    st.stop()
shown = st.multiselect("Side by side", other_ids, format_func=lambda r: other_labels.get(r, r), key="ex_side")
shared = st.toggle("One colour scale for all (compare magnitudes; off: each map uses its own maximum)",
                   value=False, key="ex_shared")
side = {rid: mats[rid] for rid in shown}
limit = max((charts.max_abs(m["relevance"]) for m in side.values() if len(m)), default=1.0) if shared else None
cols = st.columns(2, gap="large")
for n, (rid, m) in enumerate(side.items()):
    with cols[n % 2]:
        r = others.set_index("run_id").loc[rid]
        st.markdown(f"**{literal(other_labels[rid])}** — score {_num(r['model_score'], '.4f')}, explained "
                    f"{_num(r['explained_score'], '.4f')}, residual {_num(r['residual'], '+.4f')}")
        if capped := views.integration_notes(r, r)[1]:
            st.warning(capped)
        if m.empty:
            st.info("No token pairs stored.")
            continue
        chart = charts.token_heatmap_chart(m, limit=limit, show_values=False, cell=16)
        widgets.show_chart(chart, f"simlens_example_{rid}_{pair_id}", f"ex_side_{rid}")
