"""The SimLens store schema, declared once.

``SCHEMA`` maps every table to its columns and each column to ``(duckdb type, description)``. The same
structure creates the DuckLake tables (plus the bookkeeping columns of ``BOOKKEEPING``), validates what
callers hand in, types the reader's views and renders ``docs/STORE.md`` (:func:`schema_markdown`). Nothing
outside :mod:`core.store` spells a column name in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# fmt: off
SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "datasets": {
        "dataset_key": ("VARCHAR", "Unique dataset key `<name>[:<lang_a>-<lang_b>]:<split>`, e.g. `stsb:test`, `mstsb:en-de:test`."),
        "name": ("VARCHAR", "Corpus name, e.g. `stsb`, `mstsb`."),
        "split": ("VARCHAR", "Split name (`train`, `validation`, `test`)."),
        "lang_a": ("VARCHAR", "ISO 639-1 language of sentence1."),
        "lang_b": ("VARCHAR", "ISO 639-1 language of sentence2."),
        "source": ("VARCHAR", "Where the pairs were first loaded from (hub id, URL or file path; not part of the identity)."),
        "dataset_hash": ("VARCHAR", "Content hash of the pairs (pair_id, sentence1, sentence2, gold): the dataset's identity. "
                         "The same file by another path, or under another data folder, has the same hash."),
        "revision": ("INTEGER", "1 for the first registration of the key; +1 each time an edited file is re-registered "
                     "(`--force`)."),
        "n_pairs": ("INTEGER", "Number of stored (kept) pairs (rows in `pairs`)."),
        "skipped": ("VARCHAR", "JSON object reason -> count of source rows that were dropped while loading."),
        "gold_min": ("DOUBLE", "Lower end of the gold scale (e.g. 0 for STS-b)."),
        "gold_max": ("DOUBLE", "Upper end of the gold scale (e.g. 5 for STS-b)."),
    },
    "pairs": {
        "dataset_key": ("VARCHAR", "Dataset the pair belongs to (-> datasets.dataset_key)."),
        "dataset_hash": ("VARCHAR", "Revision of the dataset the pair belongs to (-> datasets.dataset_hash)."),
        "pair_id": ("INTEGER", "The dataset's id of the pair: 0-based row of the source (gaps where rows were skipped)."),
        "pair_index": ("INTEGER", "0-based dense position of the pair in dataset order; chunk k of a run holds pair_index [k*C, (k+1)*C)."),
        "sentence1": ("VARCHAR", "First sentence (side a)."),
        "sentence2": ("VARCHAR", "Second sentence (side b)."),
        "gold": ("DOUBLE", "Gold similarity on the dataset's own scale."),
        "gold_norm": ("DOUBLE", "Gold rescaled to 0-1: (gold - gold_min) / (gold_max - gold_min)."),
    },
    "models": {
        "model_id": ("VARCHAR", "Short hash identifying the model (weights + config)."),
        "name": ("VARCHAR", "Human-readable model name, e.g. `all-MiniLM-L6-v2`."),
        "path": ("VARCHAR", "Where the weights were loaded from."),
        "revision": ("VARCHAR", "Hash of the weights/config files."),
        "architecture": ("VARCHAR", "Transformer architecture, e.g. `BertModel`."),
        "pooling": ("VARCHAR", "Sentence pooling: `mean` or `cls`."),
        "similarity": ("VARCHAR", "Similarity function: `cosine` or `dot`."),
        "dim": ("INTEGER", "Embedding dimension."),
        "num_layers": ("INTEGER", "Number of transformer layers."),
    },
    "evaluations": {
        "eval_id": ("VARCHAR", "Deterministic hash of kind, model_id, dataset_key and params (`make_eval_id`): re-running "
                    "the same evaluation publishes a new revision of the same record."),
        "row_index": ("INTEGER", "0-based position of the row within its evaluation."),
        "kind": ("VARCHAR", "What was evaluated: the kind of a registered evaluation (`python -m precompute "
                 "<verb>`; see *Evaluation kinds* below)."),
        "model_id": ("VARCHAR", "Evaluated model (-> models.model_id)."),
        "model_name": ("VARCHAR", "Denormalised models.name of the evaluated model."),
        "dataset_key": ("VARCHAR", "Dataset whose pairs were evaluated (-> datasets.dataset_key)."),
        "run_id": ("VARCHAR", "Stored run the evaluation read its relevances from (NULL when it computed them)."),
        "n_pairs": ("INTEGER", "Sentence pairs evaluated: the first n_pairs (by pair_index) of the dataset."),
        "params": ("VARCHAR", "JSON object of every setting of the evaluation (limit, layers, steps, methods, seed, ...)."),
        "created_at": ("TIMESTAMP", "UTC time the evaluation finished."),
        "seconds": ("DOUBLE", "Wall-clock seconds the evaluation took."),
        "code_version": ("VARCHAR", "Version/commit of the code that produced it."),
        "method": ("VARCHAR", "Attribution method of the row (`bilrp`, `ij`, `hxp`, `embedding`, `random`, ...; NULL "
                   "when the row is not about one method)."),
        "layer": ("INTEGER", "Layer attributed to (NULL when not applicable)."),
        "steps": ("INTEGER", "Integration steps of `ij` (NULL for step-free methods and for `ij` integrated to the "
                  "default tolerance, `steps=auto`)."),
        "quadrature": ("VARCHAR", "Quadrature rule of `ij` (NULL for step-free methods)."),
        "series": ("VARCHAR", "The curve or group the row belongs to (one line of a chart), e.g. `layer 3 · uniform`."),
        "metric": ("VARCHAR", "What `y` measures, e.g. `abs_residual`, `aupc`, `distance`, `share`, `density`, "
                   "`negative_share`, `spearman`, `acs`, `p_value`."),
        "label": ("VARCHAR", "Nominal position of the row (a POS relation, `bilrp vs random`, `cosine`, ...; NULL when "
                  "`x` positions it)."),
        "x": ("DOUBLE", "Numeric position of the row (steps, fraction of tokens or pairs, bin centre, score, ...)."),
        "y": ("DOUBLE", "The value: a mean over `n` pairs (or sentences) unless `metric` says otherwise."),
        "y_sd": ("DOUBLE", "Standard deviation of the values averaged into `y` (NULL when not a mean)."),
        "n": ("INTEGER", "How many values `y` summarises."),
        "extra": ("VARCHAR", "JSON object with anything else about the row (test statistic, bin width, ...), or NULL."),
    },
    "runs": {
        "run_id": ("VARCHAR", "Deterministic hash of model_id, dataset_key, method, layer, steps, quadrature (and tol, "
                   "max_steps when set) (`make_run_id`)."),
        "shard": ("VARCHAR", "Shard `K/N` written by this segment (`1/1` when not sharded)."),
        "kind": ("VARCHAR", "Run kind from the run-kind registry (`core.store.RUN_KINDS`): `attribute` (relevances) "
                 "or `predict` (scores only)."),
        "model_id": ("VARCHAR", "Explained model (-> models.model_id)."),
        "dataset_key": ("VARCHAR", "Explained dataset (-> datasets.dataset_key)."),
        "dataset_hash": ("VARCHAR", "Revision of the dataset the run explains (-> datasets.dataset_hash)."),
        "method": ("VARCHAR", "An attribution method of `core.methods.METHODS` (`bilrp`, `ij`, ...), or the kind's name "
                   "for kinds without one (`predict`: scores only, no token tables)."),
        "layer": ("INTEGER", "Layer the explanation is taken at (method specific)."),
        "steps": ("INTEGER", "Integration steps (NULL when the method has none, and for `ij` integrated to a tolerance: "
                  "see `tol`)."),
        "quadrature": ("VARCHAR", "Quadrature rule for integrated methods (NULL when none)."),
        "tol": ("DOUBLE", "`ij` with `--steps auto`: the completeness tolerance each pair's integral was refined to "
                "(|explained_score - matrix_sum| <= tol unless the pair is `capped`); NULL for a fixed step count."),
        "max_steps": ("INTEGER", "`ij` with `--steps auto`: the cap on one sentence's integration steps (NULL otherwise)."),
        "pooling": ("VARCHAR", "Pooling used for this run (`mean`, `cls`, `max`, `lasttoken`, ...; `+`-joined when concatenated)."),
        "similarity": ("VARCHAR", "Similarity used for this run (`cosine`/`dot`)."),
        "code_version": ("VARCHAR", "Version/commit of the code that produced the segment."),
        "status": ("VARCHAR", "`running`, `done`, `failed` or `deleted` as written; readers show a `running` segment whose "
                   "writer is gone (dead pid on this host, or no heartbeat for `STALE_AFTER_S`) as `interrupted`."),
        "n_pairs": ("INTEGER", "Pairs in the whole run: the first n_pairs pairs (by pair_index) of the dataset."),
        "n_chunks": ("INTEGER", "ceil(n_pairs / chunk_size)."),
        "chunk_size": ("INTEGER", "Pairs per chunk C (fixed for the run; chunk ids are deterministic)."),
        "started_at": ("TIMESTAMP", "UTC time the segment was first started (kept across resumes)."),
        "finished_at": ("TIMESTAMP", "UTC time the segment finished or failed (NULL while running)."),
        "seconds": ("DOUBLE", "Wall seconds the segment has run, over every process that worked on it: each "
                    "event (start, a chunk's commit by any process or Ray actor, finish) carries the sum forward; the "
                    "time between a killed writer's last commit and the resume is not counted."),
        "pairs_done": ("INTEGER", "Pairs in this segment's committed chunks."),
        "pairs_per_s": ("DOUBLE", "Throughput of this segment: pairs written / seconds, over all its processes."),
        "device": ("VARCHAR", "Device the segment ran on, e.g. `cuda:0 (NVIDIA H100)`."),
        "host": ("VARCHAR", "Host name of the writer."),
        "pid": ("INTEGER", "Process id of the writer (a dead pid on this host: the run is `interrupted`)."),
        "heartbeat_at": ("TIMESTAMP", "UTC time of the writer's latest sign of life (start, every chunk, finish)."),
        "spearman": ("DOUBLE", "Spearman correlation x100 of model_score vs gold (over this segment's pairs)."),
        "pearson": ("DOUBLE", "Pearson correlation x100 of model_score vs gold (over this segment's pairs)."),
        "mse": ("DOUBLE", "Mean squared error of model_score vs gold_norm (0-1 scale)."),
        "error_message": ("VARCHAR", "Why the segment failed (NULL unless status = failed)."),
    },
    "chunks": {
        "run_id": ("VARCHAR", "Run the chunk belongs to."),
        "chunk_index": ("INTEGER", "Chunk k: the pairs with pair_index in [k*C, (k+1)*C)."),
        "shard": ("VARCHAR", "Shard `K/N` of the writer that committed it."),
        "n_pairs": ("INTEGER", "Pairs in the chunk (predictions rows)."),
        "content_hash": ("VARCHAR", "Hash of the chunk's rows in every chunk table (merge compares chunks by it)."),
        "seconds": ("DOUBLE", "Seconds the committing process spent on the chunk: computing it and committing it."),
        "host": ("VARCHAR", "Host of the writer."),
        "pid": ("INTEGER", "Process id of the writer."),
        "committed_at": ("TIMESTAMP", "UTC time of the commit."),
    },
    "predictions": {
        "run_id": ("VARCHAR", "Run (-> runs.run_id)."),
        "chunk_index": ("INTEGER", "Chunk of the run (-> chunks.chunk_index)."),
        "pair_id": ("INTEGER", "Pair (-> pairs.pair_id of the run's dataset)."),
        "model_score": ("DOUBLE", "The model's own similarity (e.g. cosine of the pooled embeddings)."),
        "explained_score": ("DOUBLE", "The score the relevance matrix decomposes (NULL for `predict` runs)."),
        "matrix_sum": ("DOUBLE", "Sum of all token_pairs.relevance of the pair."),
        "residual": ("DOUBLE", "explained_score - matrix_sum (conservation error)."),
        "steps_a": ("INTEGER", "Integration steps sentence1's factor took: the run's `steps`, or under `--steps auto` "
                    "what its tolerance needed (NULL for step-free methods)."),
        "steps_b": ("INTEGER", "Integration steps sentence2's factor took (as `steps_a`)."),
        "capped": ("BOOLEAN", "`--steps auto`: a side's integral hit the run's `max_steps` short of its tolerance, so "
                   "|residual| may exceed `tol` (false otherwise; NULL for step-free methods)."),
        "gold": ("DOUBLE", "Gold similarity on the dataset's scale."),
        "gold_norm": ("DOUBLE", "Gold on the 0-1 scale."),
        "error": ("DOUBLE", "model_score - gold_norm (> 0: over-estimated similarity)."),
        "n_tokens_a": ("SMALLINT", "Tokens of sentence1 (incl. special tokens) after truncation."),
        "n_tokens_b": ("SMALLINT", "Tokens of sentence2 (incl. special tokens) after truncation."),
        "truncated": ("BOOLEAN", "Whether either sentence was truncated to the model's max length."),
    },
    "tokens": {
        "run_id": ("VARCHAR", "Run."),
        "chunk_index": ("INTEGER", "Chunk of the run."),
        "pair_id": ("INTEGER", "Pair."),
        "side": ("VARCHAR", "`a` (sentence1) or `b` (sentence2)."),
        "token_index": ("SMALLINT", "Position of the token in the model input (0-based, incl. special tokens)."),
        "token": ("VARCHAR", "Token text as produced by the tokenizer (e.g. `##ing`, `[CLS]`)."),
        "start": ("INTEGER", "Character offset where the token starts in the sentence (-1 or NULL for special tokens)."),
        "end": ("INTEGER", "Character offset one past the token's end (-1 or NULL for special tokens)."),
        "is_special": ("BOOLEAN", "Special token ([CLS], [SEP], <s>, ...)."),
        "is_prompt": ("BOOLEAN", "Token of the prompt prepended to the sentence (`query: ` ...; pos `[PROMPT]`, "
                                 "start/end -1); token_pairs/pos_pairs count it as special, so it hides with them."),
        "word_index": ("SMALLINT", "0-based index of the word the token belongs to (NULL for special tokens)."),
        "word": ("VARCHAR", "Text of that word (NULL for special tokens)."),
        "pos": ("VARCHAR", "Universal POS tag of the word; the token text for special tokens (`[CLS]`); NULL when the language has no tagger."),
    },
    "token_pairs": {
        "run_id": ("VARCHAR", "Run."),
        "chunk_index": ("INTEGER", "Chunk of the run."),
        "pair_id": ("INTEGER", "Pair."),
        "i": ("SMALLINT", "token_index on side a."),
        "j": ("SMALLINT", "token_index on side b."),
        "relevance": ("FLOAT", "Relevance R_ij of the token pair; sums (approximately) to explained_score."),
        "token_a": ("VARCHAR", "Denormalised tokens.token of (a, i)."),
        "token_b": ("VARCHAR", "Denormalised tokens.token of (b, j)."),
        "pos_a": ("VARCHAR", "Denormalised tokens.pos of (a, i)."),
        "pos_b": ("VARCHAR", "Denormalised tokens.pos of (b, j)."),
        "word_a": ("SMALLINT", "Denormalised tokens.word_index of (a, i)."),
        "word_b": ("SMALLINT", "Denormalised tokens.word_index of (b, j)."),
        "special_a": ("BOOLEAN", "Denormalised tokens.is_special OR tokens.is_prompt of (a, i)."),
        "special_b": ("BOOLEAN", "Denormalised tokens.is_special OR tokens.is_prompt of (b, j)."),
    },
    "pos_pairs": {
        "run_id": ("VARCHAR", "Run."),
        "chunk_index": ("INTEGER", "Chunk of the run."),
        "pair_id": ("INTEGER", "Pair."),
        "pos_a": ("VARCHAR", "POS of the side-a token/word (NULL stays NULL)."),
        "pos_b": ("VARCHAR", "POS of the side-b token/word (NULL stays NULL)."),
        "special_a": ("BOOLEAN", "Side-a token is a special (or prompt) token."),
        "special_b": ("BOOLEAN", "Side-b token is a special (or prompt) token."),
        "pos_sum": ("DOUBLE", "Sum of the positive token-pair relevances in this cell (>= 0)."),
        "neg_sum": ("DOUBLE", "Sum of the negative token-pair relevances in this cell (<= 0)."),
        "n_token_pairs": ("INTEGER", "Token pairs in this cell."),
        "word_pos_sum": ("DOUBLE", "Sum of the positive word-pair relevances (subword pieces summed into words first)."),
        "word_neg_sum": ("DOUBLE", "Sum of the negative word-pair relevances."),
        "n_word_pairs": ("INTEGER", "Distinct word pairs in this cell (a special token counts as its own word)."),
        "pair_count": ("TINYINT", "1 on exactly one row per (pair, pos_a, pos_b), preferring the row without special "
                       "tokens, else 0: sum(pair_count) counts sentence pairs per POS cell, also when special "
                       "tokens are excluded."),
    },
    "factors": {
        "run_id": ("VARCHAR", "Run."),
        "chunk_index": ("INTEGER", "Chunk of the run."),
        "pair_id": ("INTEGER", "Pair."),
        "side": ("VARCHAR", "`a` or `b`."),
        "token_index": ("SMALLINT", "Token position."),
        "dim": ("INTEGER", "Length of the factor vector."),
        "factor": ("BLOB", "Factor vector of the token as float16 little-endian bytes (2*dim bytes)."),
        "embedding_norm": ("DOUBLE", "L2 norm |e| of the sentence embedding (same on each token row of the sentence; NULL if "
                           "unused): a cosine model's matrix is F_a @ F_b.T / (|e_a| |e_b|)."),
    },
    # ---- search indexes (python -m precompute index; core/store/index*.py) ----
    "quartile_pairs": {
        "run_id": ("VARCHAR", "Run (-> runs.run_id)."),
        "content_key": ("VARCHAR", "Hash of the run's winning chunks (chunk_index, content_hash) the rows were computed "
                        "from: readers use them only while the run's chunks are exactly these."),
        "level": ("VARCHAR", "`token` (subword tokens) or `word` (pieces summed into words)."),
        "include_special": ("BOOLEAN", "Whether token pairs with a special (or prompt) token were counted."),
        "quartile": ("VARCHAR", "`high` or `low`: the ceil(n/4) pairs with the highest (lowest) model score, ties "
                     "broken by pair_id."),
        "rank": ("SMALLINT", "1 = the largest summed relevance of the quartile (then by token_a, token_b)."),
        "token_a": ("VARCHAR", "Side-a token (word) text."),
        "token_b": ("VARCHAR", "Side-b token (word) text."),
        "relevance": ("DOUBLE", "Relevance summed over the quartile's occurrences of the text pair."),
        "mean_relevance": ("DOUBLE", "Mean relevance per occurrence."),
        "count": ("BIGINT", "Occurrences (token or word pairs) summed."),
        "n_pairs": ("INTEGER", "Sentence pairs of the quartile with the text pair."),
    },
    "indexes": {
        "index_id": ("VARCHAR", "Deterministic hash of model_id, the corpus' content hash, method, layer, steps, quadrature, prompt and window settings."),
        "corpus_key": ("VARCHAR", "What was indexed: dataset keys joined by `+` (`stsb:train+stsb:dev+stsb:test`) or `file:<name>[:<column>]`."),
        "corpus_source": ("VARCHAR", "Where the texts were read from."),
        "corpus_hash": ("VARCHAR", "SHA-256 (first 16 hex digits) of the distinct texts in order."),
        "model_id": ("VARCHAR", "Model whose embeddings and factors are stored (-> models.model_id)."),
        "model_name": ("VARCHAR", "Denormalised models.name."),
        "model_path": ("VARCHAR", "Where the model was loaded from (the Search page loads the query's model from here)."),
        "similarity": ("VARCHAR", "The model's similarity (`cosine` or `dot`): what the search ranks by."),
        "dim": ("INTEGER", "Embedding dimension D."),
        "method": ("VARCHAR", "Attribution method of the stored factors (`bilrp`, `ij`, `hxp`)."),
        "layer": ("INTEGER", "Layer the factors attribute to."),
        "steps": ("INTEGER", "Integration steps (NULL for step-free methods, and for `ij` integrated to a tolerance)."),
        "quadrature": ("VARCHAR", "Quadrature rule (NULL for step-free methods)."),
        "tol": ("DOUBLE", "`ij` with `--steps auto`: the completeness tolerance of every factor (NULL otherwise)."),
        "max_steps": ("INTEGER", "`ij` with `--steps auto`: the cap on one text's integration steps (NULL otherwise)."),
        "prompt_name": ("VARCHAR", "Name of the prompt prepended to every passage (NULL: none)."),
        "prompt": ("VARCHAR", "Its text ('' when none); the stored tokens include it."),
        "query_prompt_name": ("VARCHAR", "Prompt the search prepends to queries by default (NULL: none)."),
        "query_prompt": ("VARCHAR", "Its text ('' when none)."),
        "window_tokens": ("INTEGER", "Content tokens per window at most (the model's maximum minus special and prompt tokens, or smaller)."),
        "window_overlap": ("INTEGER", "Tokens two consecutive windows of a passage share (about; windows are cut between words)."),
        "n_passages": ("INTEGER", "Distinct texts indexed (rows of `index_passages`)."),
        "chunk_size": ("INTEGER", "Passages per chunk C: chunk k holds passages [k*C, (k+1)*C) and their windows."),
        "n_chunks": ("INTEGER", "ceil(n_passages / C)."),
        "hnsw": ("BOOLEAN", "Whether searches use an HNSW index (DuckDB vss) of a local copy of the embeddings (set when done)."),
        "status": ("VARCHAR", "`running`, `done`, `failed` or `deleted` (readers show a `running` index whose writer is gone as `interrupted`)."),
        "started_at": ("TIMESTAMP", "UTC time the index was first started."),
        "heartbeat_at": ("TIMESTAMP", "UTC time of this record (readers also count the index's latest chunk commit)."),
        "finished_at": ("TIMESTAMP", "UTC time it finished or failed."),
        "seconds": ("DOUBLE", "Compute seconds over all attempts."),
        "n_windows": ("INTEGER", "Windows stored (set when done)."),
        "max_windows": ("INTEGER", "Most windows of one passage (set when done)."),
        "code_version": ("VARCHAR", "Commit of the code that built it."),
        "device": ("VARCHAR", "Device the factors were computed on."),
        "host": ("VARCHAR", "Host name of the writer."),
        "pid": ("INTEGER", "Process id of the writer (a `running` index whose writer is gone reads as `interrupted`)."),
        "error_message": ("VARCHAR", "Why it failed (NULL unless failed)."),
    },
    "index_chunks": {
        "index_id": ("VARCHAR", "Index the chunk belongs to."),
        "chunk_index": ("INTEGER", "Chunk k: the passages with passage_id in [k*C, (k+1)*C)."),
        "n_passages": ("INTEGER", "Passages in the chunk."),
        "n_windows": ("INTEGER", "Windows in the chunk."),
        "seconds": ("DOUBLE", "Seconds the writer spent computing the chunk."),
        "host": ("VARCHAR", "Host of the writer."),
        "pid": ("INTEGER", "Process id of the writer."),
        "committed_at": ("TIMESTAMP", "UTC time of the commit."),
    },
    "index_passages": {
        "index_id": ("VARCHAR", "Index (-> indexes.index_id)."),
        "chunk_index": ("INTEGER", "Chunk of the index (-> index_chunks.chunk_index)."),
        "passage_id": ("INTEGER", "0-based position of the distinct text in the corpus (first occurrence order)."),
        "text": ("VARCHAR", "The passage."),
        "dataset_key": ("VARCHAR", "Dataset of its first occurrence (NULL for a corpus file)."),
        "pair_id": ("INTEGER", "Pair of its first occurrence in that dataset (-> pairs.pair_id; NULL for a corpus file)."),
        "side": ("VARCHAR", "`a` (sentence1) or `b` (sentence2) of that pair (NULL for a corpus file)."),
        "source_row": ("INTEGER", "0-based row of its first occurrence in a corpus file (NULL for datasets)."),
        "occurrences": ("INTEGER", "How often the text occurs in the corpus."),
    },
    "index_windows": {
        "index_id": ("VARCHAR", "Index (-> indexes.index_id)."),
        "chunk_index": ("INTEGER", "Chunk of the index."),
        "passage_id": ("INTEGER", "Passage (-> index_passages.passage_id)."),
        "window_index": ("SMALLINT", "0-based window of the passage (a passage that fits the model is one window)."),
        "char_start": ("INTEGER", "The window's first character in the passage."),
        "char_end": ("INTEGER", "One past its last character."),
        "n_tokens": ("SMALLINT", "Tokens of the model input (prompt and special tokens included) = factor rows."),
        "tokens": ("VARCHAR[]", "The tokens of the model input (prompt + window)."),
        "token_start": ("INTEGER[]", "Character offset of each token in prompt + window text (0 for special tokens)."),
        "token_end": ("INTEGER[]", "One past each token's end."),
        "special": ("BOOLEAN[]", "Whether each token is a special token."),
        "word_ids": ("INTEGER[]", "Pre-tokenizer word of each token (-1 for special tokens)."),
        "embedding": ("FLOAT[]", "The model's sentence embedding of the window, D values (what the search compares)."),
        "factor": ("BLOB", "The (n_tokens, D) factor, float16 little-endian, row-major."),
        "target": ("BLOB", "The (D,) vector the factor rows sum to, float32 little-endian."),
        "scale": ("DOUBLE", "The window's multiplier of pair products (1/|e| for cosine models)."),
        "truncated": ("BOOLEAN", "Whether the input was cut at the model's maximum (never, unless a single word is longer)."),
        "steps": ("INTEGER", "`ij`: integration steps the window's factor took (NULL for step-free methods)."),
        "capped": ("BOOLEAN", "`ij` with `--steps auto`: its integral hit the index's `max_steps` short of its tolerance."),
    },
    "file_checksums": {
        "table_name": ("VARCHAR", "Table the data file belongs to."),
        "file": ("VARCHAR", "The Parquet data file's name in the table's folder (`ducklake-<uuid>.parquet`)."),
        "file_size": ("BIGINT", "Bytes of the file when its checksum was taken."),
        "sha256": ("VARCHAR", "SHA-256 of the file's bytes (hex)."),
        "run_id": ("VARCHAR", "Run of the rows the file holds (NULL for tables without `run_id`)."),
        "index_id": ("VARCHAR", "Search index of the rows the file holds (NULL for tables without `index_id`)."),
        "chunk_index": ("INTEGER", "Chunk of the rows the file holds (NULL for tables without chunks)."),
    },
}
# fmt: on

#: Columns every physical table carries besides its SCHEMA columns; readers never show them.
BOOKKEEPING: dict[str, tuple[str, str]] = {
    "write_id": ("BIGINT", "Random id of the write (one transaction) that stored the row."),
    "written_at": ("TIMESTAMP", "UTC time of that write."),
}


@dataclass(frozen=True)
class TableInfo:
    """How a table is written and read.

    ``kind``: ``record`` (a record is replaced as a whole by a newer write of the same ``record_key``; readers
    see the latest write), ``event`` (append-only events, readers see the latest event per ``record_key``),
    ``chunk`` (rows of one run chunk; readers see the rows of the chunk's winning write only), ``ledger``
    (the chunks table itself: the first committed write of a chunk wins), or their search-index twins
    ``index chunk`` and ``index ledger`` (the same rule, per ``(index_id, chunk_index)`` instead of
    ``(run_id, chunk_index)``; :mod:`core.store.index` defines their views), or ``integrity`` (the checksums of
    the other tables' data files, :mod:`core.store.integrity`).
    """

    kind: str
    description: str
    key: tuple[str, ...]
    required: tuple[str, ...]  # columns a caller must hand in (others are derived or NULL)
    record_key: tuple[str, ...] = ()


TABLES: dict[str, TableInfo] = {
    "datasets": TableInfo(
        "record", "One row per dataset key: its latest registered revision.", ("dataset_key",),
        ("dataset_key", "name", "split"), ("dataset_key",),
    ),
    "pairs": TableInfo(
        "record", "Sentence pairs of every dataset revision in dataset order (the `pairs` view shows the latest "
        "revision of each dataset).", ("dataset_key", "pair_id"), ("sentence1", "sentence2", "gold"),
        ("dataset_hash",),
    ),
    "models": TableInfo(
        "record", "One row per model.", ("model_id",), ("model_id", "name"), ("model_id",),
    ),
    "evaluations": TableInfo(
        "record",
        "Faithfulness evidence (one `python -m precompute <verb>` per registered evaluation: *Evaluation kinds* "
        "below), long form: all rows of one evaluation are written "
        "together; a re-run replaces them. Read with `Store.evaluations()`, `Store.evaluation_list()` and "
        "`Store.model_table1()`.",
        ("eval_id", "row_index"), ("eval_id", "kind", "model_id", "metric", "y"), ("eval_id",),
    ),
    "runs": TableInfo(
        "event",
        "Append-only events of every (run, writer shard) *segment*: start, one per committed chunk (heartbeat, "
        "timings), finish, fail, delete. Readers use each segment's latest event; `Store.runs()` combines the "
        "segments of a run into one row.",
        ("run_id", "shard"), ("model_id", "dataset_key", "method", "layer", "n_pairs", "chunk_size"),
        ("run_id", "shard"),
    ),
    "chunks": TableInfo(
        "ledger",
        "One row per committed write of a run chunk, in the same transaction as the chunk's rows. When two "
        "writers race on a chunk (or a worker retries after its commit), the first committed write wins and "
        "every reader query sees only its rows: results are exactly-once as read.",
        ("run_id", "chunk_index"), ("run_id", "chunk_index"), ("run_id", "chunk_index"),
    ),
    "predictions": TableInfo(
        "chunk", "One row per (run, pair): scores and conservation check.", ("pair_id",), ("pair_id", "model_score"),
    ),
    "tokens": TableInfo(
        "chunk", "One row per (run, pair, side, token).", ("pair_id", "side", "token_index"),
        ("pair_id", "side", "token_index", "token"),
    ),
    "token_pairs": TableInfo(
        "chunk", "One row per (run, pair, i, j): the relevance matrix in long form, denormalised for corpus queries.",
        ("pair_id", "i", "j"), ("pair_id", "i", "j", "relevance"),
    ),
    "pos_pairs": TableInfo(
        "chunk",
        "Per-pair aggregate of token_pairs by (pos_a, pos_b, special_a, special_b), computed by the writer "
        "(`pos_pair_aggregate`); the POS heat maps read only this table.",
        ("pair_id", "pos_a", "pos_b", "special_a", "special_b"),
        ("pair_id", "pos_a", "pos_b", "special_a", "special_b", "pos_sum", "neg_sum", "n_token_pairs",
         "word_pos_sum", "word_neg_sum", "n_word_pairs"),  # pair_count is derived when missing
    ),
    "factors": TableInfo(
        "chunk", "Optional per-token factor vectors, enough to explain two stored sentences without the model.",
        ("pair_id", "side", "token_index"), ("pair_id", "side", "token_index", "factor"),
    ),
    "quartile_pairs": TableInfo(
        "record",
        "Per finished run: the `QUARTILE_TOP_MAX` most relevant text pairs of each score quartile, per level and "
        "with and without special tokens, computed from token_pairs when the run's last chunk is committed "
        "(`core.store.summaries`); `Store.quartile_top_pairs` reads them while their `content_key` matches the "
        "run's chunks and computes from token_pairs otherwise.",
        ("run_id", "level", "include_special", "quartile", "rank"),
        ("run_id", "content_key", "level", "include_special", "quartile", "rank", "token_a", "token_b", "relevance"),
        ("run_id",),
    ),
    "indexes": TableInfo(
        "record", "One record per search index (`python -m precompute index`), replaced on start, finish and "
        "failure; read with `IndexStore.indexes()`.", ("index_id",),
        ("index_id", "corpus_key", "model_id", "similarity", "dim", "method", "layer", "n_passages", "chunk_size"),
        ("index_id",),
    ),
    "index_chunks": TableInfo(
        "index ledger", "One row per committed write of an index chunk, in the same transaction as its passages "
        "and windows; the first committed write of a chunk wins (exactly-once as read, like `chunks`).",
        ("index_id", "chunk_index"), ("index_id", "chunk_index"), ("index_id", "chunk_index"),
    ),
    "index_passages": TableInfo(
        "index chunk", "Every distinct text of an index, written with its chunk.", ("index_id", "passage_id"),
        ("passage_id", "text"),
    ),
    "index_windows": TableInfo(
        "index chunk", "One row per window of a passage: tokens, the model's embedding and the float16 factor, "
        "enough to explain any query against it with one model pass for the query.",
        ("index_id", "passage_id", "window_index"), ("passage_id", "window_index", "n_tokens", "embedding", "factor"),
    ),
    "file_checksums": TableInfo(
        "integrity", "The content checksum of every Parquet data file of the other tables, one row per (file, run or "
        "index, chunk) of the rows it holds, written in the same transaction as the file (files that `compact` "
        "merges: in the transaction right after the merge). Readers check a file against it before they return "
        "its rows; `python -m precompute verify` checks every file (docs/integrity.md). Its own files are not "
        "checksummed.",
        ("table_name", "file", "run_id", "index_id", "chunk_index"), ("table_name", "file", "file_size", "sha256"),
    ),
}

META_TABLES = tuple(t for t, i in TABLES.items() if i.kind == "record")
CHUNK_TABLES = tuple(t for t, i in TABLES.items() if i.kind == "chunk")
INDEX_CHUNK_TABLES = tuple(t for t, i in TABLES.items() if i.kind == "index chunk")
CHUNK_COLUMNS = ("run_id", "chunk_index")  # every chunk table's columns the writer fills in itself

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int16(),
    "TINYINT": pa.int8(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
    "BLOB": pa.binary(),
    "FLOAT[]": pa.list_(pa.float32()),
    "VARCHAR[]": pa.list_(pa.string()),
    "INTEGER[]": pa.list_(pa.int32()),
    "BOOLEAN[]": pa.list_(pa.bool_()),
}


def columns(table: str, bookkeeping: bool = False) -> dict[str, str]:
    """column -> DuckDB type of a table (with the bookkeeping columns when asked)."""
    cols = {c: typ for c, (typ, _) in SCHEMA[table].items()}
    if bookkeeping:
        cols.update({c: typ for c, (typ, _) in BOOKKEEPING.items()})
    return cols


def arrow_schema(table: str, bookkeeping: bool = False) -> pa.Schema:
    """The Arrow schema of a table's rows as the writer inserts them."""
    return pa.schema([pa.field(c, _ARROW_TYPES[t]) for c, t in columns(table, bookkeeping).items()])


def schema_markdown() -> str:
    """Markdown documentation of the store (docs/STORE.md): layout, every table and column."""
    lines = [
        "### Store layout",
        "",
        "A store is a [DuckLake](https://ducklake.select): a catalog database plus Parquet data files. The "
        "default `./store` folder holds a SQLite catalog and its data folder; a PostgreSQL catalog with data on "
        "S3 (or any object store DuckDB reads) is one connection string away (`--store`, `$SIMLENS_STORE`):",
        "",
        "```",
        "store/                                   local store (the default)",
        "store/catalog.sqlite                     DuckLake catalog: tables, snapshots, file lists, small inlined rows",
        "store/data/main/<table>/*.parquet        data files, written once, removed only by `compact`",
        "",
        "ducklake:sqlite:/path/catalog.sqlite data_path=/path/data/",
        "ducklake:postgres:dbname=simlens host=db.example.org user=me data_path=s3://bucket/simlens/",
        "```",
        "",
        "Every write is one DuckLake transaction: a chunk of a run (its rows in every chunk table, its `chunks` "
        "row and a run heartbeat event) commits whole or not at all, from any number of processes (SQLite) or "
        "machines (PostgreSQL) at once. Readers query one snapshot at a time: the dashboard reads one snapshot "
        "per page run and \"Reload store\" moves it to the newest. Chunk k of a run holds the pairs with "
        "`pair_index` in `[k*C, (k+1)*C)` (C = `chunk_size`); shard K/N writes the chunks with `k % N == K-1`, "
        "into the same store. Readers see, per table kind: *record* tables the latest write of each record, "
        "*event* tables the latest event of each segment, chunk tables the rows of each chunk's first committed "
        "write (`chunks`). `python -m precompute compact` merges small files, expires old snapshots and deletes "
        "unreferenced files; `merge` copies stores built apart into one; `migrate` converts a store of the "
        "Parquet-directory layout (format 1) into this one.",
        "",
        "Every table also has the bookkeeping columns "
        + ", ".join(f"`{c}` ({t}: {d})" for c, (t, d) in BOOKKEEPING.items()) + ", which readers never show.",
        "",
        "Search indexes (`python -m precompute index`) are tables of the same store: an index's record in "
        "`indexes`, and chunk k of it (passages [k*C, (k+1)*C) with their windows) committed in one transaction "
        "with its `index_chunks` row, so a killed build resumes with exactly the missing chunks and readers see "
        "each chunk's first committed write only. An HNSW index cannot live in DuckLake: for an index with "
        "`hnsw` the reader copies the embeddings into a local DuckDB file, `<store>/cache/<index_id>-<write>.duckdb` "
        "(remote stores: `$SIMLENS_CACHE`, default `~/.cache/simlens`), builds the HNSW index there once and "
        "reuses it; other indexes are scanned exactly, in SQL, in the lake.",
        "",
        "Every Parquet data file has a SHA-256 content checksum in `file_checksums`, written in the transaction "
        "that writes the file. A reader checks each file it is about to read once per process (a file that does "
        "not match is a StoreError naming its table, file, run and chunk, never its rows); `python -m precompute "
        "verify [--run ID]` checks every file; `merge` and `compact` refuse to copy or rewrite a damaged file. "
        "See docs/integrity.md.",
        "",
    ]
    for table, cols in SCHEMA.items():
        info = TABLES[table]
        lines += [f"### `{table}`", "", f"*{info.kind}* table. {info.description}", "",
                  "| column | type | description |", "|---|---|---|"]
        for name, (typ, desc) in cols.items():
            lines.append(f"| `{name}` | {typ} | {desc} |")
        lines.append("")
    return "\n".join(lines)
