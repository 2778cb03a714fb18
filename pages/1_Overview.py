"""Overview: what the store holds, the state of every run, and models x datasets metrics."""

import contextlib

import pandas as pd
import streamlit as st

from core import charts, views
from core.dashboard import data, shell, widgets
from core.safe_text import literal
from core.views import progress as run_progress
from precompute.evaluations import verbs as evaluation_verbs

shell.require_store()
runs = data.runs()
models = data.models()
datasets = data.datasets()
metrics = data.metrics_table()
metrics_per_method = data.metrics_table(per_method=True)

st.title("SimLens audit overview")
st.caption("Token-pair explanations of sentence-similarity models, precomputed over corpora. Pick a page on the "
           "left: POS interactions, comparisons of runs, failure cases, single examples, or your own pair.")

counts = views.status_counts(runs)
token = views.token_runs(runs)
with st.container(horizontal=True):
    st.metric("Models", len(models), border=True)
    st.metric("Datasets", len(datasets), border=True)
    st.metric("Runs", len(runs), border=True,
              help="done / partial (a shard is missing) / running / interrupted (resume it with the same "
                   "command) / failed: " + " / ".join(str(counts[k]) for k in views.RUN_STATUSES))
    st.metric("Methods", ", ".join(sorted(set(runs["method"]))) or "–", border=True)
    st.metric("Layers", ", ".join(str(int(x)) for x in sorted(set(token["layer"].dropna()))) or "–", border=True,
              help="hidden layers the attributions are taken at (0 = input embeddings)")
if counts["running"] or counts["interrupted"] or counts["failed"] or counts["partial"]:
    st.info(f"{counts['running']} run(s) still running, {counts['interrupted']} interrupted, {counts['partial']} "
            f"partial, {counts['failed']} failed — see the runs table. Pages show the chunks written so far; "
            f"use “Reload store” in the sidebar to pick up new ones.")

# ---- models x datasets -------------------------------------------------------------------------
st.header("Models × datasets")
st.caption("Spearman and Pearson correlation (×100) of the model's own similarity with gold, and MSE on the 0–1 "
           "scale; per model and dataset the finished run covering the most pairs (scores-only runs preferred "
           "among equals). Which run, its method and coverage: below and in the long table.")
metric = st.segmented_control("Metric", ["spearman", "pearson", "mse"], default="spearman", key="ov_metric",
                              format_func=lambda m: {"spearman": "Spearman", "pearson": "Pearson", "mse": "MSE"}[m])
metric = metric or "spearman"
pivot = views.metrics_pivot(metrics, metric)
if pivot.empty:
    st.info("No finished run yet: the metrics appear when a run is done.")
else:
    fmt = "%.4f" if metric == "mse" else "%.2f"
    pivot_show = pivot.reset_index()
    cfg = {c: st.column_config.NumberColumn(c, format=fmt) for c in pivot.columns}
    widgets.show_table(pivot_show, f"simlens_{metric}_models_x_datasets", "ov_pivot", column_config=cfg)
    best = metrics.sort_values(metric, ascending=metric == "mse").iloc[0]
    st.caption(f"Best {metric}: **{views.fmt_metric(best[metric], metric)}** — "
               + literal(f"{views.short_model(best['model_name'])} on {best['dataset_key']} "
                         f"({best['method']} run, {best['coverage']})."))
    partial = views.partial_metrics_text(metrics)
    if partial:
        st.warning(literal(partial), icon=":material/rule:")
    with st.expander("All metrics (long form: per model, dataset and method, each from its most complete run)"):
        widgets.show_table(metrics_per_method.assign(model=metrics_per_method["model_name"].map(views.short_model)),
                           "simlens_metrics", "ov_metrics_long")

# ---- faithfulness evidence -------------------------------------------------------------------------
st.header("Faithfulness evidence")
evaluations = data.evaluation_list()
if evaluations.empty:
    first, *others = evaluation_verbs()
    st.caption(f"No faithfulness evaluation stored yet: `python -m precompute {first} --dataset stsb:test` "
               f"(also {', '.join(others)}).")
