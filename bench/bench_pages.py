"""Server time of every dashboard page on a store of >= 10 million token-pair rows, with AppTest: today's pages
on the DuckLake store against the pages and Parquet-directory store of commit 172c48d, in one run.

    .venv/bin/python bench/bench_pages.py [--store DIR] [--pairs 1379] [--runs 12] [--tokens 25] [--repeat 3]
                                          [--layouts ducklake,legacy] [--legacy-commit 172c48d] [--no-explain]

``--store DIR`` holds one store per layout (DIR/ducklake, DIR/legacy, as ``bench/bench_store.py --keep DIR``
leaves them); a missing one, or one with fewer than 10 million token pairs, is built there with
``bench_store.build`` (12 runs x 1,379 pairs x ~25x25 tokens ~ 10.3 M rows). Each layout runs in a subprocess
with its own code (the old one from ``git archive`` of the commit). Per page (and per heavy interaction) the page
script runs under Streamlit's AppTest:

- cold: the first run of the page in a server process whose store connection is open (DuckDB extensions
  loaded, the catalog attached), with Streamlit's data caches empty and nothing of the snapshot in memory
  (the DuckLake reader's catalogue copy dropped, ``Store.forget_snapshot``): what a visitor waits for after
  "Reload store" or when a writer has committed since; the OS page cache and DuckDB's file cache stay warm;
- warm: the median of ``--repeat`` reruns (widget changes that hit the cache);
- queries: seconds spent in store queries during the cold run, and the slowest of them.

Before the pages, the first page run of the fresh process (Overview) is timed on its own: it also opens the
store (extensions, ATTACH, catalogue) and compiles the app's pages. The Python imports (streamlit, pandas,
duckdb, and torch through ``core/__init__``) are timed separately: they happen once per server process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

import bench_store  # noqa: E402

MIN_ROWS = 10_000_000


def token_pair_rows(path: Path) -> int:
    from core.store import Store, StoreError

    if not path.exists():
        return 0
    try:
        summary = Store(path).summary().set_index("table")
    except StoreError:
        return 0
    return int(summary.at["token_pairs", "rows"])


def ensure_store(path: Path, args: argparse.Namespace) -> None:
    if token_pair_rows(path) >= MIN_ROWS:
        return
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    print(f"building {args.pairs} pairs x {args.runs} runs (mean {args.tokens} tokens per side) in {path} ...",
          file=sys.stderr, flush=True)
    info = bench_store.build(path, args.pairs, args.runs, args.tokens, 100, 0)
    print(f"wrote {info['token_pairs']:,} token_pairs rows in {info['seconds']:.0f} s", file=sys.stderr, flush=True)


def query_log() -> list:
    """The dashboard's log of (query, seconds): ``core.dashboard.data`` today, ``core.views`` before."""
    try:
        from core.dashboard import data
    except ImportError:
        from core import views as data
    return data.QUERY_LOG


def clear_caches(store: object) -> None:
    """Empty Streamlit's data caches and drop the store's in-memory copy of its snapshot (the store stays open)."""
    import streamlit as st

    st.cache_data.clear()
    forget = getattr(store, "forget_snapshot", None)  # the old Parquet-directory Store holds no snapshot copy
    if forget is not None:
        forget()


def open_dashboard_store(path: Path) -> object:
    """The Store the dashboard itself reads through (its ``open_store``, a cached resource, in both layouts)."""
    try:
        from core.dashboard import data
    except ImportError:
        from core import views as data
    return data.open_store(str(path))


