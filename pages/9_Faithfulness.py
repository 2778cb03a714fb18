"""Faithfulness: the evidence that the explanations mean what they say (evaluations written by
``python -m precompute convergence|conservation|perturbation|distributions|pos-subsets|agreement|ground-truth|
finetune|table1``), read from ``Store.evaluations``."""

import json
import math

import altair as alt
import pandas as pd
import streamlit as st

from core import views
from core.dashboard import data, widgets
from core.store import StoreError

KIND_TITLES = {
    "perturbation": "Perturbation (AUPC)",
    "conservation": "Conservation",
    "convergence": "ij convergence",
    "distributions": "Distributions",
    "pos-subsets": "POS subsets",
    "agreement": "Method agreement",
    "ground-truth": "Ground truth",
    "table1": "Table 1",
}
COMMANDS = """```bash
.venv/bin/python -m precompute perturbation --limit 100{store}      # AUPC per method + random (BiLRP §4.3)
.venv/bin/python -m precompute conservation --limit 100{store}      # BiLRP with/without biases, HxP (BiLRP Fig. 6)
.venv/bin/python -m precompute convergence --limit 20{store}        # ij residual vs steps (IJ Fig. 2)
.venv/bin/python -m precompute distributions --limit 100{store}     # histograms, negative share, top-k% (IJ Figs. 3, 5)
.venv/bin/python -m precompute pos-subsets --limit 100{store}       # noun/verb and top-10 POS relations (IJ §3.4)
.venv/bin/python -m precompute agreement --limit 100{store}         # Spearman between methods
.venv/bin/python -m precompute ground-truth --train-limit 2000 --limit 200{store}   # ACS (BiLRP Fig. 1)
.venv/bin/python -m precompute finetune --adjusted --output models/minilm-adjusted{store}   # IJ Table 1
```"""


def _num(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{v:.4g}"


def _band(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    sd = out["y_sd"].fillna(0.0)
    out["lo"], out["hi"] = out["y"] - sd, out["y"] + sd
    return out


def _extra(df: pd.DataFrame, key: str) -> pd.Series:
    return df["extra"].map(lambda e: (json.loads(e) if isinstance(e, str) and e else {}).get(key))


def _lines(df: pd.DataFrame, x_title: str, y_title: str, log_x: bool = False, log_y: bool = False,
           band: bool = True, title: str | None = None) -> alt.Chart:
    data = _band(df)
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(type="log") if log_x else alt.Undefined)
    scale_y = alt.Scale(type="log") if log_y else alt.Undefined
    color = alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=3, labelLimit=260))
    tip = [alt.Tooltip("series:N"), alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".4g"),
           alt.Tooltip("y_sd:Q", title="sd", format=".3g"), alt.Tooltip("n:Q")]
    base = alt.Chart(data)
    layers = [base.mark_line(point=True).encode(x=x, y=alt.Y("y:Q", title=y_title, scale=scale_y), color=color,
                                                 tooltip=tip)]
    if band and not log_y:
        layers.insert(0, base.mark_area(opacity=0.15).encode(x=x, y="lo:Q", y2="hi:Q", color=color))
    chart = alt.layer(*layers).properties(width=560, height=320)
    return chart.properties(title=title) if title else chart


def _bars(df: pd.DataFrame, category: str, y_title: str, title: str | None = None, color: str | None = None) -> alt.Chart:
    data = _band(df)
    cat = alt.X(f"{category}:N", title=None, sort=list(dict.fromkeys(data[category])),
                axis=alt.Axis(labelAngle=-30, labelLimit=220))
    enc = {"color": alt.Color(f"{color}:N", title=None)} if color else {}
    tip = [alt.Tooltip(f"{category}:N"), alt.Tooltip("y:Q", format=".4g"),
           alt.Tooltip("y_sd:Q", title="sd", format=".3g"), alt.Tooltip("n:Q")]
    if color:
        enc["xOffset"] = alt.XOffset(f"{color}:N")
        tip.insert(1, alt.Tooltip(f"{color}:N"))
    bars = alt.Chart(data).mark_bar().encode(x=cat, y=alt.Y("y:Q", title=y_title), tooltip=tip, **enc)
    rule = alt.Chart(data).mark_rule().encode(x=cat, y="lo:Q", y2="hi:Q", **({"xOffset": enc["xOffset"]} if color else {}))
    chart = alt.layer(bars, rule).properties(width=max(240, 70 * data[category].nunique()), height=300)
    return chart.properties(title=title) if title else chart


