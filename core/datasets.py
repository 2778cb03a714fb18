"""Loading sentence-pair similarity datasets into one validated shape.

Sources: the offline benchmark copies (STS-b, SICK, BIOSSES, mSTSb incl. cross-lingual pairs) under the data
directory, local user files (.csv, .tsv, .parquet, .jsonl/.json) and Hugging Face hub ids (``hf:<owner>/<name>``,
needs the ``datasets`` package and network). Every source goes through the same validation: nothing is changed
silently; bad rows either raise a ``DatasetError`` or are dropped and counted, as the caller chooses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.dataset_files import FILE_SUFFIXES, read_table
from core.dataset_validation import (
    DUPLICATE_POLICIES,
    ON_BAD,
    REASONS,
    ROLES,
    DatasetError,
    require_columns,
    shown_rows,
    validate_rows,
)

__all__ = ["BUILTINS", "DATA_DIR_ENV", "DUPLICATE_POLICIES", "FILE_SUFFIXES", "HUB_DATASETS", "MSTSB_LANGS", "ON_BAD",
           "REASONS", "DatasetError", "PairDataset", "available_datasets", "default_data_dir", "load_dataset",
           "read_table"]

DATA_DIR_ENV = "SIMLENS_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DATA_DIR = _REPO_ROOT.parent / "shared" / "data"
_DATA_DIR_HINT = f"pass --data-dir or set {DATA_DIR_ENV}"

MSTSB_LANGS = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")


@dataclass(frozen=True)
class _Builtin:
    splits: tuple[str, ...]
    default_split: str
    gold_range: tuple[float, float]


BUILTINS: dict[str, _Builtin] = {
    "stsb": _Builtin(("train", "dev", "test"), "test", (0.0, 5.0)),
    "sick": _Builtin(("train", "trial", "test"), "test", (1.0, 5.0)),
    "biosses": _Builtin(("all",), "all", (0.0, 4.0)),
    "mstsb": _Builtin(("train", "dev", "test"), "test", (0.0, 5.0)),
}


@dataclass(frozen=True)
class HubInfo:
    """What SimLens knows about a hub dataset: its gold column and scale, and its language(s)."""

    score_column: str
    gold_range: tuple[float, float]
    lang: str | None = "en"
    configs: tuple[str, ...] = ()  # languages given as the hub config; then ``lang`` is required


HUB_DATASETS: dict[str, HubInfo] = {
    "sentence-transformers/stsb": HubInfo("score", (0.0, 1.0)),
    "mteb/stsbenchmark-sts": HubInfo("score", (0.0, 5.0)),
    "PhilipMay/stsb_multi_mt": HubInfo("similarity_score", (0.0, 5.0), None, MSTSB_LANGS),
    "mteb/sickr-sts": HubInfo("score", (1.0, 5.0)),
    "mteb/biosses-sts": HubInfo("score", (0.0, 4.0)),
}


@dataclass
class PairDataset:
    """A validated table of sentence pairs with gold similarity scores.

    Attributes:
        key: canonical identifier, e.g. ``stsb:test``, ``mstsb:en-de:test``, ``file:<stem>:all``,
            ``hf:<owner>/<name>:<split>`` (``hf:<owner>/<name>:<lang>:<split>`` for per-language hub configs).
        name: dataset name (``stsb``, ``sick``, ``biosses``, ``mstsb``, the file stem, or the hub id).
        split: split name (``all`` for BIOSSES and user files).
        lang_a: ISO 639-1 code of ``sentence1`` (None when unknown).
        lang_b: ISO 639-1 code of ``sentence2`` (None when unknown).
        source: the file path(s) read (two joined by `` + `` for cross-lingual pairs) or the hub id.
        gold_min: lowest score of the gold scale.
        gold_max: highest score of the gold scale.
        frame: one row per kept pair, in source order: ``pair_id`` (0-based row of the source, header not
            counted; gaps where rows were skipped), ``sentence1``, ``sentence2``, ``gold`` (float, original
            scale), ``gold_norm`` (gold mapped to 0-1 over the scale), then the source's other columns under
            their own names (prefixed ``source_`` where a name clashes, e.g. SICK's ``pair_id`` becomes
            ``source_pair_id``). CSV/TSV columns are kept as text, exactly as in the file.
        skipped: rows dropped with ``on_bad="skip"`` (or ``duplicates="skip"``), by reason.
        duplicates_kept: rows kept although they repeat an earlier (sentence1, sentence2) pair.
        limited_from: with a limit that cut the dataset, how many pairs it had before (the key then ends
            in ``:first<N>``, so a run over a prefix never passes for one over the whole dataset).
    """

    key: str
    name: str
    split: str
    lang_a: str | None
    lang_b: str | None
    source: str
    gold_min: float
    gold_max: float
    frame: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates_kept: int = 0
    limited_from: int | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, limit: int | None) -> PairDataset:
        """The first ``limit`` pairs (all when None or when there are no more), keyed ``<key>:first<limit>``."""
        if limit is None:
            return self
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise DatasetError(f"limit must be a positive integer, got {limit!r}")
        if limit >= len(self):
            return self
        return replace(self, key=f"{self.key}:first{int(limit)}", frame=self.frame.iloc[:limit].reset_index(drop=True),
                       limited_from=self.limited_from or len(self))


def default_data_dir() -> Path | None:
    """The data directory: ``$SIMLENS_DATA_DIR`` if set, else ``<repo>/../shared/data`` if it exists, else None."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return _DEFAULT_DATA_DIR if _DEFAULT_DATA_DIR.is_dir() else None


