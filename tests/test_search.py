"""Search indexes and the retrieval audit: windows, folding, exact search against brute-force numpy, HNSW,
stored factors against the live path, contrast of two hits, resume after SIGKILL, CLI, bad input and the Search
page under AppTest. Built with tiny random models (fast); the browser test is tests/test_search_browser.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from core.safe_text import unliteral
from core.search import (
    SearchError,
    candidate_count,
    contrast_hits,
    exact_top_k,
    fold_to_passages,
    search_index,
    similarities,
    window_spans,
)
from core.store import StoreError
from core.store.index_search import IndexStore
from core.store.index_writer import IndexWriter
from precompute import cli
from precompute.index import INDEX_METHODS, build_index, dataset_corpus, file_corpus

DEMO = ROOT / "data" / "demo_pairs.tsv"


# --------------------------------------------------------------------------------------------------
# pure parts
# --------------------------------------------------------------------------------------------------


def _tokens(text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """Whitespace words split into pieces of at most 3 characters (a toy subword tokenizer)."""
    offsets, words = [], []
    pos = 0
    for w, word in enumerate(text.split(" ")):
        for s in range(0, len(word), 3):
            offsets.append((pos + s, pos + min(s + 3, len(word))))
            words.append(w)
        pos += len(word) + 1
    return offsets, words


def test_a_text_that_fits_is_one_window_of_all_of_it():
    text = "short text here"
    offsets, words = _tokens(text)
    assert [(s.start, s.end) for s in window_spans(text, offsets, words, 10, 2)] == [(0, len(text))]


@pytest.mark.parametrize("budget,overlap", [(4, 0), (5, 2), (7, 3), (12, 4)])
def test_windows_cover_every_token_within_budget_cut_between_words(budget, overlap):
    text = " ".join(["alpha", "be", "gamma", "delta", "epsilonic", "zeta", "etaaa", "th", "iota", "kappa"] * 3)
    offsets, words = _tokens(text)
    spans = window_spans(text, offsets, words, budget, overlap)
    assert len(spans) > 1
    covered = set()
    starts = {o[0] for o, w, prev in zip(offsets, words, [None, *words[:-1]], strict=True) if w != prev}
    for prev, span in zip([None, *spans[:-1]], spans, strict=True):
        inside = [t for t, (s, e) in enumerate(offsets) if s >= span.start and e <= span.end]
        assert len(inside) == span.n_tokens <= budget
        covered |= set(inside)
        assert span.start in starts  # windows start at a word
        if prev is not None:
            assert span.start > prev.start
            shared = [t for t, (s, e) in enumerate(offsets) if s >= span.start and e <= prev.end]
            assert len(shared) <= overlap
    assert covered == set(range(len(offsets)))


def test_a_word_longer_than_the_budget_is_cut_inside_the_word():
    text = "a " + "x" * 30 + " b"
    offsets, words = _tokens(text)
    spans = window_spans(text, offsets, words, 3, 1)
    assert all(s.n_tokens <= 3 for s in spans)
    assert spans[-1].end == len(text)


def test_bad_window_settings_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        window_spans("a b", [(0, 1), (2, 3)], [0, 1], 2, 2)
    with pytest.raises(ValueError, match="budget"):
        window_spans("a b", [(0, 1), (2, 3)], [0, 1], 0, 0)


def test_fold_keeps_each_passage_once_with_its_best_window():
    hits = fold_to_passages([3, 1, 3, 2, 1], [0, 0, 1, 0, 1], [0.5, 0.9, 0.95, 0.1, 0.2], 3)
    assert [(h.passage_id, h.window_index, h.score) for h in hits] == [(3, 1, 0.95), (1, 0, 0.9), (2, 0, 0.1)]
    ties = fold_to_passages([5, 4, 6], [0, 0, 0], [0.3, 0.3, 0.3], 2)
    assert [h.passage_id for h in ties] == [4, 5]


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_top_k_of_candidate_windows_is_the_exact_top_k_of_passages(similarity):
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(200), rng.integers(1, 5, 200))
    wins = np.concatenate([np.arange((pids == p).sum()) for p in range(200)])
    emb = rng.normal(size=(len(pids), 16))
    q = rng.normal(size=16)
    ref = exact_top_k(q, emb, pids, wins, similarity, 10)
    # the slow, obviously correct reference: best window per passage, then sort
    s = similarities(q, emb, similarity)
    best = pd.DataFrame({"p": pids, "s": s}).groupby("p")["s"].max().sort_values(ascending=False)
    assert [h.passage_id for h in ref] == best.index[:10].tolist()
    n = candidate_count(10, int(np.bincount(pids).max()))
    top = np.argsort(-s)[:n]
    assert [h.passage_id for h in fold_to_passages(pids[top], wins[top], s[top], 10)] == best.index[:10].tolist()


# --------------------------------------------------------------------------------------------------
# indexes of tiny models
# --------------------------------------------------------------------------------------------------


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def demo_corpus():
    return dataset_corpus([str(DEMO)])


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_models, demo_corpus):
    """One store with a bilrp index of the demo sentences (some cut into windows) and an hnsw-flagged copy."""
    store = tmp_path_factory.mktemp("search") / "store"
    model = tiny_models["bert"]
    windowed = _quiet(build_index, model, demo_corpus, store, window_tokens=8, window_overlap=3, chunk_size=16,
                      progress=False, hnsw=True)
    plain = _quiet(build_index, model, demo_corpus, store, chunk_size=16, progress=False)
    return {"store": store, "windowed": windowed.index_id, "plain": plain.index_id, "model": model}


def test_index_holds_every_distinct_sentence_once_with_windows(built, demo_corpus):
    reader = IndexStore(built["store"])
    pairs = pd.read_csv(DEMO, sep="\t")
    distinct = list(dict.fromkeys(t for a, b in zip(pairs.sentence1, pairs.sentence2, strict=True) for t in (a, b)))
    passages = reader.passages(built["plain"])
    assert passages["text"].tolist() == distinct
    first = passages.iloc[0]
    assert (first["dataset_key"], first["pair_id"], first["side"]) == (demo_corpus.key, 0, "a")
    info = reader.index_info(built["windowed"])
    assert info["status"] == "done" and info["chunks_present"] == info["n_chunks"] == 4
    emb = reader.all_embeddings(built["windowed"])
    assert emb["passage_id"].nunique() == len(distinct)
    assert info["max_windows"] > 1 and info["n_windows"] == len(emb) > len(distinct)
    assert reader.index_info(built["plain"])["max_windows"] >= 1


def test_stored_windows_are_what_the_model_gives_for_the_window_text(built, tiny_models):
    from core import compute_factors

    reader = IndexStore(built["store"])
    emb = reader.all_embeddings(built["windowed"])
    long_pid = int(emb.groupby("passage_id").size().idxmax())
    text = reader.passages(built["windowed"], [long_pid])["text"].iloc[0]
    keys = [(long_pid // 16, long_pid, w) for w in range(int((emb["passage_id"] == long_pid).sum()))]
    rows = reader.windows(built["windowed"], keys)
    live = compute_factors(tiny_models["bert"], [text[s:e] for s, e in zip(rows.char_start, rows.char_end, strict=True)])
    for row, f in zip(rows.to_dict("records"), live, strict=True):
        assert list(row["tokens"]) == f.tokens and row["n_tokens"] <= 8 + 2
        np.testing.assert_allclose(row["factor"], f.factor, atol=2e-3 * np.abs(f.factor).max(), rtol=2e-3)
        np.testing.assert_allclose(row["embedding"], f.embedding, rtol=1e-6, atol=1e-7)
    assert rows["char_start"].iloc[0] == 0 and rows["char_end"].iloc[-1] == len(text)


@pytest.mark.parametrize("which,mode", [("plain", "exact"), ("windowed", "exact"), ("windowed", "hnsw")])
def test_search_equals_brute_force_numpy(built, demo_corpus, which, mode):
    reader = IndexStore(built["store"])
    index_id = built[which]
    emb = reader.all_embeddings(index_id)
    matrix = np.stack(emb["embedding"].to_numpy())
    rng = np.random.default_rng(1)
    for query in ["A man is playing a guitar.", "Rain in the city", demo_corpus.passages["text"].iloc[7]]:
        result = search_index(built["model"], reader, index_id, query, k=7, mode=mode)
        assert result.mode == mode
        ref = exact_top_k(result.query_factors.embedding, matrix, emb["passage_id"], emb["window_index"], "cosine", 7)
        assert [(h.passage_id, h.window_index) for h in result.hits] == [(h.passage_id, h.window_index) for h in ref]
        np.testing.assert_allclose([h.score for h in result.hits], [h.score for h in ref], atol=1e-6)
        for hit in result.hits:  # the store's score is the model's own similarity
            assert hit.explanation.model_score == pytest.approx(hit.score, abs=1e-6)
    q = rng.normal(size=matrix.shape[1])
    got, _ = reader.search_windows(index_id, q, 5, mode=mode)
    np.testing.assert_allclose(got["score"], np.sort(similarities(q, matrix, "cosine"))[::-1][:5], atol=1e-6)


def test_hnsw_is_used_when_built_and_refused_when_not(built):
    reader = IndexStore(built["store"])
    q = np.ones(32)
    assert "HNSW_INDEX_SCAN" in reader.explain_plan(built["windowed"], q, 5, "hnsw")
    with pytest.raises(Exception, match="no HNSW index"):
        reader.search_windows(built["plain"], q, 5, mode="hnsw")
    assert reader.search_windows(built["plain"], q, 5, mode="auto")[1] == "exact"


@pytest.mark.parametrize("method", INDEX_METHODS)
def test_a_stored_sentence_as_query_gives_core_explain_of_that_pair(tmp_path, tiny_models, method):
    from core import explain

    model = tiny_models["bert"]
    texts = pd.read_csv(DEMO, sep="\t")["sentence1"].head(6).tolist()
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    steps = 4 if method == "ij" else None
    result = _quiet(build_index, model, file_corpus(corpus_file), tmp_path / "store", method=method, steps=steps,
                    chunk_size=4, progress=False)
    reader = IndexStore(tmp_path / "store")
    found = search_index(model, reader, result.index_id, texts[2], k=6)
    for hit in found.hits:
        live = _quiet(explain, model, texts[2], hit.passage, method=method, steps=steps)
        stored = hit.explanation
        assert stored.tokens_a == live.tokens_a and stored.tokens_b == live.tokens_b
        scale = np.abs(live.matrix).max()
        np.testing.assert_allclose(stored.matrix, live.matrix, atol=2e-3 * scale, rtol=0)  # float16 factors
        assert stored.score == pytest.approx(live.score, rel=1e-5, abs=1e-7)
        assert stored.model_score == pytest.approx(live.model_score, abs=1e-6)
    assert found.hits[0].passage == texts[2] and found.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_contrast_of_two_hits_sums_to_their_score_difference_up_to_residuals(built):
    reader = IndexStore(built["store"])
    result = search_index(built["model"], reader, built["plain"], "A woman slices an onion in the kitchen.", k=4)
    a, b = result.hits[0].explanation, result.hits[3].explanation
    con = contrast_hits(a, b)
    assert con.tokens == a.tokens_a and len(con.difference) == a.matrix.shape[0]
    assert con.total == pytest.approx(float(a.matrix.sum() - b.matrix.sum()), abs=1e-12)
    assert con.gap == pytest.approx(-(a.residual - b.residual), abs=1e-12)
    with pytest.raises(SearchError, match="different queries"):
        other = search_index(built["model"], reader, built["plain"], "Something else entirely", k=1).hits[0]
        contrast_hits(a, other.explanation)


def test_contrast_is_the_model_score_difference_when_biases_are_zero(tmp_path):
    """BiLRP conserves without biases: Σ contrast = model score A - model score B (float16 factors aside)."""
    from tiny_models import save_sentence_transformer

    from core import load_model

    folder = save_sentence_transformer(tmp_path / "zero", "bert", zero_bias=True)
    model = _quiet(load_model, folder, device="cpu")
    model.encoder.double()
    corpus = tmp_path / "c.txt"
    corpus.write_text("The cat sat on the mat.\nA dog runs in the park.\nThe stock market fell.\n", encoding="utf-8")
    result = _quiet(build_index, model, file_corpus(corpus), tmp_path / "store", chunk_size=8, progress=False)
    found = search_index(model, IndexStore(tmp_path / "store"), result.index_id, "A cat on a mat", k=3)
    a, b = found.hits[0], found.hits[2]
    con = contrast_hits(a.explanation, b.explanation)
    assert abs(a.explanation.residual) < 1e-3 * abs(a.explanation.score)
    assert con.total == pytest.approx(a.score - b.score, abs=1e-3 * max(abs(a.score), abs(b.score)))
    # the same with live factors (float64, no float16 storage): exact, and the same per-query-token split
    from core import explain

    live = contrast_hits(*(explain(model, "A cat on a mat", h.passage) for h in (a, b)))
    assert live.total == pytest.approx(a.score - b.score, abs=1e-6)
    np.testing.assert_allclose(con.difference, live.difference, atol=2e-3 * np.abs(live.relevance_a).max())
    assert con.tokens == live.tokens


def test_the_models_prompts_are_prepended_to_passages_and_queries(tmp_path, tiny_folders):
    import shutil

    from core import load_model

    folder = tmp_path / "prompted"
    shutil.copytree(tiny_folders["bert"], folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "passage": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    model = _quiet(load_model, folder, device="cpu")
    corpus = tmp_path / "c.txt"
    corpus.write_text("The cat sat on the mat.\nA dog runs in the park.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no prompt named 'doc'; its prompts: passage, query"):
        build_index(model, file_corpus(corpus), tmp_path / "store", prompt="doc", progress=False)
    result = _quiet(build_index, model, file_corpus(corpus), tmp_path / "store", progress=False)
    reader = IndexStore(tmp_path / "store")
    info = reader.index_info(result.index_id)
    assert (info["prompt_name"], info["prompt"], info["query_prompt"]) == ("passage", "passage: ", "query: ")
    found = search_index(model, reader, result.index_id, "a cat", k=2)
    assert found.query_prompt == "query: " and found.hits[0].passage in ("The cat sat on the mat.", "A dog runs in the park.")
    exp = found.hits[0].explanation
    assert exp.tokens_a[1:3] == ["query", ":"] and exp.tokens_b[1:3] == ["passage", ":"]
    from core import explain

    live = _quiet(explain, model, "query: a cat", "passage: " + found.hits[0].passage)
    np.testing.assert_allclose(exp.matrix, live.matrix, atol=2e-3 * np.abs(live.matrix).max())


def test_corpus_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\none\n", encoding="utf-8")
    c = file_corpus(tmp_path / "a.txt")
    assert c.passages["text"].tolist() == ["one", "two"] and c.passages["occurrences"].tolist() == [2, 1]
    assert c.passages["source_row"].tolist() == [0, 2]
    pd.DataFrame({"id": [1, 2], "body": ["x y", "z"]}).to_parquet(tmp_path / "b.parquet")
    assert file_corpus(tmp_path / "b.parquet", "body").passages["text"].tolist() == ["x y", "z"]
    (tmp_path / "c.jsonl").write_text('{"text": "p"}\n{"text": "q"}\n', encoding="utf-8")
    assert file_corpus(tmp_path / "c.jsonl").key == "file:c:text"
    with pytest.raises(ValueError, match=r"pass --column; columns: \['id', 'body'\]"):
        file_corpus(tmp_path / "b.parquet")
    pd.DataFrame({"text": ["ok", " "]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        file_corpus(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="does not exist"):
        file_corpus(tmp_path / "missing.txt")


# --------------------------------------------------------------------------------------------------
# CLI, bad input, resume after SIGKILL
# --------------------------------------------------------------------------------------------------


def test_cli_search_prints_hits_and_pairs(built, tiny_folders, capsys):
    rc = _quiet(cli.main, ["search", "--store", str(built["store"]), "--index", built["plain"], "--query",
                           "A man is playing a guitar.", "--k", "3", "--model", str(tiny_folders["bert"])])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "exact search" in out and out.count("top pairs:") == 3 and " ↔ " in out


@pytest.mark.parametrize("args,message", [
    (["--query", "   "], "the query is empty"),
    (["--query", "x", "--index", "nope"], "no search index 'nope'"),
    (["--query", "x", "--k", "0"], "k must be a positive integer"),
    (["--query", "x"], "several indexes"),
])
def test_cli_bad_input_is_one_clear_line(built, capsys, args, message):
    rc = _quiet(cli.main, ["search", "--store", str(built["store"]), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_a_model_other_than_the_index_model_is_refused(built, tiny_folders, tiny_models, capsys):
    rc = _quiet(cli.main, ["search", "--store", str(built["store"]), "--index", built["plain"], "--query", "x",
                           "--model", str(tiny_folders["roberta"])])
    err = capsys.readouterr().err
    assert rc == 2 and "is a different model" in err
    with pytest.raises(SearchError, match="different model"):
        search_index(tiny_models["roberta"], IndexStore(built["store"]), built["plain"], "x")


def _index_command(store: Path, corpus: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "precompute", "index", "--corpus", str(corpus), "--model", str(folder),
            "--store", str(store), "--chunk-size", "3", "--batch-size", "2"]


def _chunks_committed(store: Path) -> int:
    """Chunks the store's one index has committed so far (0 while there is no store or index yet)."""
    try:
        with IndexStore(store) as reader:
            found = reader.indexes()
    except StoreError:
        return 0
    return int(found["chunks_present"].sum())