def _metric_table(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    sub = df[df["metric"].isin(metrics)]
    cols = [c for c in ("series", "label", "method", "layer", "steps", "metric", "y", "y_sd", "n") if c in sub.columns]
    out = sub[cols].rename(columns={"y": "value", "y_sd": "sd"}).reset_index(drop=True)
    median = _extra(sub, "median").reset_index(drop=True)
    if median.notna().any():
        out.insert(out.columns.get_loc("sd") + 1, "median", median)
    return out


# ---- one section per kind --------------------------------------------------------------------------------


def show_perturbation(df: pd.DataFrame, key: str) -> None:
    st.caption("Tokens ranked by pooled pair relevance are added back, 4 % of the sentence per step, to a fully "
               "masked sentence; the curve is the Euclidean distance to the unperturbed embedding (mean over both "
               "sides of every pair). Lower area (AUPC) = the ranking finds the tokens that matter sooner.")
    widgets.show_chart(_lines(df[df["metric"] == "distance"], "fraction of tokens restored", "distance to original"),
                     "simlens_perturbation_curves", f"{key}_curves")
    widgets.show_chart(_bars(df[df["metric"] == "aupc"], "series", "AUPC (mean ± sd)"), "simlens_aupc", f"{key}_aupc")
    tests = df[df["metric"] == "p_value"].assign(p_less=lambda d: _extra(d, "p_less"),
                                                  median_diff=lambda d: _extra(d, "median_diff"))
    st.markdown("**Paired Wilcoxon signed-rank tests** of the per-pair AUPC (`p_less`: the first is lower)")
    widgets.show_table(tests[["label", "y", "p_less", "median_diff", "n"]].rename(columns={"y": "p (two-sided)"}),
                     "simlens_aupc_tests", f"{key}_tests")


def show_conservation(df: pd.DataFrame, key: str) -> None:
    st.caption("Sum of the relevance matrix against the score it explains, per pair. BiLRP on a copy of the model "
               "with all biases set to zero conserves exactly (the identity line); the gap of BiLRP with biases is "
               "the relevance biases absorb; H×P is not conservative.")
    points = df[df["metric"] == "relevance_sum"]
    lo = float(min(points["x"].min(), points["y"].min())) if len(points) else 0.0
    hi = float(max(points["x"].max(), points["y"].max())) if len(points) else 1.0
    ident = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="gray", strokeDash=[4, 4]).encode(
        x="x:Q", y="y:Q")
    dots = alt.Chart(points).mark_circle(size=28, opacity=0.6).encode(
        x=alt.X("x:Q", title="explained score"), y=alt.Y("y:Q", title="sum of relevance"),
        tooltip=[alt.Tooltip("series:N"), alt.Tooltip("x:Q", format=".4f"), alt.Tooltip("y:Q", format=".4f")])
    chart = alt.layer(ident, dots).properties(width=260, height=260).facet(
        column=alt.Column("series:N", title=None, sort=list(dict.fromkeys(points["series"]))), data=points) \
        if len(points) else dots
    widgets.show_chart(chart, "simlens_conservation", f"{key}_scatter")
    widgets.show_table(_metric_table(df, ["abs_residual", "rel_residual", "pearson_r", "slope"]),
                     "simlens_conservation_summary", f"{key}_summary")


def show_convergence(df: pd.DataFrame, key: str) -> None:
    st.caption("Integrated Jacobians: |score − sum of attributions| against the number of integration steps, per "
               "layer and quadrature rule (mean over pairs; sd in the tooltip). Deeper layers converge with fewer "
               "steps; Gauss–Legendre converges much faster than the paper's uniform rule.")
    rel = st.toggle("relative to |score|", key=f"{key}_rel")
    sub = df[df["metric"] == ("rel_residual" if rel else "abs_residual")]
    sub = sub[sub["y"] > 0]
    widgets.show_chart(_lines(sub, "integration steps", "relative residual" if rel else "|residual|", log_x=True,
                            log_y=True, band=False), "simlens_convergence", f"{key}_chart")
    widgets.show_table(_metric_table(df, ["abs_residual", "rel_residual"]), "simlens_convergence", f"{key}_table")


