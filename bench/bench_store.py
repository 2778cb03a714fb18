"""The DuckLake store against the old Parquet-directory store (the last writer of that layout, commit 172c48d's
``core/store.py``), in one run:

1. write throughput and size on real records: the tables precompute writes for STS-b test (all 1,379 pairs,
   all-MiniLM-L6-v2, ``bilrp``, default settings) are recorded once from a real run (cached in ``--records``),
   then the same records are written into a fresh store of each layout, timing the store writes alone;
2. a synthetic store of each layout with >= 10 million token-pair rows (1,379 pairs x ~25x25 tokens x 12 runs,
   the same rows for both): its write rate and every dashboard query, first call on a fresh ``Store`` and the
   median of ``--repeat`` calls.

    .venv/bin/python bench/bench_store.py [--records DIR] [--keep DIR] [--pairs 1379] [--runs 12] [--tokens 25]
                                          [--repeat 3] [--legacy-commit 172c48d] [--skip-real] [--skip-synthetic]
                                          [--merge-runs]

Each layout runs in a subprocess of its own (``--worker``); the old one imports the old ``core`` from a copy of
that commit's tree (``git archive``), so nothing of it enters this tree. ``--keep DIR`` keeps the synthetic
stores as DIR/ducklake and DIR/legacy (``bench/bench_pages.py --store`` reuses them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LEGACY_COMMIT = "172c48d"
LAYOUTS = ("ducklake", "legacy")
POS = ["NOUN", "VERB", "ADJ", "ADV", "DET", "ADP", "PRON", "PROPN", "AUX", "CCONJ", "NUM", "PUNCT", None]
VOCAB = [f"w{k}" for k in range(3000)]
DATASET = "stsb:test"


@contextlib.contextmanager
def scratch_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` (created, left in place), or a temporary folder deleted on the way out."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def legacy_tree(commit: str, dest: Path) -> Path:
    """The whole tree of ``commit`` (the old store, pages and benchmarks) extracted into ``dest``; returns it."""
    if not (dest / "core" / "store.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- synthetic corpus audit ---------------------------------------------------------------------------------

def synth_tokens(rng: np.random.Generator, pair_ids: np.ndarray, mean_len: int) -> pd.DataFrame:
    """[CLS] words... [SEP] per side; ~20% of words split into two pieces."""
    frames = []
    for p in pair_ids:
        for side in ("a", "b"):
            n = int(rng.integers(max(3, mean_len - 7), mean_len + 8))
            n_words = max(1, int(round((n - 2) / 1.2)))
            word_of = np.sort(rng.integers(0, n_words, size=n - 2))
            word_of = np.unique(word_of, return_inverse=True)[1]  # dense word ids in order
            words = rng.integers(0, len(VOCAB), size=word_of.max() + 1)
            pos = rng.integers(0, len(POS), size=word_of.max() + 1)
            first = np.r_[True, word_of[1:] != word_of[:-1]]
            tok = [VOCAB[words[w]] if f else "##" + VOCAB[words[w]][1:] for w, f in zip(word_of, first, strict=True)]
            frames.append(pd.DataFrame({
                "pair_id": p, "side": side, "token_index": np.arange(n),
                "token": ["[CLS]", *tok, "[SEP]"],
                "start": np.r_[-1, np.arange(n - 2) * 4, -1], "end": np.r_[-1, np.arange(n - 2) * 4 + 3, -1],
                "is_special": np.r_[True, np.zeros(n - 2, bool), True],
                "word_index": pd.array([None, *word_of.tolist(), None], dtype="Int16"),
                "word": [None, *[VOCAB[words[w]] for w in word_of], None],
                "pos": ["[CLS]", *[POS[pos[w]] for w in word_of], "[SEP]"],
            }))
    return pd.concat(frames, ignore_index=True)


def synth_chunk(rng: np.random.Generator, tokens: pd.DataFrame, pair_ids: np.ndarray, factor_dim: int = 0
                ) -> dict[str, pd.DataFrame]:
    lens = tokens.groupby(["pair_id", "side"]).size()
    tps, preds, facs = [], [], []
    for p in pair_ids:
        la, lb = int(lens[(p, "a")]), int(lens[(p, "b")])
        rel = (rng.standard_normal(la * lb) * 0.01).astype(np.float32)
        tps.append(pd.DataFrame({"pair_id": p, "i": np.repeat(np.arange(la), lb), "j": np.tile(np.arange(lb), la),
                                 "relevance": rel}))
        s = float(rel.astype(np.float64).sum())
        preds.append({"pair_id": p, "model_score": float(np.clip(0.5 + s, -1, 1)), "explained_score": s + 1e-3})
        if factor_dim:
            for side, n in (("a", la), ("b", lb)):
                f = rng.standard_normal((n, factor_dim)).astype("<f2")
                facs.append(pd.DataFrame({"pair_id": p, "side": side, "token_index": np.arange(n),
                                          "factor": [row.tobytes() for row in f], "dim": factor_dim,
                                          "embedding_norm": 1.0}))
    out = {"predictions": pd.DataFrame(preds), "tokens": tokens, "token_pairs": pd.concat(tps, ignore_index=True)}
    if facs:
        out["factors"] = pd.concat(facs, ignore_index=True)
    return out


def build(path: Path, n_pairs: int, n_runs: int, mean_len: int, chunk_size: int, factor_dim: int) -> dict:
    """A synthetic store at ``path`` written through the ``core.store`` on ``sys.path`` (either layout: their
    writers share the API); the same seed gives the same rows."""
    from core.store import StoreWriter, make_run_id

    rng = np.random.default_rng(0)
    w = StoreWriter(path)
    pair_ids = np.arange(n_pairs)
    gold = np.round(rng.uniform(0, 5, n_pairs), 2)
    w.put_dataset({"dataset_key": DATASET, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "source": "synthetic", "gold_min": 0.0, "gold_max": 5.0},
                  pd.DataFrame({"pair_id": pair_ids, "sentence1": [f"s1 {p}" for p in pair_ids],
                                "sentence2": [f"s2 {p}" for p in pair_ids], "gold": gold}))
    methods = ["bilrp", "ij", "hxp", "embedding"]
    n_models = -(-n_runs // len(methods))
    for m in range(n_models):
        w.put_model({"model_id": f"model{m}", "name": f"synthetic-model-{m}", "pooling": "mean",
                     "similarity": "cosine", "dim": 384, "num_layers": 6})
    tokens_by_model = {}
    t0 = time.perf_counter()
    rows, merge_seconds, summary_seconds = 0, 0.0, 0.0
    run_ids = []
    for r in range(n_runs):
        m, method = r // len(methods), methods[r % len(methods)]
        if m not in tokens_by_model:
            tokens_by_model[m] = synth_tokens(rng, pair_ids, mean_len)
        toks = tokens_by_model[m]
        w.start_run({"model_id": f"model{m}", "dataset_key": DATASET, "method": method, "layer": 0,
                     "chunk_size": chunk_size, "device": "cpu", "code_version": "bench"})
        rid = make_run_id(f"model{m}", DATASET, method, 0)
        run_ids.append(rid)
        for k in w.pending_chunks(rid):
            ids = np.asarray(w.chunk_pair_ids(rid, k))
            tables = synth_chunk(rng, toks[toks.pair_id.isin(ids)], ids, factor_dim if r == 0 else 0)
            rows += len(tables["token_pairs"])
            w.write_chunk(rid, k, tables)
        w.finish_run(rid, {"spearman": float(rng.uniform(70, 90)), "pearson": float(rng.uniform(70, 90)),
                           "mse": float(rng.uniform(0.02, 0.1))})
        summary_seconds += summarize(path, [rid], w)
        merge_seconds += merge_small_files(w)
        print(f"  run {r + 1}/{n_runs} written ({rows:,} token pairs so far, {time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    if hasattr(w, "close"):  # the old writer holds nothing open
        w.close()
    return {"seconds": time.perf_counter() - t0, "merge_seconds": merge_seconds, "summary_seconds": summary_seconds,
            "token_pairs": rows, "run_ids": run_ids}


def summarize(path: Path, run_ids: list[str] | None, writer: object) -> float:
    """What precompute does when a run completes: store its summaries (``core.store.summaries``; the old
    layout has none); returns the seconds it took."""
    try:
        from core.store import summarize_runs
    except ImportError:
        return 0.0
    start = time.perf_counter()
    summarize_runs(path, run_ids, writer=writer)
    return time.perf_counter() - start


MERGE_RUNS: list[bool] = [False]  # --merge-runs


def merge_small_files(writer: object) -> float:
    """With ``--merge-runs``: merge the store's small files after a run (DuckLake's ``merge_adjacent_files``, what
    ``compact`` does); seconds."""
    merge = getattr(writer, "merge_small_files", None)  # the old layout has one file per chunk and table
    if merge is None or not MERGE_RUNS[0]:
        return 0.0
    t0 = time.perf_counter()
    merge()
    return time.perf_counter() - t0


# --- real records ---------------------------------------------------------------------------------------------

def record_real_run(path: Path, limit: int | None) -> dict:
    """Run precompute (STS-b test, all-MiniLM-L6-v2, bilrp) into a scratch store, recording every call it makes
    to the store writer; the records are pickled to ``path`` and returned."""
    from precompute import runner

    calls: list[tuple[str, tuple, dict]] = []
    original = runner.StoreWriter

    def recorded(name: str):
        def method(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return getattr(original, name)(self, *args, **kwargs)
        return method

    names = ("put_dataset", "put_model", "start_run", "write_chunk", "finish_run")
    RecordingWriter = type("RecordingWriter", (original,), {name: recorded(name) for name in names})  # noqa: N806
    runner.StoreWriter = RecordingWriter
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = runner.run("all-MiniLM-L6-v2", DATASET, Path(tmp) / "store", method="bilrp", limit=limit,
                                device="cpu", progress=True)
            seconds = time.perf_counter() - start
    finally:
        runner.StoreWriter = original
    records = {"calls": calls, "run_seconds": seconds, "pairs": result.pairs_written, "run_id": result.run_id}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(records, f)
    return records


def _legacy_columns(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` reduced to the columns the old layout knows (newer records carry prompt flags and more)."""
    from core.store_schema import SCHEMA  # the old schema module, only on the legacy worker's path

    inputs = {"token_pairs": {"pair_id", "i", "j", "relevance"}}.get(name, set(SCHEMA.get(name, {})))
    return frame[[c for c in frame.columns if c in inputs]]


