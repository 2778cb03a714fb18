"""A synthetic store with the shapes corpus pages must get right, written through the store writer:

- ``stsb:test`` (8 pairs): model ``mA`` with a full ``bilrp`` run and a 3-pair ``hxp`` run (same scores: any
  metric difference between them would be the subset), model ``mB`` with a scores-only ``predict`` run and
  an ``ij`` run that is running and has written no chunk yet;
- ``mstsb:en:test`` and ``mstsb:en-de:test`` (4 pairs each, rows aligned: same pair ids and gold; the German
  side has no POS tags), one ``bilrp`` run of ``mA`` on each, and a 2-pair ``bilrp`` run of ``mB`` on
  ``mstsb:en:test`` (the only run of that model and dataset: its metrics cell is partial);
- ``stsb:test:picked`` (6 pairs): four stsb:test pairs renumbered and reordered, a new pair, and one pair's texts
  with another gold; a ``bilrp`` run of ``mB`` on it (Compare matches pairs by content).

Token relevances are deterministic functions of the words, so tests can recompute what they expect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.metrics import score_metrics
from core.store import Store, StoreWriter

STSB = "stsb:test"
EN, EN_DE = "mstsb:en:test", "mstsb:en-de:test"
POS = {"a": "DET", "the": "DET", "cat": "NOUN", "dog": "NOUN", "mat": "NOUN", "man": "NOUN", "guitar": "NOUN",
       "paris": "PROPN", "sits": "VERB", "runs": "VERB", "plays": "VERB", "sleeps": "VERB", "is": "AUX",
       "on": "ADP", "in": "ADP", "red": "ADJ", "big": "ADJ"}
STSB_PAIRS = pd.DataFrame({
    "sentence1": ["a cat sits on the mat", "the dog runs", "a man plays guitar", "the red cat sleeps",
                  "a big dog sleeps", "the man runs", "a cat is on the mat", "the dog plays"],
    "sentence2": ["the cat sits on a mat", "a dog runs", "the man plays a guitar", "a cat sleeps",
                  "the dog runs", "a man sleeps", "the red mat", "a cat plays"],
    "gold": [5.0, 4.5, 4.0, 3.5, 2.0, 1.5, 1.0, 0.5],
})
MSTSB_EN = pd.DataFrame({
    "sentence1": ["a man in paris", "the cat sleeps", "a dog runs", "the man plays guitar"],
    "sentence2": ["the man in paris", "a cat runs", "the big dog sleeps", "a cat sits"],
    "gold": [4.8, 2.5, 2.0, 0.4],
})
MSTSB_DE = MSTSB_EN.assign(sentence2=["der Mann in paris", "eine Katze rennt", "der große Hund schläft",
                                      "eine Katze sitzt"])
# stsb:test:picked: four stsb:test pairs in another order and numbering, a new pair, and pair 0's texts with
# another gold (not the same pair): Compare must match the four by content
PICKED = "stsb:test:picked"
PICKED_PAIRS = pd.concat([STSB_PAIRS.iloc[[5, 2, 7, 3]], pd.DataFrame({
    "sentence1": ["a dog sits", STSB_PAIRS.sentence1[0]], "sentence2": ["the dog sits", STSB_PAIRS.sentence2[0]],
    "gold": [3.0, 2.0]})], ignore_index=True)
PICKED_OF_STSB = {5: 0, 2: 1, 7: 2, 3: 3}  # stsb:test pair id -> stsb:test:picked pair id
SCORES_PICKED = [0.55, 0.72, 0.35, 0.65, 0.5, 0.6]
SCORES_A = [0.95, 0.9, 0.7, 0.8, 0.3, 0.5, 0.2, 0.4]  # model mA on stsb (hxp covers the first 3)
SCORES_B = [0.9, 0.8, 0.75, 0.6, 0.5, 0.2, 0.1, 0.3]


def _tokens(pair_id: int, s1: str, s2: str, tag_b: bool) -> list[dict]:
    rows = []
    for side, text, tagged in (("a", s1, True), ("b", s2, tag_b)):
        rows.append({"pair_id": pair_id, "side": side, "token_index": 0, "token": "[CLS]", "is_special": True,
                     "word_index": None, "word": None, "pos": "[CLS]"})
        for k, word in enumerate(text.split()):
            rows.append({"pair_id": pair_id, "side": side, "token_index": k + 1, "token": word.lower(),
                         "is_special": False, "word_index": k, "word": word,
                         "pos": POS.get(word.lower(), "X") if tagged else None})
    return rows


def relevance(token_a: str, token_b: str, scale: float) -> float:
    """The synthetic relevance of a token pair: positive for equal tokens, small and signed otherwise."""
    if token_a == token_b:
        return scale * 0.5
    return scale * (((len(token_a) * 7 + len(token_b) * 3) % 5) - 2) / 20.0


def _chunk(ids: list[int], pairs: pd.DataFrame, scores: list[float], scale: float, tag_b: bool) -> dict:
    toks = pd.DataFrame([r for p in ids for r in _tokens(p, pairs.sentence1[p], pairs.sentence2[p], tag_b)])
    tp = []
    for p in ids:
        ta = toks[(toks.pair_id == p) & (toks.side == "a")].token.tolist()
        tb = toks[(toks.pair_id == p) & (toks.side == "b")].token.tolist()
        tp += [{"pair_id": p, "i": i, "j": j, "relevance": relevance(a, b, scale)}
               for i, a in enumerate(ta) for j, b in enumerate(tb)]
    tp = pd.DataFrame(tp)
    explained = [float(tp[tp.pair_id == p].relevance.sum()) for p in ids]
    return {"predictions": pd.DataFrame({"pair_id": ids, "model_score": [scores[p] for p in ids],
                                         "explained_score": explained}),
            "tokens": toks, "token_pairs": tp}


def _run(w: StoreWriter, model: str, dataset: str, method: str, pairs: pd.DataFrame, scores: list[float], *,
         n_pairs: int | None = None, layer: int = 0, scale: float = 1.0, tag_b: bool = True,
         chunks: bool = True) -> None:
    spec = {"model_id": model, "dataset_key": dataset, "method": method, "layer": layer, "chunk_size": 3,
            "code_version": "test", "device": "cpu"}
    if method == "ij":
        spec["steps"] = 16
    if n_pairs is not None:
        spec["n_pairs"] = n_pairs
    w.start_run(spec)
    rid = _find(w.location, model, dataset, method)
    if not chunks:
        return
    for k in w.pending_chunks(rid):
        ids = w.chunk_pair_ids(rid, k)
        tables = _chunk(ids, pairs, scores, scale, tag_b)
        if method == "predict":
            tables = {"predictions": tables["predictions"].drop(columns="explained_score")}
        w.write_chunk(rid, k, tables)
    n = len(pairs) if n_pairs is None else n_pairs
    gold = pairs["gold"].to_numpy(float)[:n]
    w.finish_run(rid, score_metrics(np.asarray(scores[:n], float), gold, gold / 5.0))


def _find(location: object, model: str, dataset: str, method: str) -> str:
    with Store(location) as s:
        runs = s.runs()
    sel = runs[(runs.model_id == model) & (runs.dataset_key == dataset) & (runs.method == method)]
    return str(sel.run_id.iloc[0])


def build_corpus_store(path: Path) -> dict[str, str]:
    """Write the store at ``path``; returns {name: run_id} for full, subset, scores, running, en, en_de,
    en_partial, picked."""
    w = StoreWriter(path)
    w.put_dataset({"dataset_key": STSB, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "gold_min": 0.0, "gold_max": 5.0}, STSB_PAIRS)
    w.put_dataset({"dataset_key": PICKED, "name": "stsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "gold_min": 0.0, "gold_max": 5.0}, PICKED_PAIRS)
    w.put_dataset({"dataset_key": EN, "name": "mstsb", "split": "test", "lang_a": "en", "lang_b": "en",
                   "gold_min": 0.0, "gold_max": 5.0}, MSTSB_EN)
    w.put_dataset({"dataset_key": EN_DE, "name": "mstsb", "split": "test", "lang_a": "en", "lang_b": "de",
                   "gold_min": 0.0, "gold_max": 5.0}, MSTSB_DE)
    for mid in ("mA", "mB"):
        w.put_model({"model_id": mid, "name": f"/models/model-{mid}", "pooling": "mean", "similarity": "cosine"})
    _run(w, "mA", STSB, "bilrp", STSB_PAIRS, SCORES_A)
    _run(w, "mA", STSB, "hxp", STSB_PAIRS, SCORES_A, n_pairs=3, scale=1.5)
    _run(w, "mB", STSB, "predict", STSB_PAIRS, SCORES_B)
    _run(w, "mB", STSB, "ij", STSB_PAIRS, SCORES_B, layer=3, chunks=False)
    _run(w, "mA", EN, "bilrp", MSTSB_EN, [0.9, 0.5, 0.45, 0.1])
    _run(w, "mA", EN_DE, "bilrp", MSTSB_DE, [0.7, 0.4, 0.5, 0.2], tag_b=False, scale=0.8)
    _run(w, "mB", EN, "bilrp", MSTSB_EN, [0.8, 0.3, 0.6, 0.2], n_pairs=2, scale=1.2)
    _run(w, "mB", PICKED, "bilrp", PICKED_PAIRS, SCORES_PICKED, scale=0.7)
    w.close()
    names = {"full": ("mA", STSB, "bilrp"), "subset": ("mA", STSB, "hxp"), "scores": ("mB", STSB, "predict"),
             "running": ("mB", STSB, "ij"), "en": ("mA", EN, "bilrp"), "en_de": ("mA", EN_DE, "bilrp"),
             "en_partial": ("mB", EN, "bilrp"), "picked": ("mB", PICKED, "bilrp")}
    return {name: _find(path, *spec) for name, spec in names.items()}