@pytest.mark.slow
def test_resume_after_sigkill_of_a_real_process(tmp_path, tiny_folders):
    corpus = tmp_path / "corpus.txt"
    texts = pd.read_csv(DEMO, sep="\t")
    # every demo sentence (about 20 chunks of 3): the build is far from its end when it is killed after 2
    sentences = pd.concat([texts["sentence1"], texts["sentence2"]]).drop_duplicates()
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_index_command(store, corpus, tiny_folders["bert"]), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _chunks_committed(store) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader = IndexStore(store)
    (index_id,) = reader.indexes()["index_id"]
    info = reader.index_info(index_id)
    assert info["status"] == "interrupted" and 2 <= info["chunks_present"] < info["n_chunks"]
    from core import load_model

    model = _quiet(load_model, tiny_folders["bert"], device="cpu")
    with pytest.raises(SearchError, match="run the same precompute index command"):
        search_index(model, reader, index_id, "a query")
    done = subprocess.run(_index_command(store, corpus, tiny_folders["bert"]), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    info = reader.index_info(index_id)
    assert info["status"] == "done" and info["chunks_present"] == info["n_chunks"]
    emb = reader.all_embeddings(index_id)
    assert not emb.duplicated(["passage_id", "window_index"]).any()
    assert sorted(emb["passage_id"].unique()) == list(range(info["n_passages"]))
    # the resumed index equals a clean build
    clean = tmp_path / "clean"
    assert subprocess.run(_index_command(clean, corpus, tiny_folders["bert"]), cwd=ROOT, env=env,
                          capture_output=True, timeout=600).returncode == 0
    ref = IndexStore(clean).all_embeddings(index_id)
    np.testing.assert_allclose(np.stack(emb["embedding"]), np.stack(ref["embedding"]), atol=1e-6)
    again = subprocess.run(_index_command(store, corpus, tiny_folders["bert"]), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert "already done" in again.stdout


def test_index_verb_bad_input(tmp_path, capsys):
    rc = cli.main(["index", "--corpus", str(tmp_path / "none.txt"), "--store", str(tmp_path / "s")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "c.txt").write_text("a\n", encoding="utf-8")
    rc = _quiet(cli.main, ["index", "--corpus", str(tmp_path / "c.txt"), "--store", str(tmp_path / "s"),
                           "--window-tokens", "100000"])
    assert rc == 2 and "--window-tokens must be in" in capsys.readouterr().err


def test_writer_refuses_chunks_that_are_not_whole(built):
    with IndexWriter(built["store"]) as writer, pytest.raises(StoreError, match="not running"):
        writer.write_chunk(built["plain"], 0, pd.DataFrame({"passage_id": [0]}), pd.DataFrame({"passage_id": [0]}))


def _toy_chunk(lo: int, hi: int, scale: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Passages [lo, hi) of a toy index (D = 4) with one window each."""
    ids = np.arange(lo, hi)
    passages = pd.DataFrame({"passage_id": ids, "text": [f"text {i}" for i in ids], "occurrences": 1})
    windows = pd.DataFrame({"passage_id": ids, "window_index": 0, "n_tokens": 1, "tokens": [["t"]] * len(ids),
                            "embedding": [scale * np.array([1.0, i, 0.5, -i], np.float32) for i in ids],
                            "factor": [np.ones((1, 4)) * scale] * len(ids), "target": [np.ones(4)] * len(ids)})
    return passages, windows


TOY = {"index_id": "ixtoy", "corpus_key": "toy", "model_id": "toy", "model_name": "toy", "similarity": "dot", "dim": 4,
       "method": "bilrp", "layer": 0, "n_passages": 6, "chunk_size": 3, "n_chunks": 2}


def test_index_chunks_are_exactly_once_as_read(tmp_path):
    """A chunk committed by another writer inside this writer's transaction: this one finds it and writes
    nothing; a second committed write of a chunk (two writers whose checks raced) is invisible to readers."""
    from core.store import ChunkExistsError
    from core.store.catalog import transaction

    store = tmp_path / "store"
    a, b = IndexWriter(store), IndexWriter(store)
    a.put_model({"model_id": "toy", "name": "toy"})
    assert a.start_index(TOY) is None and b.start_index(TOY) == "running"
    a._before_commit = lambda k: (setattr(a, "_before_commit", None), b.write_chunk("ixtoy", 0, *_toy_chunk(0, 3, 2.0)))
    with pytest.raises(ChunkExistsError):  # A's retry finds B's commit
        a.write_chunk("ixtoy", 0, *_toy_chunk(0, 3))
    assert a.pending_chunks("ixtoy") == [1]
    with pytest.raises(StoreError, match=r"exactly passage ids \[3, 6\)"):
        a.write_chunk("ixtoy", 1, *_toy_chunk(3, 5))
    a.write_chunk("ixtoy", 1, *_toy_chunk(3, 6))
    with pytest.raises(StoreError, match="chunk_size=3 .now 2.*--chunk-size 3"):  # a resume must keep the chunks' layout
        a.start_index({**TOY, "chunk_size": 2, "n_chunks": 3})

    def again(con):  # the same chunk committed once more, with other content
        for t in ("index_passages", "index_windows", "index_chunks"):
            con.execute(f"INSERT INTO {a._lake}.{t} SELECT * REPLACE (write_id + 1 AS write_id) FROM {a._lake}.{t} "
                        f"WHERE index_id = 'ixtoy' AND chunk_index = 0")

    transaction(a._con, again, "duplicate")
    record = a.finish_index("ixtoy", 1.0)
    assert (record["n_windows"], record["max_windows"], record["hnsw"]) == (6, 1, False)
    with IndexStore(store) as reader:
        info = reader.index_info("ixtoy")
        assert info["status"] == "done" and info["chunks_present"] == 2
        emb = reader.all_embeddings("ixtoy")
        assert emb["passage_id"].tolist() == list(range(6))
        np.testing.assert_allclose(emb["embedding"].iloc[1], [2.0, 2.0, 1.0, -2.0])  # B's write, once
        assert reader.passages("ixtoy", [4, 1])["text"].tolist() == ["text 4", "text 1"]
        got, mode = reader.search_windows("ixtoy", np.array([0.0, 1.0, 0.0, 0.0]), 2)
        assert mode == "exact" and got["passage_id"].tolist() == [5, 2]  # 5, then 2 (B doubled it) and 4 tie at 4
        (win,) = reader.windows("ixtoy", [(0, 2, 0)]).to_dict("records")
        np.testing.assert_allclose(win["factor"], 2 * np.ones((1, 4)))
    a.delete_index("ixtoy")
    with IndexStore(store) as reader:
        assert reader.indexes().empty and reader.all_embeddings("ixtoy").empty
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------------
# the Search page under AppTest
# --------------------------------------------------------------------------------------------------


def build_search_store(root: Path, folders: dict[str, Path]) -> dict:
    """A store with a bilrp run of 12 demo pairs (tiny BERT) and an index of the same pairs' sentences, so that
    hits open in Example. Reused when already built (the browser test shares it)."""
    from core import load_model
    from core.datasets import load_dataset
    from precompute.runner import run

    marker = root / "search_store.json"
    if marker.exists():
        return json.loads(marker.read_text())
    root.mkdir(parents=True, exist_ok=True)
    small = root / "demo_small.tsv"
    pd.read_csv(DEMO, sep="\t").head(12).to_csv(small, sep="\t", index=False)
    store = root / "store"
    model = _quiet(load_model, folders["bert"], device="cpu")
    ds = _quiet(load_dataset, str(small), lang="en", gold_range=(0, 5))
    run_id = _quiet(run, model, ds, store, chunk_size=8, progress=False).run_id
    index_id = _quiet(build_index, model, dataset_corpus([str(small)]), store, chunk_size=8, progress=False).index_id
    info = {"store": str(store), "run_id": run_id, "index_id": index_id, "dataset_key": ds.key}
    marker.write_text(json.dumps(info))
    return info


@pytest.fixture(scope="session")
def search_store(tmp_path_factory, tiny_folders) -> dict:
    return build_search_store(tmp_path_factory.getbasetemp() / "search_store", tiny_folders)


def _page(monkeypatch, store: str):
    from streamlit.testing.v1 import AppTest

    from core import views

    monkeypatch.setenv(views.STORE_ENV, store)
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/7_Search.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_search_page_shows_hits_heatmaps_links_and_contrast(monkeypatch, search_store):
    pytest.importorskip("streamlit.testing.v1")
    at = _page(monkeypatch, search_store["store"])
    at.text_input(key="sr_query").set_value("A man is playing a guitar.")
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    hits = [unliteral(e.label) for e in at.expander if unliteral(e.label).startswith("#")]
    assert len(hits) == 5 and hits[0].startswith("#1 · ")
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) >= 6  # 5 heatmaps + the contrast bars
    assert any("Σ (A − B)" in m.value for m in at.markdown)
    links = [p for p in at.get("page_link")]
    assert links and "Example" in links[0].proto.page
    # another pair of hits to contrast
    at.selectbox(key="sr_b").set_value(3)
    at.run()
    assert not at.exception and any("#1 vs #3" in json.dumps(s) for s in [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")])


def test_search_page_bad_input_and_empty_store(monkeypatch, search_store, tmp_path):
    pytest.importorskip("streamlit.testing.v1")
    at = _page(monkeypatch, search_store["store"])
    at.text_input(key="sr_query").set_value("   ")
    at.button[0].click()
    at.run()
    assert not at.exception and any("query is empty" in e.value for e in at.error)
    IndexWriter(tmp_path / "empty").close()  # a store without indexes
    at = _page(monkeypatch, str(tmp_path / "empty"))
    assert any("no search index" in w.value for w in at.warning)
    assert any("precompute index" in m.value for m in at.markdown)