def replay(records: dict, path: Path, layout: str) -> dict:
    """Write ``records`` into a fresh store at ``path``; seconds of the store calls alone."""
    from core.store import StoreWriter

    def adapt(name: str, args: tuple) -> tuple:
        if layout != "legacy":
            return args
        from core.store_schema import SCHEMA

        if name == "write_chunk":
            run_id, k, tables = args[:3]
            return (run_id, k, {t: _legacy_columns(t, df) for t, df in tables.items() if df is not None})
        if name in ("put_dataset", "put_model", "start_run"):
            table = {"put_dataset": "datasets", "put_model": "models", "start_run": "runs"}[name]
            meta = {k: v for k, v in args[0].items() if k in SCHEMA[table]}
            return (meta, *args[1:])
        return args

    start = time.perf_counter()
    writer = StoreWriter(path)
    for name, args, kwargs in records["calls"]:
        if layout == "legacy":  # the old writer knows no compute_seconds (chunks.seconds came later)
            kwargs = {k: v for k, v in kwargs.items() if k != "compute_seconds"}
        getattr(writer, name)(*adapt(name, args), **kwargs)
    summary_seconds = summarize(path, None, writer)
    merge_seconds = merge_small_files(writer)
    if hasattr(writer, "close"):
        writer.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "merge_seconds": merge_seconds, "summary_seconds": summary_seconds,
            "pairs": records["pairs"], "bytes": dir_bytes(path)}