def show_distributions(df: pd.DataFrame, key: str) -> None:
    st.caption("Token-pair attributions per layer: their distribution (shared bins; the edge bins hold the "
               "outer 0.5 %), the share that is negative, and the cumulative share of the explained score reached "
               "by the top-k % of pairs sorted by |value| (mean ± sd over pairs).")
    hist = df[df["metric"] == "density"]
    chart = alt.Chart(hist).mark_line(interpolate="step-after").encode(
        x=alt.X("x:Q", title="attribution"), y=alt.Y("y:Q", title="density"),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["series:N", alt.Tooltip("x:Q", format=".3g"), alt.Tooltip("y:Q", format=".3g")]
    ).properties(width=560, height=280)
    widgets.show_chart(chart, "simlens_attribution_histograms", f"{key}_hist")
    left, right = st.columns(2)
    with left:
        neg = df[df["metric"] == "negative_share"].assign(layer_=lambda d: "layer " + d["layer"].astype(str))
        widgets.show_chart(_bars(neg, "layer_", "share of negative pairs", color="method"),
                         "simlens_negative_share", f"{key}_neg")
    with right:
        top5 = df[df["metric"] == "top5_share"].assign(layer_=lambda d: "layer " + d["layer"].astype(str))
        widgets.show_chart(_bars(top5, "layer_", "share of score in the top 5 %", color="method"),
                         "simlens_top5_share", f"{key}_top5")
    widgets.show_chart(_lines(df[df["metric"] == "topk_share"], "fraction of token pairs (by |value|)",
                            "share of the explained score"), "simlens_topk_share", f"{key}_topk")
    widgets.show_table(_metric_table(df, ["negative_share", "top5_share", "fraction_for_sd_below"]),
                     "simlens_distributions_summary", f"{key}_summary")


def show_pos_subsets(df: pd.DataFrame, key: str) -> None:
    st.caption("Share of the explained score carried by token pairs of given POS relations (signed: shares can "
               "exceed 100 % or be negative), and how often the top relations occur among the highest "
               "attributions (IJ Fig. 6; special tokens are left out of that ranking).")
    shares = df[df["metric"] == "share"]
    widgets.show_chart(_bars(shares, "label", "share of the explained score", color="method"),
                     "simlens_pos_subset_share", f"{key}_share")
    widgets.show_chart(_lines(df[df["metric"] == "share_top_n_relations"], "n most frequent relations",
                            "share of the explained score"), "simlens_pos_top_n", f"{key}_topn")
    rel = df[df["metric"] == "relation_share"]
    widgets.show_chart(_bars(rel, "label", "share of the top attributions", color="series"),
                     "simlens_pos_relations", f"{key}_relations")


