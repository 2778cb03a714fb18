"""Faithfulness evidence for the README: all-MiniLM-L6-v2 on the first pairs of STS-b test.

    python bench/bench_faithfulness.py [--limit 100] [--convergence-limit 20] [--ij-steps 32]
                                       [--ground-truth] [--finetune-epochs N] [--store DIR]

Runs, in one process with shared explanations (one ``ExplanationCache``), the registered evaluations of
``python -m precompute`` (precompute/evaluations/): perturbation (AUPC per method and a random ranking, Wilcoxon tests), ij convergence
(residual against steps per layer, both quadrature rules), conservation (BiLRP with/without biases, HxP),
distributions (share of negative attributions and top-5 % share per layer), method agreement, POS subsets and the
base model's Table-1 row; optionally the ground-truth task (``--ground-truth``) and fine-tuning of an adjusted and
a standard model (``--finetune-epochs``). Prints Markdown tables, writes ``bench/out/faithfulness.json`` and PNG
figures ``bench/out/faithfulness_*.png``, and keeps the store (default ``bench/out/faithfulness-store``) for the
Faithfulness page: ``SIMLENS_STORE=bench/out/faithfulness-store streamlit run app.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import altair as alt
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import load_model  # noqa: E402
from core.charts import chart_png  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.finetune import FinetuneConfig  # noqa: E402
from core.store import Store  # noqa: E402
from precompute.evaluations import ExplanationCache, evaluate  # noqa: E402
from precompute.evaluations import kinds as evaluation_kinds  # noqa: E402

OUT = ROOT / "bench" / "out"


def md(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def save(chart: alt.TopLevelMixin, name: str) -> str:
    path = OUT / f"faithfulness_{name}.png"
    path.write_bytes(chart_png(chart, scale=2.0))
    return str(path.relative_to(ROOT))


def perturbation_report(rows: pd.DataFrame) -> tuple[str, dict]:
    aupc = rows[rows["metric"] == "aupc"].set_index("series")
    tests = rows[rows["metric"] == "p_value"].copy()
    tests["other"] = tests["extra"].map(lambda e: json.loads(e)["other"])
    tests["p_less"] = tests["extra"].map(lambda e: json.loads(e)["p_less"])

    def p_of(a: str, b: str) -> str:
        hit = tests[((tests["method"] == a) & (tests["other"] == b)) | ((tests["method"] == b) & (tests["other"] == a))]
        return "" if hit.empty else f"{hit['y'].iloc[0]:.2g}"

    order = aupc["y"].sort_values().index.tolist()
    table = pd.DataFrame([{
        "method": m, "AUPC (mean ± sd)": pm(aupc.loc[m, "y"], aupc.loc[m, "y_sd"], 4),
        "p vs random": "" if m == "random" else p_of(m, "random"),
        "p vs best": "" if m == order[0] else p_of(m, order[0]),
        "layer": "" if pd.isna(aupc.loc[m, "layer"]) else int(aupc.loc[m, "layer"]),
        "steps": "" if pd.isna(aupc.loc[m, "steps"]) else int(aupc.loc[m, "steps"]),
    } for m in order])
    curves = rows[rows["metric"] == "distance"]
    chart = alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("x:Q", title="fraction of tokens restored"), y=alt.Y("y:Q", title="distance to the original"),
        color=alt.Color("series:N", title="ranking", sort=order)).properties(width=420, height=280,
                                                                             title="Perturbation curves")
    return md(table), {"aupc": {m: [aupc.loc[m, "y"], aupc.loc[m, "y_sd"]] for m in order},
                       "figure": save(chart, "perturbation")}


def convergence_report(rows: pd.DataFrame) -> tuple[str, dict]:
    err = rows[rows["metric"] == "abs_residual"].copy()
    err["cell"] = [f"{m:.2e} ± {s:.1e}" for m, s in zip(err["y"], err["y_sd"], strict=True)]
    table = err.pivot_table(index="steps", columns="series", values="cell", aggfunc="first").reset_index()
    plot = err[err["y"] > 0]
    chart = alt.Chart(plot).mark_line(point=True).encode(
        x=alt.X("x:Q", title="integration steps", scale=alt.Scale(type="log", domain=[1, float(plot["x"].max())])),
        y=alt.Y("y:Q", title="|score − Σ A| (mean over pairs)", scale=alt.Scale(type="log")),
        color=alt.Color("layer:N"),
        strokeDash=alt.StrokeDash("quadrature:N", legend=alt.Legend(symbolType="stroke"))).properties(
        width=420, height=280, title="ij attribution error")
    data = {f"{r.series} @ {int(r.steps)}": [r.y, r.y_sd] for r in err.itertuples()}
    return md(table), {"abs_residual": data, "figure": save(chart, "convergence")}


def distribution_report(rows: pd.DataFrame) -> tuple[str, dict]:
    neg = rows[rows["metric"] == "negative_share"].set_index("layer")
    top5 = rows[rows["metric"] == "top5_share"].set_index("layer")
    sd_rows = rows[rows["metric"] == "fraction_for_sd_below"]
    table = pd.DataFrame([{
        "layer": int(layer), "negative share": pm(neg.loc[layer, "y"], neg.loc[layer, "y_sd"]),
        "negative (pooled)": f"{json.loads(neg.loc[layer, 'extra'])['pooled']:.3f}",
        "top-5% share of score": pm(top5.loc[layer, "y"], top5.loc[layer, "y_sd"]),
        "token pairs for sd < 5%": _first(sd_rows, layer, "5%"), "token pairs for sd < 2%": _first(sd_rows, layer, "2%"),
    } for layer in neg.index])
    topk = rows[rows["metric"] == "topk_share"]
    chart = alt.Chart(topk).mark_line().encode(
        x=alt.X("x:Q", title="fraction of token pairs (by |value|)"), y=alt.Y("y:Q", title="share of score"),
        color=alt.Color("series:N", title=None)).properties(width=420, height=280, title="Top-k% share")
    hist = rows[rows["metric"] == "density"]
    hchart = alt.Chart(hist).mark_line(interpolate="step-after").encode(
        x=alt.X("x:Q", title="attribution"), y=alt.Y("y:Q", title="density"), color=alt.Color("series:N", title=None)
    ).properties(width=420, height=280, title="Attribution distributions")
    return md(table), {"negative_share": {int(k): [v, neg.loc[k, "y_sd"]] for k, v in neg["y"].items()},
                       "top5_share": {int(k): [v, top5.loc[k, "y_sd"]] for k, v in top5["y"].items()},
                       "figures": [save(chart, "topk"), save(hchart, "histograms")]}


def _first(rows: pd.DataFrame, layer: int, label: str) -> str:
    hit = rows[(rows["layer"] == layer) & (rows["label"] == label)]
    return "–" if hit.empty or pd.isna(hit["y"].iloc[0]) else f"{hit['y'].iloc[0]:.0%}"


def summary_table(rows: pd.DataFrame, metrics: list[str], index: str = "series") -> str:
    sub = rows[rows["metric"].isin(metrics)]
    sub = sub.assign(value=[f"{m:.4g}" if pd.isna(s) else pm(m, s, 4) for m, s in zip(sub["y"], sub["y_sd"], strict=True)])
    return md(sub.pivot_table(index=index, columns="metric", values="value", aggfunc="first").reset_index())


Section = tuple[str, str, dict]  # heading, markdown, what faithfulness.json keeps


def perturbation_section(rows: pd.DataFrame, meta: dict) -> Section:
    text, summary = perturbation_report(rows)
    return (f"Perturbation (AUPC, lower is better; {meta['label']}, random ranking seed {meta['params']['seed']}, "
            f"ij {meta['params']['steps'] or 64} steps)", text, summary)


def convergence_section(rows: pd.DataFrame, meta: dict) -> Section:
    text, summary = convergence_report(rows)
    return f"ij residual |score − Σ A| against steps (mean ± sd, {meta['label']})", text, summary


def conservation_section(rows: pd.DataFrame, meta: dict) -> Section:
    summary = {f"{r.series} {r.metric}": r.y for r in rows[rows["metric"] != "relevance_sum"].itertuples()}
    return (f"Conservation (layer {meta['params']['layer']}, {meta['label']})",
            summary_table(rows, ["abs_residual", "rel_residual", "pearson_r", "slope"]), summary)


def distributions_section(rows: pd.DataFrame, meta: dict) -> Section:
    text, summary = distribution_report(rows)
    return f"ij attributions per layer ({meta['label']}, {meta['params']['steps'] or 64} steps)", text, summary


def agreement_section(rows: pd.DataFrame, meta: dict) -> Section:
    return (f"Rank agreement between methods (Spearman, {meta['label']})",
            summary_table(rows, ["spearman"], index="label").replace("metric", "pair"),
            {f"{r.label} ({r.series})": r.y for r in rows.itertuples()})


def pos_subsets_section(rows: pd.DataFrame, meta: dict) -> Section:
    shares = rows[rows["metric"] == "share"]
    text = md(pd.DataFrame({
        "method": shares["method"], "relations": shares["label"],
        "share (mean ± sd)": [pm(m, s) for m, s in zip(shares["y"], shares["y_sd"], strict=True)],
        "which": shares["extra"].map(lambda e: ", ".join(json.loads(e)["relations"]))}))
    return (f"Share of the score by POS relations ({meta['label']})", text,
            {f"{r.method} {r.label}": [r.y, r.y_sd] for r in shares.itertuples()})


def ground_truth_section(rows: pd.DataFrame, meta: dict) -> Section:
    p = meta["params"]
    text = (summary_table(rows[rows["metric"].isin(["acs", "acs_all_tokens"])], ["acs", "acs_all_tokens"]) + "\n\n"
            + summary_table(rows[rows["series"] == "noun count"], ["spearman", "mse"], index="label"))
    return (f"Ground truth: noun-counting MiniLM (train: first {p['train_limit']} pairs of {p['train_dataset']}, "
            f"{p['epochs']} epochs, lr {p['lr']:g}; test: {meta['label']})", text,
            {f"{r.series} {r.metric} {r.label or ''}".strip(): [r.y, r.y_sd] for r in rows.itertuples()})


def generic_section(rows: pd.DataFrame, meta: dict) -> Section:
    """Any other registered evaluation: every metric per series (mean ± sd)."""
    summary = {f"{r.series} {r.metric}": r.y for r in rows.itertuples()}
    return f"{meta['kind']} ({meta['label']})", summary_table(rows, sorted(set(rows["metric"]))), summary


SECTIONS = {"perturbation": perturbation_section, "convergence": convergence_section,
            "conservation": conservation_section, "distributions": distributions_section,
            "agreement": agreement_section, "pos-subsets": pos_subsets_section, "ground-truth": ground_truth_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="stsb:test")
    parser.add_argument("--limit", type=int, default=100, help="first N pairs (default 100)")
    parser.add_argument("--convergence-limit", type=int, default=20, help="first N pairs for convergence (default 20)")
    parser.add_argument("--ij-steps", type=int, default=32, help="ij steps for the matrix evaluations (default 32)")
    parser.add_argument("--store", default=str(OUT / "faithfulness-store"))
    parser.add_argument("--ground-truth", action="store_true", help="also run the ground-truth task")
    parser.add_argument("--gt-train-limit", type=int, default=2000)
    parser.add_argument("--gt-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune MiniLM (adjusted and not)")
    parser.add_argument("--finetune-limit", type=int, default=None)
    parser.add_argument("--skip", default="", help="comma-separated evaluations to skip")
    parser.add_argument("--report-only", action="store_true", help="only print the report of what the store holds")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    ds = load_dataset(args.dataset)
    store = args.store
    timings: dict[str, float] = {}
    if not args.report_only:
        compute(args, ds, skip, timings)
    reader = Store(store)
    if reader.evaluation_list().empty:
        raise SystemExit(f"no evaluations in {store}: run without --report-only first")
    report: dict = {"model": "all-MiniLM-L6-v2", "dataset": ds.key, "quadrature": "gauss-legendre",
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"}
    sections: list[str] = []

    for kind in evaluation_kinds():
        found = reader.evaluation_list(kind)
        if kind == "table1" or found.empty:
            continue  # Table 1 rows are reported from the model table below
        meta = found.iloc[0].to_dict()
        meta["params"] = json.loads(meta["params"])
        meta["label"] = f"first {int(meta['n_pairs'])} pairs of {meta['dataset_key']}"
        heading, text, summary = SECTIONS.get(kind, generic_section)(reader.evaluations(eval_id=meta["eval_id"]), meta)
        sections.append(f"### {heading}\n\n{text}")
        report[kind.replace("-", "_")] = summary
    table1 = reader.model_table1()
    if not table1.empty:
        table1 = table1.assign(model=[Path(str(m)).name for m in table1["model_name"]])
        cols = ["model", "adjusted", "cosine", "dot", "epochs", "train_pairs", "n_pairs"]
        sections.append("### Table 1 (Spearman ×100 of cosine / dot product of the embeddings vs gold)\n\n"
                        + md(table1[cols], floatfmt=".1f"))
        report["table1"] = table1[cols].to_dict("records")
    report["seconds"] = timings
    print(f"\nall-MiniLM-L6-v2 on {ds.key}; ij: Gauss–Legendre; {report['machine']}\n")
    print("\n\n".join(sections))
    if timings:
        print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    (OUT / "faithfulness.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {OUT / 'faithfulness.json'} and figures; store: {store}")


def compute(args: argparse.Namespace, ds, skip: set[str], timings: dict[str, float]) -> None:
    """Run the evaluations into the store."""
    model = load_model("all-MiniLM-L6-v2", device="cpu")
    store, steps, n = args.store, args.ij_steps, args.limit

    def timed(name, fn, *fn_args, **kw):
        t0 = time.perf_counter()
        fn(*fn_args, **kw)
        timings[name] = time.perf_counter() - t0
        print(f"[{name}] {timings[name]:.0f}s", flush=True)

    cache = ExplanationCache()
    if "perturbation" not in skip:
        timed("perturbation", evaluate, "perturbation", model, ds, store, methods="bilrp,hxp,ij,embedding",
              steps=steps, limit=n, cache=cache)
    if "convergence" not in skip:
        timed("convergence", evaluate, "convergence", model, ds, store, limit=args.convergence_limit, cache=cache)
    if "conservation" not in skip:
        timed("conservation", evaluate, "conservation", model, ds, store, limit=n, cache=cache)
    if "distributions" not in skip:
        big = model.num_layers
        timed("distributions", evaluate, "distributions", model, ds, store, layers=[0, big // 2, big - 1, big],
              steps=steps, limit=n, cache=cache)
    if "agreement" not in skip:
        timed("agreement", evaluate, "agreement", model, ds, store, steps=steps, limit=n, cache=cache)
    if "pos-subsets" not in skip:
        timed("pos-subsets", evaluate, "pos-subsets", model, ds, store, methods="ij,bilrp", steps=steps, limit=n,
              cache=cache)
    if "table1" not in skip:
        timed("table1", evaluate, "table1", model, ds, store)
    if args.ground_truth:
        cfg = FinetuneConfig(objective="dot", normalize=False, epochs=args.gt_epochs, lr=5e-5)
        timed("ground-truth", evaluate, "ground-truth", model.name, ds, store, train_dataset="stsb:train",
              train_limit=args.gt_train_limit, output=OUT / "models" / "ground-truth-minilm", steps=steps, config=cfg,
              limit=n)
    if args.finetune_epochs:
        for adjusted in (True, False):
            name = "minilm-adjusted" if adjusted else "minilm-standard"
            timed(f"finetune {name}", evaluate, "finetune", model.name, ds, store, output=OUT / "models" / name,
                  adjusted=adjusted, config=FinetuneConfig(epochs=args.finetune_epochs), train_limit=args.finetune_limit)


if __name__ == "__main__":
    main()