# --- queries --------------------------------------------------------------------------------------------------

def queries(s, run_a: str, run_b: str, pid: int) -> list[tuple[str, object]]:
    return [
        ("runs()", lambda: s.runs()),
        ("summary()", lambda: s.summary()),
        ("metrics_table()", lambda: s.metrics_table()),
        ("pos_heatmap() all runs", lambda: s.pos_heatmap()),
        ("pos_heatmap(all, word, mean)", lambda: s.pos_heatmap(level="word", agg="mean")),
        ("pos_heatmap(one run)", lambda: s.pos_heatmap(run_a)),
        ("pos_heatmap(one run, gold+error band, no special)",
         lambda: s.pos_heatmap(run_a, gold_band=(0.6, 1.0), error_band=(-1.0, 0.0), include_special=False)),
        ("pos_heatmap(all, dataset, gold band)", lambda: s.pos_heatmap(dataset_key=DATASET, gold_band=(0, .4))),
        ("pos_cell_examples(run, NOUN, VERB)", lambda: s.pos_cell_examples(run_a, "NOUN", "VERB", limit=20)),
        ("predictions(run)", lambda: s.predictions(run_a)),
        ("pair_info", lambda: s.pair_info(DATASET, pid)),
        ("pair_runs", lambda: s.pair_runs(DATASET, pid)),
        ("pair_matrix(token)", lambda: s.pair_matrix(run_a, pid)),
        ("pair_matrix(word)", lambda: s.pair_matrix(run_a, pid, level="word")),
        ("load_factors", lambda: s.load_factors(run_a, pid, "a")),
        ("failures(over, 10)", lambda: s.failures(run_a, "over", limit=10)),
        ("quartile_top_pairs(high, token)", lambda: s.quartile_top_pairs(run_a, "high", k=5)),
        ("quartile_top_pairs(low, word)", lambda: s.quartile_top_pairs(run_a, "low", k=5, level="word")),
        ("compare_pos(a, b)", lambda: s.compare_pos(run_a, run_b)),
        ("compare_token_pairs(a, b, token)", lambda: s.compare_token_pairs(run_a, run_b, limit=20)),
        ("compare_token_pairs(a, b, word)", lambda: s.compare_token_pairs(run_a, run_b, limit=20, level="word")),
        ("compare_metrics(a, b)", lambda: s.compare_metrics(run_a, run_b)),
    ]