def scenarios(code: Path, run_a: str, run_b: str, pair: int) -> list[tuple[str, str, dict, Callable | None]]:
    """(label, page, query parameters, session-state change) for every page of ``code`` and its heavy tabs."""

    def setter(**state: object) -> Callable:
        def apply(a) -> None:
            for k, v in state.items():
                a.session_state[k] = v
        return apply

    link = {"run": run_a, "pair": str(pair)}
    wanted = [
        ("Overview", "pages/1_Overview.py", {}, None),
        ("Overview + storage details", "pages/1_Overview.py", {}, setter(ov_storage=True)),
        ("POS interactions", "pages/2_POS_interactions.py", {}, None),
        ("POS: words, mean, bands, 2 runs", "pages/2_POS_interactions.py", {},
         setter(pos_level="word", pos_agg="mean", pos_gold=(0.5, 1.0), pos_err=(-1.0, 0.2), pos_runs=[run_a, run_b])),
        ("Compare (metrics + POS)", "pages/3_Compare.py", {}, None),
        ("Compare: token pairs tab", "pages/3_Compare.py", {}, setter(cmp_tab="Token pairs")),
        ("Compare: per-pair scores tab", "pages/3_Compare.py", {}, setter(cmp_tab="Per-pair scores")),
        ("Failures (errors tab)", "pages/4_Failures.py", {}, None),
        ("Failures: quartiles tab", "pages/4_Failures.py", {}, setter(fail_tab="Similarity quartiles (per model)")),
        ("Example (link with run & pair)", "pages/5_Example.py", link, None),
        ("Example: words", "pages/5_Example.py", link, setter(ex_level="word")),
        ("Explain your own pair (form)", "pages/6_Explain.py", {}, None),
        ("Search (no index stored)", "pages/7_Search.py", {}, None),
        ("Faithfulness (no evaluation stored)", "pages/9_Faithfulness.py", {}, None),
    ]
    return [s for s in wanted if (code / s[1]).exists()]


