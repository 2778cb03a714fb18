"""The ``index`` and ``search`` verbs of ``python -m precompute`` (retrieval audit)."""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING

from core.datasets import DATA_DIR_ENV
from core.quadrature import QUADRATURES
from precompute import options as opt

if TYPE_CHECKING:
    from core.store.index_search import IndexStore

#: verb -> (help, description); the options are added by ``add_options`` (which imports the model registry, so
#: that ``python -m precompute --help`` lists these verbs without importing torch)
VERBS = {
    "index": ("embed every distinct text of a corpus with its factor, for search",
              "Embed every distinct sentence of pair datasets (--dataset) or every text of a corpus file "
              "(--corpus: one per line, or a --column of a CSV/TSV/Parquet/JSONL table) with its float16 "
              "factor into the store; long passages are cut into overlapping windows. Resumable: run the "
              "same command again after an interruption."),
    "search": ("top-k passages of an index for a query, with their strongest token pairs",
               "Search a stored index with the model's own similarity (exact scan, or HNSW for large "
               "indexes) and explain each hit from the query's live factor and the passage's stored one."),
}


def add_options(verb: str, parser: argparse.ArgumentParser, default_store: str) -> None:
    """The options of ``verb`` (``index`` or ``search``)."""
    (_add_index_options if verb == "index" else _add_search_options)(parser, default_store)


def _add_index_options(index: argparse.ArgumentParser, default_store: str) -> None:
    from core.models import DEFAULT_MODEL
    from precompute.index import DEFAULT_CHUNK_SIZE, INDEX_METHODS

    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="pair dataset(s), comma-separated: stsb:train,stsb:dev,stsb:test, a pair "
                                          "file, hf:<owner>/<name>[:<split>]")
    source.add_argument("--corpus", help="a corpus file: .txt (one passage per line) or a table with --column")
    index.add_argument("--column", default=None, help="the corpus table's text column (default: text, or the only one)")
    index.add_argument("--model", default=DEFAULT_MODEL, help=f"model folder, packaged name or hub id (default {DEFAULT_MODEL})")
    index.add_argument("--method", default="bilrp", choices=INDEX_METHODS)
    index.add_argument("--layer", type=int, default=None, help="hidden layer the factors attribute to (default 0)")
    index.add_argument("--steps", type=opt.steps_value, default=None,
                       help="integration steps for ij: a count, or auto (the default: to --tol within --max-steps)")
    index.add_argument("--tol", type=opt.positive_float, default=None,
                       help="--steps auto: completeness tolerance of each text's factor (default 1e-3)")
    index.add_argument("--max-steps", type=opt.positive_int, default=None,
                       help="--steps auto: the cap on one text's steps (default 512)")
    index.add_argument("--quadrature", default=None, choices=QUADRATURES)
    index.add_argument("--prompt", default=None, help="name of the model's prompt for passages (default: the model's default)")
    index.add_argument("--query-prompt", default=None, help="name of the model's prompt for queries (default: its "
                                                            "'query' prompt, else the passages' prompt)")
    index.add_argument("--window-tokens", type=int, default=None,
                       help="content tokens per window (default: as many as the model takes)")
    index.add_argument("--window-overlap", type=int, default=None, help="tokens shared by consecutive windows (default 32)")
    index.add_argument("--hnsw", default="auto", choices=["auto", "yes", "no"],
                       help="build an HNSW index (auto: for at least 100,000 windows)")
    index.add_argument("--store", default=default_store, help=f"store directory (default ./{default_store})")
    index.add_argument("--data-dir", default=None, help=f"folder laid out like shared/data (default: ${DATA_DIR_ENV})")
    index.add_argument("--batch-size", type=int, default=16, help="texts per forward batch (default 16)")
    index.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                       help=f"passages per atomically written chunk (default {DEFAULT_CHUNK_SIZE})")
    index.add_argument("--limit", type=int, default=None, help="only the first N distinct texts")
    index.add_argument("--device", default=None, choices=["cpu", "cuda"])
    index.add_argument("--force", action="store_true", help="rebuild an index that is already done")


def _add_search_options(search: argparse.ArgumentParser, default_store: str) -> None:
    from core.store.index import SEARCH_MODES

    search.add_argument("--query", required=True, help="the query text")
    search.add_argument("--k", type=int, default=10, help="hits to return (default 10)")
    search.add_argument("--index", default=None, help="index id (default: the store's only index; see --list)")
    search.add_argument("--list", action="store_true", help="list the store's indexes and exit")
    search.add_argument("--model", default=None, help="query model (default: the index's model; another is an error)")
    search.add_argument("--mode", default="auto", choices=SEARCH_MODES, help="exact scan, HNSW, or auto (default)")
    search.add_argument("--query-prompt", default=None, help="text prepended to the query (default: the index's)")
    search.add_argument("--pairs", type=int, default=3, help="strongest token pairs printed per hit (default 3)")
    search.add_argument("--store", default=default_store, help=f"store directory (default ./{default_store})")
    search.add_argument("--device", default=None, choices=["cpu", "cuda"])