def time_queries(path: Path, run_ids: list[str], n_pairs: int, repeat: int) -> list[dict]:
    from core.store import Store

    s = Store(path)
    out = []
    for name, fn in queries(s, run_ids[0], run_ids[1], n_pairs // 2):
        t0 = time.perf_counter()
        rows = len(fn())
        first = time.perf_counter() - t0
        again = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            again.append(time.perf_counter() - t0)
        out.append({"query": name, "first": first, "median": statistics.median(again), "rows": rows})
        print(f"  {name}: {first:.3f} s", file=sys.stderr, flush=True)
    s.close()
    return out


# --- one layout -----------------------------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> dict:
    """Everything measured on one layout (the ``core`` first on ``sys.path`` decides which)."""
    result: dict = {"layout": args.worker}
    with scratch_dir(None, "simlens-bench-replay-") as tmp:
        if args.records is not None:
            with open(args.records / "records.pkl", "rb") as f:
                records = pickle.load(f)
            result["real"] = replay(records, tmp / "store", args.worker)
            print(f"  {args.worker}: real records written in {result['real']['seconds']:.1f} s", file=sys.stderr)
    if not args.skip_synthetic:
        with scratch_dir(args.keep, "simlens-bench-store-") as folder:
            path = folder / args.worker
            shutil.rmtree(path, ignore_errors=True)
            info = build(path, args.pairs, args.runs, args.tokens, 100, args.factor_dim)
            result["synthetic"] = {"seconds": info["seconds"], "merge_seconds": info["merge_seconds"],
                                   "summary_seconds": info["summary_seconds"],
                                   "token_pairs": info["token_pairs"],
                                   "bytes": dir_bytes(path), "pairs": args.pairs, "runs": args.runs}
            result["queries"] = time_queries(path, info["run_ids"], args.pairs, args.repeat)
    return result


def run_json(script: Path, args: list[str], code: Path) -> dict:
    """Run ``script`` with ``args`` and ``--out FILE`` in a subprocess at ``code``; the JSON it wrote there."""
    out = Path(tempfile.mkstemp(prefix=f"{script.stem}-", suffix=".json")[1])
    try:
        subprocess.run([sys.executable, str(script), *args, "--out", str(out)], check=True, cwd=code)
        return json.loads(out.read_text())
    finally:
        out.unlink()


def run_worker(layout: str, args: argparse.Namespace, code: Path) -> dict:
    cmd = ["--worker", layout, "--code", str(code), "--pairs", str(args.pairs), "--runs", str(args.runs),
           "--tokens", str(args.tokens), "--repeat", str(args.repeat), "--factor-dim", str(args.factor_dim)]
    cmd += ["--skip-real"] if args.skip_real else ["--records", str(args.records)]
    if args.skip_synthetic:
        cmd.append("--skip-synthetic")
    if args.merge_runs:
        cmd.append("--merge-runs")
    if args.keep is not None:
        cmd += ["--keep", str(args.keep)]
    print(f"{layout}: {' '.join(cmd)}", flush=True)
    return run_json(Path(__file__).resolve(), cmd, code)


def markdown_rows(header: list[str], align: str, rows: list[list[str]]) -> None:
    """A Markdown table: ``header`` cells, the alignment row, then ``rows``."""
    print("| " + " | ".join(header) + " |")
    print(align)
    for row in rows:
        print("| " + " | ".join(row) + " |")


def layout_table(columns: list[str], by_layout: dict[str, dict[str, dict]], rows: list[tuple[str, list[str]]],
                 cells: Callable[[dict | None], str], first: str, extra: list[str], extra_align: str) -> None:
    """One row per name in ``rows`` (name, trailing cells), one ``cells(entry)`` group per layout of
    ``by_layout`` (layout -> name -> entry; None where a layout lacks the name)."""
    print("\n| " + first + " | " + " | ".join(columns) + " | " + " | ".join(extra) + " |")
    print("|:--|" + "--:|--:|" * len(by_layout) + extra_align)
    for name, tail in rows:
        print(f"| {name} | " + " | ".join(cells(by_layout[k].get(name)) for k in by_layout) + " | "
              + " | ".join(tail) + " |")


def report(results: dict[str, dict], records: dict | None) -> None:
    names = {"ducklake": "DuckLake (today)", "legacy": f"Parquet directories ({LEGACY_COMMIT})"}
    if records is not None:
        print(f"\nReal records: STS-b test, {records['pairs']} pairs, all-MiniLM-L6-v2, bilrp "
              f"(the recording run took {records['run_seconds']:.0f} s end to end, attribution included)\n")
        real = {k: r["real"] for k, r in results.items()}
        markdown_rows(["store", "write s", "of which merging files s", "of which run summaries s", "pairs/s", "MB",
                       "MB per 1,000 pairs"], "|:--|--:|--:|--:|--:|--:|--:|",
                      [[names[k], f"{r['seconds']:.2f}", f"{r['merge_seconds']:.2f}", f"{r['summary_seconds']:.2f}",
                        f"{r['pairs'] / r['seconds']:.0f}",
                        f"{r['bytes'] / 1e6:.2f}", f"{r['bytes'] / 1e6 / (r['pairs'] / 1000):.2f}"]
                       for k, r in real.items()])
    if all("synthetic" in r for r in results.values()):
        any_r = next(iter(results.values()))["synthetic"]
        print(f"\nSynthetic store: {any_r['pairs']} pairs x {any_r['runs']} runs, {any_r['token_pairs']:,} token-pair "
              f"rows\n")
        syn = {k: r["synthetic"] for k, r in results.items()}
        markdown_rows(["store", "write s", "of which merging files s", "of which run summaries s", "token pairs/s",
                       "(pair, run) records/s", "MB", "MB per 1,000 (pair, run) records"],
                      "|:--|--:|--:|--:|--:|--:|--:|--:|",
                      [[names[k], f"{r['seconds']:.0f}", f"{r['merge_seconds']:.0f}", f"{r['summary_seconds']:.0f}",
                        f"{r['token_pairs'] / r['seconds']:,.0f}",
                        f"{r['pairs'] * r['runs'] / r['seconds']:.0f}", f"{r['bytes'] / 1e6:.0f}",
                        f"{r['bytes'] / 1e6 / (r['pairs'] * r['runs'] / 1000):.1f}"] for k, r in syn.items()])
        layouts = list(results)
        layout_table([f"{names[k]} first s | median s" for k in layouts],
                     {k: {q["query"]: q for q in results[k]["queries"]} for k in layouts},
                     [(q["query"], [str(q["rows"])]) for q in results[layouts[0]]["queries"]],
                     lambda q: "– | –" if q is None else f"{q['first']:.3f} | {q['median']:.3f}", "query", ["rows"],
                     "--:|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1379)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=25, help="mean tokens per sentence (incl. [CLS]/[SEP])")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--factor-dim", type=int, default=384, help="factor dim for the first run (0: no factors)")
    ap.add_argument("--records", type=Path, default=ROOT / "bench" / "out" / "store-records",
                    help="where the recorded real run is cached")
    ap.add_argument("--limit", type=int, default=None, help="record only the first N pairs of STS-b test")
    ap.add_argument("--keep", type=Path, default=None, help="keep the synthetic stores in DIR/<layout>")
    ap.add_argument("--legacy-commit", default=LEGACY_COMMIT)
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--merge-runs", action="store_true",
                    help="merge the DuckLake store's small files after every run (timed apart)")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--worker", choices=LAYOUTS, help=argparse.SUPPRESS)
    ap.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    MERGE_RUNS[0] = args.merge_runs
    if args.worker is not None:  # a subprocess measuring one layout with the code at --code
        sys.path.insert(0, str(args.code))
        if args.skip_real:
            args.records = None
        args.out.write_text(json.dumps(worker(args)))
        return 0

    records = None
    if not args.skip_real:
        cached = args.records / "records.pkl"
        if cached.exists():
            with open(cached, "rb") as f:
                records = pickle.load(f)
            print(f"real records from {cached} ({records['pairs']} pairs)")
        else:
            sys.path.insert(0, str(ROOT))
            records = record_real_run(cached, args.limit)
    results = {}
    with tempfile.TemporaryDirectory(prefix="simlens-legacy-tree-") as tmp:
        code = {"ducklake": ROOT, "legacy": legacy_tree(args.legacy_commit, Path(tmp) / "tree")}
        for layout in args.layouts.split(","):
            results[layout] = run_worker(layout, args, code[layout])
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    report(results, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