def show_agreement(df: pd.DataFrame, key: str) -> None:
    st.caption("Spearman rank correlation between two methods' matrices on the same pair, mean over pairs.")
    series = sorted(set(df["series"]))
    pick = st.segmented_control("Token pairs", series, default=series[0], key=f"{key}_series") or series[0]
    sub = df[(df["metric"] == "spearman") & (df["series"] == pick)].copy()
    sub["other"] = _extra(sub, "other")
    both = pd.concat([sub, sub.rename(columns={"method": "other", "other": "method"})], ignore_index=True)
    chart = alt.Chart(both).mark_rect().encode(
        x=alt.X("method:N", title=None), y=alt.Y("other:N", title=None),
        color=alt.Color("y:Q", title="Spearman", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
        tooltip=["method:N", "other:N", alt.Tooltip("y:Q", format=".3f"), alt.Tooltip("y_sd:Q", format=".3f"), "n:Q"])
    text = alt.Chart(both).mark_text(fontSize=12).encode(x="method:N", y="other:N", text=alt.Text("y:Q", format=".2f"))
    widgets.show_chart(alt.layer(chart, text).properties(width=320, height=320), "simlens_agreement", f"{key}_chart")
    widgets.show_table(_metric_table(df, ["spearman"]), "simlens_agreement", f"{key}_table")


def show_ground_truth(df: pd.DataFrame, key: str) -> None:
    st.caption("A model fine-tuned so that the dot product of its mean-pooled embeddings counts the nouns/proper "
               "nouns two sentences share. ACS = mean cosine similarity between each method's matrix and the true "
               "interaction matrix (1 where tokens of the same shared noun meet), over test pairs sharing a noun.")
    acs = df[df["metric"].isin(["acs", "acs_all_tokens"])].assign(
        tokens=lambda d: d["metric"].map({"acs": "without special tokens", "acs_all_tokens": "all tokens"}))
    widgets.show_chart(_bars(acs, "series", "ACS (mean ± sd)", color="tokens"), "simlens_ground_truth_acs",
                     f"{key}_acs")
    widgets.show_table(_metric_table(df, ["spearman", "mse", "acs", "acs_all_tokens"]), "simlens_ground_truth",
                     f"{key}_table")


def show_table1(_df: pd.DataFrame, key: str) -> None:
    st.caption("Möller et al. (2023) Table 1: Spearman ×100 between gold and the cosine / dot product of each "
               "model's embeddings (shifted embeddings for adjusted models), newest evaluation per model.")
    table = store.model_table1()
    widgets.show_table(table, "simlens_table1", f"{key}_table1",
                     column_config={c: st.column_config.NumberColumn(c, format="%.1f") for c in ("cosine", "dot")})


SECTIONS = {"perturbation": show_perturbation, "conservation": show_conservation, "convergence": show_convergence,
            "distributions": show_distributions, "pos-subsets": show_pos_subsets, "agreement": show_agreement,
            "ground-truth": show_ground_truth, "table1": show_table1}

# ---- page ---------------------------------------------------------------------------------------------------

st.title("Faithfulness evidence")
st.caption("Do the token-pair explanations say what the model does? Conservation and convergence (exactness), "
           "perturbation (do the top tokens matter most?), a task with known ground truth, and the distribution "
           "of attributions — the evaluations of Möller et al. (2023) and Vasileiou & Eberle (2024).")

path, _explicit = views.store_location()
store_arg = "" if str(path) == views.DEFAULT_STORE else f" --store {path}"
try:
    store = data.open_store(str(path)) if path.exists() else None
    listing = store.evaluation_list() if store is not None else None
except StoreError as exc:
    store, listing = None, None
    st.warning(f"The store at `{path}` cannot be read: {exc}")
except Exception as exc:  # noqa: BLE001  (an unreadable file: say what happened, never a trace)
    store, listing = None, None
    st.warning(f"The store at `{path}` cannot be read: {type(exc).__name__}: {exc}")
if listing is None or listing.empty:
    where = "no store yet" if store is None else "the store holds no evaluations yet"
    st.info(f"**No faithfulness evaluations** in `{path}` ({where}). Each of these writes one (MiniLM on the first "
            f"pairs of STS-b test by default; `--model`, `--dataset`, `--methods`, `--layers` choose):")
    st.markdown(COMMANDS.format(store=store_arg))
    st.caption(f"`python -m precompute evaluations{store_arg}` lists what a store holds. This page reads the store "
               f"named by `{views.STORE_ENV}` (default `./{views.DEFAULT_STORE}`).")
    st.stop()

if st.button("Reload", key="faith_reload", help="re-read the evaluations"):
    st.rerun()
kinds = [k for k in KIND_TITLES if k in set(listing["kind"])]
kinds += sorted(set(listing["kind"]) - set(kinds))
tabs = st.tabs([KIND_TITLES.get(k, k) for k in kinds])
for kind, tab in zip(kinds, tabs, strict=True):
    with tab:
        found = listing[listing["kind"] == kind].reset_index(drop=True)
        labels = {
            r["eval_id"]: f"{views.short_model(r['model_name'])} · {r['dataset_key']} · {int(r['n_pairs'] or 0)} pairs · "
                          f"{pd.Timestamp(r['created_at']):%Y-%m-%d %H:%M}"
            for _, r in found.iterrows()}
        key = f"faith_{kind}"
        if kind == "table1":
            chosen = found["eval_id"].iloc[0]
        else:
            widgets.keep_valid(f"{key}_pick", list(labels))
            chosen = st.selectbox("Evaluation", list(labels), format_func=labels.get, key=f"{key}_pick")
        rows = store.evaluations(eval_id=chosen)
        if rows.empty:
            st.info("This evaluation has no rows (it may have been replaced); press Reload.")
            continue
        meta = rows.iloc[0]
        with st.expander("Settings"):
            st.json({"eval_id": chosen, "model": meta["model_name"], "dataset": meta["dataset_key"],
                     "pairs": None if pd.isna(meta["n_pairs"]) else int(meta["n_pairs"]),
                     "seconds": _num(meta["seconds"]), "code_version": meta["code_version"],
                     "params": json.loads(meta["params"]) if isinstance(meta["params"], str) else {}})
        try:
            if kind in SECTIONS:
                SECTIONS[kind](rows, key)
            else:  # a kind this page does not know yet: its rows
                widgets.show_table(rows, f"simlens_{kind}", key)
        except Exception as exc:  # noqa: BLE001  (one malformed evaluation must not break the page)
            st.error(f"Cannot show this evaluation: {type(exc).__name__}: {exc}")