def measure(code: Path, path: Path, args: argparse.Namespace) -> dict:
    """Every page of the app at ``code`` on the store at ``path`` (the ``core`` on ``sys.path`` is ``code``'s)."""
    t0 = time.perf_counter()
    import streamlit  # noqa: F401
    from streamlit.testing.v1 import AppTest

    from core import views
    imports = time.perf_counter() - t0
    log = query_log()

    os.environ["SIMLENS_STORE"] = str(path)
    os.environ["SIMLENS_AUTO_DEMO"] = "0"
    at = AppTest.from_file(str(code / "app.py"), default_timeout=600)
    t0 = time.perf_counter()
    at.run()  # the first page of a fresh process: opens the store, compiles the router and imports the rest
    first_page = time.perf_counter() - t0
    if at.exception:
        raise SystemExit(f"first page: {at.exception[0].value}")
    store = open_dashboard_store(path)
    runs = store.runs()
    token = views.order_runs(views.token_runs(runs))
    run_a, run_b = token["run_id"].iloc[0], token["run_id"].iloc[1]
    predictions = store.predictions(run_a)
    pair = int(predictions["pair_id"].iloc[len(predictions) // 2])
    print(f"store {path}: {len(runs)} runs; imports {imports:.2f} s; first page {first_page:.2f} s",
          file=sys.stderr, flush=True)

    results = []
    for name, page, query, prepare in scenarios(code, run_a, run_b, pair):
        at.switch_page(page)
        at.query_params.clear()
        for k, v in query.items():
            at.query_params[k] = v
        at.run()  # bring the page's widgets into being (and its defaults into session state)
        if prepare is not None:
            prepare(at)
        clear_caches(store)
        log.clear()
        t0 = time.perf_counter()
        at.run()
        cold = time.perf_counter() - t0
        queries = list(log)
        if at.exception:
            raise SystemExit(f"{name}: {at.exception[0].value}")
        warm = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t0)
        slow = max(queries, key=lambda x: x[1]) if queries else ("-", 0.0)
        results.append({"page": name, "cold": cold, "warm": statistics.median(warm),
                        "queries_s": sum(s for _, s in queries), "queries": len(queries),
                        "slowest": f"{slow[0]} {slow[1]:.3f}"})
        print(f"  {name}: cold {cold:.3f} s, warm {statistics.median(warm):.3f} s", file=sys.stderr, flush=True)

    if not args.no_explain:
        at.switch_page("pages/6_Explain.py")
        at.run()
        for label in ("Explain: bilrp, model load + compute", "Explain: bilrp again (cached)"):
            at.button(key="xp_go").click()
            t0 = time.perf_counter()
            at.run()
            dt = time.perf_counter() - t0
            if at.exception:
                raise SystemExit(f"{label}: {at.exception[0].value}")
            results.append({"page": label, "cold": dt, "warm": None, "queries_s": 0.0, "queries": 0, "slowest": "-"})
    return {"imports": imports, "first_page": first_page, "runs": len(runs), "pages": results}


def run_worker(layout: str, code: Path, path: Path, args: argparse.Namespace) -> dict:
    cmd = ["--worker", str(code), "--store", str(path), "--pairs", str(args.pairs), "--runs", str(args.runs),
           "--tokens", str(args.tokens), "--repeat", str(args.repeat)]
    if args.no_explain or layout == "legacy":  # the old Explain page needs the old data layout next to it
        cmd.append("--no-explain")
    print(f"{layout}: {path}", flush=True)
    rows = bench_store.run_json(Path(__file__).resolve(), [*cmd, "--prepare"], code)["rows"]
    return {**bench_store.run_json(Path(__file__).resolve(), cmd, code), "rows": rows}


def report(results: dict[str, dict]) -> None:
    names = {"ducklake": "DuckLake (today)", "legacy": f"Parquet directories ({bench_store.LEGACY_COMMIT})"}
    layouts = list(results)

    def cells(page: dict | None) -> str:
        if page is None:
            return "– | –"
        return f"{page['cold']:.3f} | " + ("–" if page["warm"] is None else f"{page['warm']:.3f}")

    rows = [(p["page"], [f"{p['queries_s']:.3f}", str(p["queries"]), p["slowest"]]) for p in results[layouts[0]]["pages"]]
    bench_store.layout_table([f"{names[k]} cold s | warm s" for k in layouts],
                             {k: {p["page"]: p for p in results[k]["pages"]} for k in layouts}, rows, cells,
                             "page / interaction", ["store queries s (today)", "queries", "slowest query s (today)"],
                             "--:|--:|:--|")
    for k in layouts:
        pages = [p for p in results[k]["pages"] if not p["page"].startswith("Explain:")]
        worst = max(pages, key=lambda p: p["cold"])
        print(f"\n{names[k]}: slowest cold page {worst['page']} {worst['cold']:.2f} s (target <= 1 s); first page of "
              f"a fresh process (Overview, store opened) {results[k]['first_page']:.2f} s; "
              f"{results[k]['rows']:,} token_pairs rows, {results[k]['runs']} runs; imports {results[k]['imports']:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="folder of the stores, one per layout (kept)")
    ap.add_argument("--pairs", type=int, default=1379)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layouts", default=",".join(bench_store.LAYOUTS))
    ap.add_argument("--legacy-commit", default=bench_store.LEGACY_COMMIT)
    ap.add_argument("--no-explain", action="store_true", help="skip the live explanation with all-MiniLM-L6-v2")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker is not None:  # a subprocess measuring the app at --worker on the store at --store
        sys.path.insert(0, str(args.worker))
        if args.prepare:  # its own process, so that the measured one starts with nothing of the store loaded
            ensure_store(args.store, args)
            args.out.write_text(json.dumps({"rows": token_pair_rows(args.store)}))
            return 0
        args.out.write_text(json.dumps(measure(args.worker, args.store, args)))
        return 0

    results = {}
    with bench_store.scratch_dir(args.store, "simlens-bench-pages-") as folder, \
            tempfile.TemporaryDirectory(prefix="simlens-legacy-tree-") as tmp:
        code = {"ducklake": ROOT, "legacy": bench_store.legacy_tree(args.legacy_commit, Path(tmp) / "tree")}
        for layout in args.layouts.split(","):
            results[layout] = run_worker(layout, code[layout], folder / layout, args)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