def available_datasets(data_dir: str | Path | None = None) -> list[str]:
    """Specs of the built-in benchmark splits present in the data directory (one language per mSTSb spec)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if root is None or not root.is_dir():
        return []
    specs = []
    for name, info in BUILTINS.items():
        langs = MSTSB_LANGS if name == "mstsb" else (None,)
        for lang in langs:
            for split in info.splits:
                if _builtin_path(root, name, lang, split).is_file():
                    specs.append(f"{name}:{lang}:{split}" if lang else f"{name}:{split}")
    return specs


def load_dataset(
    spec: str | Path,
    data_dir: str | Path | None = None,
    columns: dict[str, str] | None = None,
    lang: str | None = None,
    on_bad: str = "error",
    gold_range: tuple[float, float] | None = None,
    duplicates: str | None = None,
    limit: int | None = None,
) -> PairDataset:
    """Load and validate a dataset.

    Args:
        spec: ``stsb[:split]``, ``sick[:split]``, ``biosses[:all]``, ``mstsb:<lang>[:split]``,
            ``mstsb:<lang1>-<lang2>[:split]``, ``hf:<owner>/<name>[:split]`` (default split: test), or a path
            to a .csv/.tsv/.parquet/.jsonl/.json (JSON lines, or one JSON array) file.
        data_dir: folder holding the offline benchmark copies (default: ``default_data_dir()``).
        columns: for files and unknown hub ids, which source columns hold ``sentence1``, ``sentence2`` and
            ``score`` (default: those names).
        lang: language of a file or of an unknown hub dataset; required for ``hf:PhilipMay/stsb_multi_mt``;
            for built-ins it may only repeat the spec's language.
        on_bad: ``"error"`` raises a ``DatasetError`` listing the bad rows by reason; ``"skip"`` drops them,
            counts them in ``skipped`` and warns.
        gold_range: gold scale (min, max) of a file (default: inferred from the data, with a warning) or of an
            unknown hub dataset (required there). Built-in datasets have a fixed scale.
        duplicates: what to do with rows repeating an earlier (sentence1, sentence2) pair: ``"error"``,
            ``"skip"`` (keep the first) or ``"keep"``. Default: ``"keep"`` for the built-in benchmarks and known
            hub ids, whose published splits contain such repeats, and ``on_bad`` for other sources.
        limit: keep only the first ``limit`` valid pairs (see ``PairDataset.head``); every row is still validated.
    """
    if on_bad not in ON_BAD:
        raise DatasetError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    if duplicates not in (None, *DUPLICATE_POLICIES):
        raise DatasetError(f"duplicates must be one of {DUPLICATE_POLICIES} or None, got {duplicates!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer, got {limit!r}")
    options = _Options(on_bad, duplicates)
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise DatasetError(f"dataset must be a spec or a file path, got {spec!r}")
    if Path(spec).is_dir():
        raise DatasetError(f"{spec} is a directory: pass a {'/'.join(FILE_SUFFIXES)} file or a built-in spec "
                           "such as stsb:test")
    if isinstance(spec, Path) or Path(spec).suffix.lower() in FILE_SUFFIXES:
        dataset = _load_file(Path(spec), columns, lang, gold_range, options)
    elif spec.startswith("hf:"):
        dataset = _load_hub(spec, columns, lang, gold_range, options)
    else:
        dataset = _load_builtin(spec, data_dir, columns, lang, gold_range, options)
    return dataset.head(limit)


def fetch_hub_frame(hub_id: str, config: str | None, split: str) -> pd.DataFrame:
    """One split of a Hugging Face hub dataset as a DataFrame (needs the ``datasets`` package and network)."""
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(_hub_unavailable(hub_id, "the `datasets` package is not installed")) from exc
    try:
        loaded = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # offline, unknown id/split, auth: the hub library raises many unrelated types
        raise DatasetError(_hub_unavailable(hub_id, f"{type(exc).__name__}: {exc}")) from exc
    return loaded.to_pandas()


@dataclass(frozen=True)
class _Options:
    on_bad: str
    duplicates: str | None

    def duplicate_policy(self, benchmark: bool) -> str:
        if self.duplicates is not None:
            return self.duplicates
        return "keep" if benchmark else self.on_bad

    def control_policy(self, benchmark: bool) -> str:
        """A text with a control character: bad input, but kept (with a warning) in a published benchmark split
        that has one (STS-b train row 2918 holds U+0012), unless ``on_bad`` is ``skip``."""
        return "keep" if benchmark and self.on_bad == "error" else self.on_bad


def _hub_unavailable(hub_id: str, reason: str) -> str:
    return (
        f"cannot load hub dataset {hub_id!r}: {reason}. Hub datasets need network access and "
        f"`pip install datasets`; for local copies {_DATA_DIR_HINT} (built-in benchmarks) "
        f"or pass a {'/'.join(FILE_SUFFIXES)} file"
    )


def _builtin_path(root: Path, name: str, lang: str | None, split: str) -> Path:
    folder = root / name / lang if lang else root / name
    return folder / f"{split}.tsv"


def _unknown_dataset(name: str, data_dir: str | Path | None) -> DatasetError:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    found = available_datasets(root)
    where = f"available in {root}: {', '.join(found)}" if found else f"none found locally ({_DATA_DIR_HINT})"
    return DatasetError(
        f"unknown dataset {name!r}. Built-in names: {', '.join(BUILTINS)} ({where}); hub ids: "
        f"hf:<owner>/<name>[:<split>] (built in: {', '.join(HUB_DATASETS)}); or a path to a "
        f"{'/'.join(FILE_SUFFIXES)} file"
    )


def _load_builtin(
    spec: str,
    data_dir: str | Path | None,
    columns: dict[str, str] | None,
    lang: str | None,
    gold_range: tuple[float, float] | None,
    options: _Options,
) -> PairDataset:
    name, *rest = spec.split(":")
    if name not in BUILTINS:
        raise _unknown_dataset(name, data_dir)
    if columns is not None or gold_range is not None:
        raise DatasetError(
            f"{name} has fixed columns and gold scale: columns/gold_range apply to files and hub ids"
        )
    info = BUILTINS[name]
    lang_a = lang_b = "en"
    if name == "mstsb":
        if not rest:
            raise DatasetError(
                f"mstsb needs a language: mstsb:<lang>[:<split>] or mstsb:<lang1>-<lang2>[:<split>], lang in {MSTSB_LANGS}"
            )
        pair, *rest = rest
        lang_a, _, lang_b = pair.partition("-")
        lang_b = lang_b or lang_a
        bad = [code for code in (lang_a, lang_b) if code not in MSTSB_LANGS]
        if bad:
            raise DatasetError(
                f"mstsb has no language {bad[0]!r} in {spec!r}; languages: {', '.join(MSTSB_LANGS)}"
            )
    if len(rest) > 1:
        raise DatasetError(f"malformed dataset spec {spec!r}: too many ':' parts")
    split = rest[0] if rest else info.default_split
    if split not in info.splits:
        raise DatasetError(f"{name} has no split {split!r} (in {spec!r}); splits: {', '.join(info.splits)}")
    spec_lang = lang_a if lang_a == lang_b else f"{lang_a}-{lang_b}"
    if lang is not None and lang != spec_lang:
        raise DatasetError(f"lang={lang!r} contradicts {spec!r}, whose language is {spec_lang!r}")

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if root is None:
        raise DatasetError(
            f"no data directory for {spec!r}: {_DATA_DIR_HINT} (default {_DEFAULT_DATA_DIR} does not exist)"
        )
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist: {_DATA_DIR_HINT}")
    mstsb = name == "mstsb"
    path_a = _builtin_path(root, name, lang_a if mstsb else None, split)
    path_b = _builtin_path(root, name, lang_b if mstsb else None, split)
    for path in dict.fromkeys((path_a, path_b)):
        if not path.is_file():
            raise DatasetError(
                f"{path} not found for {spec!r}: {_DATA_DIR_HINT} to the folder holding {', '.join(BUILTINS)}/"
            )
    roles = dict(zip(ROLES, ROLES, strict=True))
    table = read_table(path_a)
    source = str(path_a)
    key_lang = f"{spec_lang}:" if mstsb else ""
    if path_b != path_a:
        table = _cross_lingual(table, read_table(path_b), path_a, path_b)
        source = f"{path_a} + {path_b}"
    identity = dict(key=f"{name}:{key_lang}{split}", name=name, split=split, lang_a=lang_a, lang_b=lang_b,
                    source=source)
    return _build(table, roles, source, info.gold_range, options.duplicate_policy(benchmark=True), options, identity,
                  benchmark=True)


def _cross_lingual(table_a: pd.DataFrame, table_b: pd.DataFrame, path_a: Path, path_b: Path) -> pd.DataFrame:
    """sentence1 from ``table_a``, sentence2 from ``table_b``, gold from ``table_a``; rows aligned by position."""
    for table, path in ((table_a, path_a), (table_b, path_b)):
        require_columns(table, ROLES, str(path))
    if len(table_a) != len(table_b):
        raise DatasetError(
            f"cannot pair {path_a} ({len(table_a)} rows) with {path_b} ({len(table_b)} rows): row counts differ"
        )
    gold_a = pd.to_numeric(table_a["score"], errors="coerce").to_numpy(dtype=float)
    gold_b = pd.to_numeric(table_b["score"], errors="coerce").to_numpy(dtype=float)
    differ = np.flatnonzero(~((gold_a == gold_b) | (np.isnan(gold_a) & np.isnan(gold_b))))
    if differ.size:
        raise DatasetError(
            f"cannot pair {path_a} with {path_b}: gold scores differ in {differ.size} rows, e.g. rows "
            f"{shown_rows(differ)} (0-based), so the rows are not aligned"
        )
    return pd.DataFrame(
        {"sentence1": table_a["sentence1"], "sentence2": table_b["sentence2"], "score": table_a["score"]}
    )


def _load_file(
    path: Path,
    columns: dict[str, str] | None,
    lang: str | None,
    gold_range: tuple[float, float] | None,
    options: _Options,
) -> PairDataset:
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise DatasetError(
            f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(FILE_SUFFIXES)}"
        )
    if not path.is_file():
        raise DatasetError(f"file {path} not found (for the built-in benchmarks {_DATA_DIR_HINT})")
    identity = dict(key=f"file:{path.stem}:all", name=path.stem, split="all", lang_a=lang, lang_b=lang,
                    source=str(path))
    return _build(read_table(path), _roles(columns), str(path), gold_range, options.duplicate_policy(benchmark=False), options, identity)


def _load_hub(
    spec: str,
    columns: dict[str, str] | None,
    lang: str | None,
    gold_range: tuple[float, float] | None,
    options: _Options,
) -> PairDataset:
    hub_id, _, split = spec.removeprefix("hf:").partition(":")
    split = split or "test"
    owner, _, repo = hub_id.partition("/")
    if not owner or not repo or "/" in repo or ":" in split:
        raise DatasetError(f"malformed hub spec {spec!r}: write hf:<owner>/<name>[:<split>]")
    info = HUB_DATASETS.get(hub_id)
    config = None
    if info is None:
        if columns is None or gold_range is None:
            raise DatasetError(
                f"hub dataset {hub_id!r} is not built in ({', '.join(HUB_DATASETS)}): pass columns="
                "{'sentence1': ..., 'sentence2': ..., 'score': ...} and gold_range=(min, max)"
            )
        roles = _roles(columns)
    else:
        if columns is not None or gold_range is not None:
            raise DatasetError(
                f"hub dataset {hub_id!r} has built-in columns and gold scale: drop columns/gold_range"
            )
        roles = {"sentence1": "sentence1", "sentence2": "sentence2", "score": info.score_column}
        gold_range = info.gold_range
        if info.configs:
            if lang not in info.configs:
                raise DatasetError(
                    f"hub dataset {hub_id!r} needs lang, one of {', '.join(info.configs)} (got {lang!r})"
                )
            config = lang
        elif lang is not None and lang != info.lang:
            raise DatasetError(
                f"lang={lang!r} contradicts hub dataset {hub_id!r}, whose language is {info.lang!r}"
            )
        else:
            lang = info.lang
    table = fetch_hub_frame(hub_id, config, split)
    identity = dict(key=f"hf:{hub_id}:{config + ':' if config else ''}{split}", name=hub_id, split=split, lang_a=lang, lang_b=lang,
                    source=hub_id)
    return _build(table, roles, f"hub dataset {hub_id}", gold_range, options.duplicate_policy(benchmark=info is not None), options, identity,
                  benchmark=info is not None)


def _roles(columns: dict[str, str] | None) -> dict[str, str]:
    """Source column for each role, from the caller's mapping over the defaults."""
    roles = dict(zip(ROLES, ROLES, strict=True))
    unknown = sorted(set(columns or {}) - set(ROLES))
    if unknown:
        raise DatasetError(f"columns has unknown key(s) {unknown}; allowed keys: {', '.join(ROLES)}")
    roles.update(columns or {})
    if len(set(roles.values())) < len(ROLES):
        raise DatasetError(f"columns maps two roles to the same source column: {roles}")
    return roles


def _build(table: pd.DataFrame, roles: dict[str, str], where: str, gold_range: tuple[float, float] | None,
           duplicate_policy: str, options: _Options, identity: dict[str, str | None],
           benchmark: bool = False) -> PairDataset:
    """The dataset of a source ``table``, validated (``where`` names the source in messages; ``benchmark``: a
    published split)."""
    rows = validate_rows(table, roles, where, gold_range, duplicate_policy, options.on_bad,
                         options.control_policy(benchmark))
    return PairDataset(**identity, gold_min=rows.gold_min, gold_max=rows.gold_max, frame=rows.frame,
                       skipped=rows.skipped, duplicates_kept=rows.duplicates_kept)