else:
    st.caption(f"{len(evaluations)} evaluation(s): " + ", ".join(
        f"{kind} ×{n}" for kind, n in evaluations["kind"].value_counts().sort_index().items()))
    widgets.show_table(evaluations[["kind", "model_name", "dataset_key", "n_pairs", "created_at"]],
                       "simlens_evaluations", "ov_evaluations")
with contextlib.suppress(KeyError, st.errors.StreamlitAPIException):
    st.page_link("pages/9_Faithfulness.py", label="Open the Faithfulness page", icon=":material/verified:")

# ---- runs ----------------------------------------------------------------------------------------
st.header("Runs")
table = views.runs_overview(views.order_runs(runs))
statuses = [s for s in views.RUN_STATUSES if s in set(table["status"])]
shown = st.pills("Status", statuses, selection_mode="multi", default=statuses, key="ov_status") or statuses
table = table[table["status"].isin(shown)]
table.insert(0, "open", [views.example_url(r) for r in table["run_id"]])
widgets.show_table(
    table, "simlens_runs", "ov_runs", link_col="open",
    column_config={
        "progress": st.column_config.ProgressColumn("progress", format="percent", min_value=0.0, max_value=1.0),
        "spearman": st.column_config.NumberColumn("spearman", format="%.2f"),
        "pearson": st.column_config.NumberColumn("pearson", format="%.2f"),
        "mse": st.column_config.NumberColumn("mse", format="%.4f"),
        "pairs_per_s": st.column_config.NumberColumn("pairs/s", format="%.1f"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
    },
)

# ---- run progress and workers ---------------------------------------------------------------------
st.header("Run progress and workers")
chunked = run_progress.progress_runs(runs[runs["n_chunks"].fillna(0) > 0])
if chunked.empty:
    st.caption("No run has chunks yet.")
else:
    labels = views.run_labels(chunked)
    chosen = widgets.run_select("Run", chunked["run_id"].tolist(), labels, key="ov_progress_run",
                                help="Running and interrupted runs first. A distributed run (`--ray`) shows one row "
                                     "per Ray actor; a sharded or resumed run one row per writing process.")
    row = chunked.set_index("run_id").loc[chosen].to_dict() | {"run_id": chosen}
    workers = data.run_workers(chosen)
    st.caption(literal(run_progress.progress_caption(row, workers)))
    if workers.empty:
        st.info(f"This run has not written any pairs yet (0 of {int(row['n_chunks'])} chunks).")
    else:
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        widgets.show_table(run_progress.worker_table(workers, now), f"simlens_workers_{chosen[:8]}", "ov_workers",
                           column_config={
                               "share": st.column_config.ProgressColumn("share of pairs", format="percent",
                                                                        min_value=0.0, max_value=1.0),
                               "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
                               "pairs_per_s": st.column_config.NumberColumn("pairs/s", format="%.2f"),
                               "since_last_s": st.column_config.NumberColumn("s since last commit", format="%.0f")})
        timeline = run_progress.timeline_frame(data.chunk_timeline(chosen))
        widgets.show_chart(charts.progress_chart(timeline, int(row["n_pairs"]),
                                                 title=f"Pairs committed over time ({len(workers)} worker(s))"),
                           f"simlens_progress_{chosen[:8]}", "ov_progress_chart")
    if row["status"] == "running" and st.toggle("Follow this run (reload the store every 5 s)", key="ov_follow"):
        @st.fragment(run_every=5)
        def _follow() -> None:  # its timed reruns reload the whole page at the newest snapshot
            if st.session_state.get("_ov_follow_armed"):
                data.forget_snapshots()
                st.rerun()
            st.session_state["_ov_follow_armed"] = True

        st.session_state["_ov_follow_armed"] = False  # this run is the page's own, not the timer's
        _follow()

# ---- catalogue -------------------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("Datasets")
    widgets.show_table(views.dataset_table(datasets).drop(columns="label"), "simlens_datasets", "ov_datasets")
with right:
    st.subheader("Models")
    widgets.show_table(models, "simlens_models", "ov_models")

if st.toggle("Show storage details (rows and bytes per table)", key="ov_storage"):
    summary = data.summary()
    summary = summary.assign(MB=summary["bytes"] / 1e6)
    widgets.show_table(summary, "simlens_store_summary", "ov_summary",
                       column_config={"MB": st.column_config.NumberColumn("MB", format="%.2f")})