def _index(args: argparse.Namespace) -> int:
    from precompute.index import build_index, dataset_corpus, file_corpus

    if args.dataset is not None:
        specs = [s.strip() for s in args.dataset.split(",") if s.strip()]
        corpus = dataset_corpus(specs, data_dir=args.data_dir)
    else:
        corpus = file_corpus(args.corpus, args.column)
    hnsw = {"auto": None, "yes": True, "no": False}[args.hnsw]
    result = build_index(args.model, corpus, args.store, method=args.method, layer=args.layer, steps=args.steps, tol=args.tol, max_steps=args.max_steps,
                         quadrature=args.quadrature, prompt=args.prompt, query_prompt=args.query_prompt,
                         window_tokens=args.window_tokens, window_overlap=args.window_overlap,
                         chunk_size=args.chunk_size, batch_size=args.batch_size, limit=args.limit, force=args.force,
                         hnsw=hnsw, device=args.device)
    if result.status == "skipped":
        print(f"index {result.index_id} is already done in {args.store} (use --force to rebuild)")
    else:
        print(f"index {result.index_id}: {result.passages} texts ({result.passages_written} written now), "
              f"{result.windows} windows, {result.seconds:.1f}s, in {args.store}")
    return 0


def list_indexes(reader: IndexStore) -> str:
    found = reader.indexes()
    if found.empty:
        return f"{reader.root}: no search indexes (python -m precompute index --dataset stsb:test --store {reader.root})"
    cols = ["index_id", "corpus_key", "model_name", "method", "layer", "n_passages", "n_windows", "status",
            "chunks_present", "n_chunks"]
    return found[cols].to_string(index=False)


def _choose_index(reader: IndexStore, wanted: str | None) -> str:
    if wanted is not None:
        return reader.index_info(wanted)["index_id"]
    found = reader.indexes()
    if len(found) == 1:
        return found["index_id"].iloc[0]
    from core.search import SearchError

    raise SearchError(("the store holds several indexes: choose one with --index\n" if len(found) else "")
                      + list_indexes(reader))


def _search(args: argparse.Namespace) -> int:
    from core.store.index_search import IndexStore

    with IndexStore(args.store) as reader:
        return _search_in(reader, args)


def _search_in(reader: IndexStore, args: argparse.Namespace) -> int:
    from core.model_folders import load_model
    from core.search import SearchError, check_query, index_model_source, search_index, top_pairs

    if not args.list:
        check_query(args.query)
        if args.k < 1:
            raise SearchError(f"k must be a positive integer, got {args.k}")
    if args.list:
        print(list_indexes(reader))
        return 0
    index_id = _choose_index(reader, args.index)
    record = reader.index_info(index_id)
    model = load_model(args.model or index_model_source(record), device=args.device)
    result = search_index(model, reader, index_id, args.query, k=args.k, mode=args.mode, query_prompt=args.query_prompt)
    s = result.seconds
    print(f"index {index_id} ({record['corpus_key']}, {record['model_name']}, {record['method']} layer "
          f"{record['layer']}): {record['n_passages']:,} passages, {record['n_windows']:,} windows; {result.mode} "
          f"search; query encoded in {s['encode']:.3f}s, searched in {s['search']:.3f}s, explained in "
          f"{s['explain']:.3f}s")
    if result.query_prompt:
        print(f"query prompt: {result.query_prompt!r}")
    for hit in result.hits:
        where = f"{hit.dataset_key} pair {hit.pair_id}{hit.side}" if hit.dataset_key else f"passage {hit.passage_id}"
        window = "" if hit.window_start == 0 and hit.window_end == len(hit.passage) else \
            f" [window {hit.window_index}: chars {hit.window_start}-{hit.window_end}]"
        print(f"{hit.rank:>3}  {hit.score:.4f}  {hit.passage[:100]!r}  ({where}){window}")
        exp = hit.explanation
        pairs = ", ".join(f"{a} ↔ {b} {r:+.4f}" for a, b, r in top_pairs(exp, args.pairs))
        print(f"       explained {exp.score:.4f}, residual {exp.residual:+.4f}; top pairs: {pairs}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the ``index`` or ``search`` verb (``precompute.cli.main`` turns bad input into a one-line error)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        return _index(args) if args.verb == "index" else _search(args)
