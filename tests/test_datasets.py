"""Dataset loading: the offline benchmark copies, user files, hub ids, and every kind of bad input."""

from __future__ import annotations

import csv
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import datasets as ds
from core.datasets import DatasetError, PairDataset, available_datasets, default_data_dir, load_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (SHARED_DATA / "stsb" / "test.tsv").is_file():
        pytest.skip(f"offline benchmark data not found in {SHARED_DATA}")
    return SHARED_DATA


def read_reference(path: Path) -> list[dict[str, str]]:
    """The file as the data README says to read it, independently of the loader."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_tsv(
    path: Path, rows: list[list[str]], header: tuple[str, ...] = ("sentence1", "sentence2", "score")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD_ROWS = [
    ["A cat sits.", "A cat is sitting.", "5"],
    ["A dog runs.", "A man cooks.", "0"],
    ["A boy sings.", "A boy talks.", "2.5"],
]


# --- built-in benchmarks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "key", "rows", "scale", "langs", "first"),
    [
        (
            "stsb:test",
            "stsb:test",
            1379,
            (0, 5),
            ("en", "en"),
            ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5),
        ),
        (
            "stsb",
            "stsb:test",
            1379,
            (0, 5),
            ("en", "en"),
            ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5),
        ),
        (
            "sick:trial",
            "sick:trial",
            495,
            (1, 5),
            ("en", "en"),
            (
                "The young boys are playing outdoors and the man is smiling nearby",
                "There is no boy playing outdoors and there is no man smiling",
                3.6,
            ),
        ),
        (
            "biosses",
            "biosses:all",
            100,
            (0, 4),
            ("en", "en"),
            (
                "It has recently been shown that Craf is essential for Kras G12D-induced NSCLC.",
                "It has recently become evident that Craf is essential for the onset of Kras-driven non-small cell lung cancer.",
                4.0,
            ),
        ),
        (
            "mstsb:de:test",
            "mstsb:de:test",
            1379,
            (0, 5),
            ("de", "de"),
            ("Ein Mädchen frisiert ihr Haar.", "Ein Mädchen bürstet sich die Haare.", 2.5),
        ),
    ],
)
def test_builtin_rows_scale_and_first_pair(data_dir, spec, key, rows, scale, langs, first):
    dataset = load_dataset(spec, data_dir=data_dir)
    assert isinstance(dataset, PairDataset)
    assert (dataset.key, len(dataset), (dataset.gold_min, dataset.gold_max)) == (key, rows, scale)
    assert (dataset.lang_a, dataset.lang_b) == langs
    frame = dataset.frame
    assert list(frame.columns[:5]) == ["pair_id", "sentence1", "sentence2", "gold", "gold_norm"]
    assert frame["pair_id"].tolist() == list(range(rows))
    assert (frame.loc[0, "sentence1"], frame.loc[0, "sentence2"], frame.loc[0, "gold"]) == first
    assert frame.loc[0, "gold_norm"] == pytest.approx((first[2] - scale[0]) / (scale[1] - scale[0]))
    assert frame["gold"].min() >= scale[0] and frame["gold"].max() <= scale[1]
    assert dataset.skipped == {}


def test_metadata_columns_are_kept_and_clashes_renamed(data_dir):
    stsb = load_dataset("stsb:test", data_dir=data_dir).frame
    assert stsb.loc[0, ["genre", "source_file", "year", "source_id"]].tolist() == [
        "main-captions",
        "MSRvid",
        "2012test",
        "0024",
    ]
    sick = load_dataset("sick:trial", data_dir=data_dir).frame
    assert sick.loc[0, "source_pair_id"] == "4"  # SICK's own pair_id, not our row number
    assert sick.loc[0, "entailment_label"] == "CONTRADICTION"


def test_whole_file_matches_the_csv_module(data_dir):
    reference = read_reference(data_dir / "stsb" / "train.tsv")
    frame = load_dataset("stsb:train", data_dir=data_dir).frame
    assert frame["sentence1"].tolist() == [row["sentence1"] for row in reference]
    assert frame["sentence2"].tolist() == [row["sentence2"] for row in reference]
    assert frame["gold"].tolist() == [float(row["score"]) for row in reference]


def test_quoted_field_reads_correctly(data_dir):
    frame = load_dataset("stsb:train", data_dir=data_dir).frame
    hit = frame[frame["sentence1"] == 'A dog in a "superman" shirt sleeps on a blanket.']
    assert len(hit) == 1
    assert hit["sentence2"].item() == "A brown dog in a Superman shirt is laying on a blue blanket."
    assert hit["gold"].item() == 4.0
    assert hit["source_id"].item() == "0096"


def test_builtin_duplicates_are_kept_by_default_and_can_be_skipped(data_dir):
    kept = load_dataset("stsb:test", data_dir=data_dir)
    assert kept.duplicates_kept == 1  # rows 9 and 10 are the same pair in the official split
    assert (
        kept.frame.loc[9, ["sentence1", "sentence2"]].tolist()
        == kept.frame.loc[10, ["sentence1", "sentence2"]].tolist()
    )
    with pytest.warns(UserWarning, match="skipped 1 of 1379 rows"):
        dropped = load_dataset("stsb:test", data_dir=data_dir, duplicates="skip")
    assert len(dropped) == 1378 and dropped.skipped == {"duplicate pair": 1}
    assert 9 in dropped.frame["pair_id"].tolist() and 10 not in dropped.frame["pair_id"].tolist()
    with pytest.raises(DatasetError, match=r"test\.tsv.*duplicate pair: 1 row\(s\), e\.g\. 10"):
        load_dataset("stsb:test", data_dir=data_dir, duplicates="error")


def test_cross_lingual_pairs_sentence1_and_sentence2_from_their_languages(data_dir):
    pair = load_dataset("mstsb:en-de:test", data_dir=data_dir)
    en = read_reference(data_dir / "mstsb" / "en" / "test.tsv")
    de = read_reference(data_dir / "mstsb" / "de" / "test.tsv")
    assert (pair.key, pair.lang_a, pair.lang_b, len(pair)) == ("mstsb:en-de:test", "en", "de", 1379)
    assert pair.frame["sentence1"].tolist() == [row["sentence1"] for row in en]
    assert pair.frame["sentence2"].tolist() == [row["sentence2"] for row in de]
    assert (
        pair.frame["gold"].tolist()
        == [float(row["score"]) for row in en]
        == [float(row["score"]) for row in de]
    )
    assert pair.frame.loc[0, "sentence2"] == "Ein Mädchen bürstet sich die Haare."


def test_cross_lingual_rejects_unaligned_files(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / "mstsb" / lang).mkdir(parents=True)
    write_tsv(tmp_path / "mstsb" / "en" / "test.tsv", GOOD_ROWS)
    write_tsv(tmp_path / "mstsb" / "de" / "test.tsv", GOOD_ROWS[:2])
    with pytest.raises(DatasetError, match=r"en/test\.tsv \(3 rows\).*de/test\.tsv \(2 rows\)"):
        load_dataset("mstsb:en-de:test", data_dir=tmp_path)
    write_tsv(
        tmp_path / "mstsb" / "de" / "test.tsv",
        [*GOOD_ROWS[:2], ["Ein Junge singt.", "Ein Junge spricht.", "3"]],
    )
    with pytest.raises(DatasetError, match=r"gold scores differ in 1 rows, e\.g\. rows 2"):
        load_dataset("mstsb:en-de:test", data_dir=tmp_path)


def test_available_datasets(data_dir, tmp_path):
    found = available_datasets(data_dir)
    assert len(found) == 3 + 3 + 1 + 10 * 3
    assert {"stsb:test", "sick:trial", "biosses:all", "mstsb:zh:dev"} <= set(found)
    assert available_datasets(tmp_path) == []
    (tmp_path / "sick").mkdir()
    write_tsv(tmp_path / "sick" / "trial.tsv", GOOD_ROWS)
    assert available_datasets(tmp_path) == ["sick:trial"]


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(ds.DATA_DIR_ENV)
    assert default_data_dir() == (SHARED_DATA if SHARED_DATA.is_dir() else None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:test", r"unknown dataset 'foo'.*stsb, sick, biosses, mstsb"),
        ("stsb:validation", r"stsb has no split 'validation'.*train, dev, test"),
        ("mstsb:xx:test", r"mstsb has no language 'xx'"),
        ("mstsb", r"mstsb needs a language"),
        ("stsb:test:extra", r"malformed dataset spec"),
    ],
)
def test_bad_specs(tmp_path, spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec, data_dir=tmp_path)


def test_missing_data_dir_and_file_name_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=rf"{re.escape(str(missing))}.*--data-dir.*SIMLENS_DATA_DIR"):
        load_dataset("stsb:test", data_dir=missing)
    with pytest.raises(
        DatasetError, match=rf"{re.escape(str(tmp_path / 'sick' / 'test.tsv'))} not found.*--data-dir"
    ):
        load_dataset("sick", data_dir=tmp_path)
    monkeypatch.delenv(ds.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(ds, "_DEFAULT_DATA_DIR", missing)
    with pytest.raises(
        DatasetError, match=r"no data directory for 'stsb:test'.*--data-dir.*SIMLENS_DATA_DIR"
    ):
        load_dataset("stsb:test")
    with pytest.raises(DatasetError, match=rf"file {re.escape(str(tmp_path / 'pairs.csv'))} not found"):
        load_dataset(str(tmp_path / "pairs.csv"))


def test_lang_must_agree_with_a_builtin_spec(data_dir):
    assert load_dataset("mstsb:fr:dev", data_dir=data_dir, lang="fr").lang_a == "fr"
    with pytest.raises(DatasetError, match="lang='de' contradicts 'stsb:test'"):
        load_dataset("stsb:test", data_dir=data_dir, lang="de")


# --- user files ---------------------------------------------------------------------------------------------

USER_RECORDS = [
    {"id": "q1", "text_a": "A cat sits.", "text_b": "A cat is sitting.", "label": 1.0},
    {"id": "q2", "text_a": "NA", "text_b": "null", "label": 0.0},
    {"id": "q3", "text_a": "A boy sings.", "text_b": "A boy talks.", "label": 0.25},
]
MAPPING = {"sentence1": "text_a", "sentence2": "text_b", "score": "label"}


def write_user_file(path: Path, records: list[dict]) -> Path:
    frame = pd.DataFrame(records)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_user_file_with_column_mapping(tmp_path, suffix):
    path = write_user_file(tmp_path / f"pairs{suffix}", USER_RECORDS)
    dataset = load_dataset(str(path), columns=MAPPING, lang="en", gold_range=(0, 1))
    assert (dataset.key, dataset.name, dataset.split, dataset.source) == (
        "file:pairs:all",
        "pairs",
        "all",
        str(path),
    )
    assert (dataset.lang_a, dataset.lang_b, dataset.gold_min, dataset.gold_max) == ("en", "en", 0.0, 1.0)
    frame = dataset.frame
    assert list(frame.columns) == ["pair_id", "sentence1", "sentence2", "gold", "gold_norm", "id"]
    assert frame["sentence1"].tolist() == ["A cat sits.", "NA", "A boy sings."]  # "NA" and "null" stay text
    assert frame["sentence2"].tolist() == ["A cat is sitting.", "null", "A boy talks."]
    assert frame["gold"].tolist() == [1.0, 0.0, 0.25]
    assert frame["id"].tolist() == ["q1", "q2", "q3"]


def test_na_like_sentences_stay_text_in_tsv(tmp_path):
    path = write_tsv(tmp_path / "na.tsv", [["NA", "null", "1"], ["None", "nan", "2"], ["N/A", "#N/A", "3"]])
    frame = load_dataset(path, gold_range=(0, 5)).frame
    assert frame["sentence1"].tolist() == ["NA", "None", "N/A"]
    assert frame["sentence2"].tolist() == ["null", "nan", "#N/A"]


def test_gold_norm_on_a_shifted_scale(tmp_path):
    path = write_tsv(
        tmp_path / "sick_like.tsv", [["a", "b", "1"], ["c", "d", "2"], ["e", "f", "4.2"], ["g", "h", "5"]]
    )
    dataset = load_dataset(path, gold_range=(1, 5))
    assert dataset.frame["gold_norm"].tolist() == pytest.approx([0.0, 0.25, 0.8, 1.0])


def test_gold_scale_is_inferred_with_a_warning(tmp_path):
    path = write_tsv(tmp_path / "scores.tsv", [["a", "b", "2"], ["c", "d", "8"], ["e", "f", "5"]])
    with pytest.warns(UserWarning, match=r"scores\.tsv: gold scale inferred from the data as \[2\.0, 8\.0\]"):
        dataset = load_dataset(path)
    assert (dataset.gold_min, dataset.gold_max) == (2.0, 8.0)
    assert dataset.frame["gold_norm"].tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_gold_range_must_be_ordered(tmp_path):
    path = write_tsv(tmp_path / "pairs.tsv", GOOD_ROWS)
    with pytest.raises(DatasetError, match="gold_range must be"):
        load_dataset(path, gold_range=(5, 0))


# --- bad input ----------------------------------------------------------------------------------------------


def test_missing_column_names_file_and_found_columns(tmp_path):
    path = write_tsv(tmp_path / "pairs.tsv", GOOD_ROWS, header=("sentence1", "sentence2", "label"))
    with pytest.raises(
        DatasetError,
        match=r"pairs\.tsv: missing column\(s\) \['score'\]; columns found: \['sentence1', 'sentence2', 'label'\]",
    ):
        load_dataset(path, gold_range=(0, 5))
    with pytest.raises(DatasetError, match=r"unknown key\(s\) \['gold'\]"):
        load_dataset(path, columns={"gold": "label"})


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (["A man.", "A woman.", "NaN"], "missing gold"),
        (["A man.", "A woman.", ""], "missing gold"),
        (["A man.", "A woman.", "high"], "non-numeric gold"),
        (["A man.", "A woman.", "inf"], "non-numeric gold"),
        (["A man.", "A woman.", "5.5"], "gold out of range"),
        (["A man.", "A woman.", "-0.1"], "gold out of range"),
        (["   ", "A woman.", "3"], "empty sentence"),
        (["A man.", "", "3"], "empty sentence"),
        (["\u200b\u200c\u200d\u2060\ufeff", "A woman.", "3"], "empty sentence"),  # zero-width only
        (["A man.", "\u3164\u00a0\u2800\u034f", "3"], "empty sentence"),  # fillers, no-break space, blank braille
        (["A man.", "A woman.", "0_5"], "non-numeric gold"),  # float() reads 5.0
        (["A man.", "A woman.", "\u0663"], "non-numeric gold"),  # Arabic-Indic 3: float() reads 3.0
        (["A man.", "A woman.", "\uff13"], "non-numeric gold"),  # full-width 3
        (["A man.", "A woman.", "2\u0665"], "non-numeric gold"),
        (["A cat sits.", "A cat is sitting.", "4"], "duplicate pair"),
    ],
)
def test_bad_row_errors_or_is_skipped(tmp_path, bad_row, reason):
    path = write_tsv(tmp_path / "bad.tsv", [GOOD_ROWS[0], GOOD_ROWS[1], bad_row, GOOD_ROWS[2]])
    with pytest.raises(DatasetError, match=rf"bad\.tsv: bad rows .*{reason}: 1 row\(s\), e\.g\. 2\b"):
        load_dataset(path, gold_range=(0, 5))
    with pytest.warns(UserWarning, match=rf"bad\.tsv: skipped 1 of 4 rows \(1 {reason}\)"):
        dataset = load_dataset(path, gold_range=(0, 5), on_bad="skip")
    assert dataset.skipped == {reason: 1}
    assert dataset.frame["pair_id"].tolist() == [0, 1, 3]
    assert dataset.frame["sentence1"].tolist() == [
        "A cat sits.",
        "A dog runs.",
        "A boy sings.",
    ]  # first duplicate kept


def test_several_bad_rows_are_all_reported_and_counted(tmp_path):
    rows = [
        GOOD_ROWS[0],
        ["x", "y", "9"],
        ["", "y", "1"],
        GOOD_ROWS[0],
        GOOD_ROWS[0],
        ["x", "y", "?"],
        GOOD_ROWS[1],
    ]
    path = write_tsv(tmp_path / "many.tsv", rows)
    with pytest.raises(DatasetError) as raised:
        load_dataset(path, gold_range=(0, 5))
    message = str(raised.value)
    for part in (
        "non-numeric gold: 1 row(s), e.g. 5",
        "gold out of range: 1 row(s), e.g. 1",
        "empty sentence: 1 row(s), e.g. 2",
        "duplicate pair: 2 row(s), e.g. 3, 4",
    ):
        assert part in message
    with pytest.warns(UserWarning):
        dataset = load_dataset(path, gold_range=(0, 5), on_bad="skip")
    assert dataset.skipped == {
        "non-numeric gold": 1,
        "gold out of range": 1,
        "empty sentence": 1,
        "duplicate pair": 2,
    }
    assert dataset.frame["pair_id"].tolist() == [0, 6]


def test_duplicates_can_be_kept_in_a_user_file(tmp_path):
    path = write_tsv(tmp_path / "dup.tsv", [GOOD_ROWS[0], GOOD_ROWS[0]])
    dataset = load_dataset(path, gold_range=(0, 5), duplicates="keep")
    assert (len(dataset), dataset.duplicates_kept, dataset.skipped) == (2, 1, {})


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_null_and_non_text_values(tmp_path, suffix):
    records = [
        {"sentence1": "A cat.", "sentence2": None, "score": 1.0},
        {"sentence1": "A dog.", "sentence2": "A wolf.", "score": None},
        {"sentence1": "A bird.", "sentence2": "A plane.", "score": 3.0},
    ]
    expected = {"missing gold": 1, "empty sentence": 1}
    if suffix == ".jsonl":  # Parquet columns cannot mix numbers and text
        records.append({"sentence1": 42, "sentence2": "A number.", "score": 2.0})
        expected["non-text sentence"] = 1
    path = write_user_file(tmp_path / f"nulls{suffix}", records)
    with pytest.warns(UserWarning, match="skipped"):
        dataset = load_dataset(path, gold_range=(0, 5), on_bad="skip")
    assert dataset.skipped == expected
    assert dataset.frame["sentence1"].tolist() == ["A bird."]
    assert dataset.frame["pair_id"].tolist() == [2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "ragged.tsv",
            "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\textra\n",
            r"line 3 has 4 fields but the header has 3",
        ),
        (
            "short.tsv",
            "sentence1\tsentence2\tscore\na\tb\t1\nc\td\n",
            r"line 3 has 2 fields but the header has 3",
        ),
        ("quote.csv", 'sentence1,sentence2,score\n"a,b,1\n', r"cannot parse .*quote\.csv"),
        ("empty.csv", "", r"the file is empty"),
        ("bad.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a",\n', r"line 2: "),
        ("list.jsonl", '["a", "b", 1]\n', r"record 1 is not a JSON object"),
        ("broken.parquet", "not parquet at all", r"cannot parse .*broken\.parquet"),
    ],
)
def test_unparseable_files_name_the_file_and_reason(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as raised:
        load_dataset(path, gold_range=(0, 5))
    assert str(raised.value).startswith(f"cannot parse {path}: ")


def test_unsupported_suffix_and_bad_options(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="on_bad must be one of"):
        load_dataset("stsb", on_bad="ignore")
    with pytest.raises(DatasetError, match="duplicates must be one of"):
        load_dataset("stsb", duplicates="drop")


# --- Hugging Face hub ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace the network loader; records the calls and serves the frame put in ``served``."""
    calls: list[tuple[str, str | None, str]] = []
    served: dict[str, pd.DataFrame] = {}

    def fetch(hub_id: str, config: str | None, split: str) -> pd.DataFrame:
        calls.append((hub_id, config, split))
        return served["frame"]

    monkeypatch.setattr(ds, "fetch_hub_frame", fetch)
    return calls, served


def test_hub_known_id_maps_columns_and_scale(fake_hub):
    calls, served = fake_hub
    served["frame"] = pd.DataFrame(
        {
            "sentence1": ["Ein Hund.", "Eine Katze."],
            "sentence2": ["Ein Wolf.", "Ein Auto."],
            "similarity_score": [4.0, 0.5],
        }
    )
    dataset = load_dataset("hf:PhilipMay/stsb_multi_mt:dev", lang="de")
    assert calls == [("PhilipMay/stsb_multi_mt", "de", "dev")]
    assert (dataset.key, dataset.source, dataset.lang_a, dataset.lang_b) == (
        "hf:PhilipMay/stsb_multi_mt:de:dev",
        "PhilipMay/stsb_multi_mt",
        "de",
        "de",
    )
    assert dataset.frame["gold"].tolist() == [4.0, 0.5]
    assert dataset.frame["gold_norm"].tolist() == pytest.approx([0.8, 0.1])
    with pytest.raises(DatasetError, match="needs lang"):
        load_dataset("hf:PhilipMay/stsb_multi_mt")


def test_hub_validation_applies(fake_hub):
    _, served = fake_hub
    served["frame"] = pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.5, 1.5]})
    with pytest.raises(
        DatasetError,
        match=r"hub dataset sentence-transformers/stsb: bad rows .*gold out of range: 1 row\(s\), e\.g\. 1",
    ):
        load_dataset("hf:sentence-transformers/stsb")
    served["frame"] = pd.DataFrame({"sentence1": ["a"], "sentence2": ["c"], "label": [0.5]})
    with pytest.raises(
        DatasetError,
        match=r"missing column\(s\) \['score'\]; columns found: \['sentence1', 'sentence2', 'label'\]",
    ):
        load_dataset("hf:mteb/sickr-sts")


def test_hub_unknown_id_needs_columns_and_gold_range(fake_hub):
    calls, served = fake_hub
    with pytest.raises(DatasetError, match=r"'someone/pairs' is not built in.*columns=.*gold_range"):
        load_dataset("hf:someone/pairs", columns={"score": "label"})
    served["frame"] = pd.DataFrame({"q": ["a", "b"], "d": ["c", "e"], "label": [3, 7], "lang": ["x", "y"]})
    dataset = load_dataset(
        "hf:someone/pairs:train",
        columns={"sentence1": "q", "sentence2": "d", "score": "label"},
        gold_range=(0, 10),
        lang="it",
    )
    assert calls == [("someone/pairs", None, "train")]
    assert (dataset.key, dataset.lang_a) == ("hf:someone/pairs:train", "it")
    assert dataset.frame[["sentence1", "sentence2", "gold", "gold_norm", "lang"]].values.tolist() == [
        ["a", "c", 3.0, 0.3, "x"],
        ["b", "e", 7.0, 0.7, "y"],
    ]


def test_hub_without_datasets_package_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DatasetError) as raised:
        load_dataset("hf:mteb/stsbenchmark-sts")
    message = str(raised.value)
    for part in ("'mteb/stsbenchmark-sts'", "not installed", "network", "pip install datasets", "--data-dir"):
        assert part in message


def test_hub_offline_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(
        DatasetError,
        match=r"'mteb/biosses-sts': ConnectionError: Couldn't reach.*network.*pip install datasets.*--data-dir",
    ):
        load_dataset("hf:mteb/biosses-sts")


def test_malformed_hub_spec():
    with pytest.raises(DatasetError, match="malformed hub spec"):
        load_dataset("hf:no-owner")


def test_frame_dtypes(tmp_path):
    frame = load_dataset(write_tsv(tmp_path / "t.tsv", GOOD_ROWS), gold_range=(0, 5)).frame
    assert frame["pair_id"].dtype == np.int64
    assert frame["gold"].dtype == np.float64 and frame["gold_norm"].dtype == np.float64


@pytest.mark.parametrize("gold", ["3", " 3 ", "+3", "3.", ".5", "2.5e0", "25E-1", "0.000"])
def test_ascii_decimal_gold_is_accepted(tmp_path, gold):
    path = write_tsv(tmp_path / "g.tsv", [GOOD_ROWS[0], ["A man.", "A woman.", gold]])
    assert load_dataset(path, gold_range=(0, 5)).frame["gold"].iloc[1] == float(gold)


@pytest.mark.parametrize("suffix,content", [
    (".tsv", "sentence1\tsentence2\tscore\n"),
    (".csv", "sentence1,sentence2,score\n\n"),
    (".json", "[]"),
    (".jsonl", "\n"),
    (".parquet", None),
])
def test_a_file_without_data_rows_is_an_error(tmp_path, suffix, content):
    path = tmp_path / f"empty{suffix}"
    if content is None:
        pd.DataFrame({"sentence1": pd.Series([], dtype=str), "sentence2": pd.Series([], dtype=str),
                      "score": pd.Series([], dtype=float)}).to_parquet(path)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(str(path))) as info:
        load_dataset(path, gold_range=(0, 5))
    assert "no data rows" in str(info.value) or "missing column" in str(info.value)
    if suffix in (".tsv", ".csv", ".parquet"):
        assert "no data rows" in str(info.value)


@pytest.mark.filterwarnings("error")
def test_every_row_skipped_is_an_error_not_an_empty_dataset(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [["A man.", "A woman.", "x"], ["\u200b", "A woman.", "1"]])
    with pytest.raises(DatasetError, match=r"bad\.tsv: every one of its 2 rows was skipped \(1 non-numeric gold, "
                                           r"1 empty sentence\); no pair is left"):
        load_dataset(path, gold_range=(0, 5), on_bad="skip")


def test_bad_row_message_names_the_cli_options(tmp_path):
    path = write_tsv(tmp_path / "bad.tsv", [GOOD_ROWS[0], ["A man.", "A woman.", "x"]])
    with pytest.raises(DatasetError, match=r"--on-bad skip .*--duplicates skip or keep"):
        load_dataset(path, gold_range=(0, 5))


def test_limit_keeps_the_first_pairs_and_says_so_in_the_key(tmp_path):
    rows = [[f"Sentence {k}.", f"Other {k}.", str(k % 5)] for k in range(20)] + [["A man.", "A woman.", "x"]]
    path = write_tsv(tmp_path / "many.tsv", rows)
    with pytest.warns(UserWarning, match="skipped 1 of 21"):
        limited = load_dataset(path, gold_range=(0, 5), limit=5, on_bad="skip")
    assert limited.key == "file:many:all:first5" and limited.limited_from == 20 and len(limited) == 5
    assert limited.frame["pair_id"].tolist() == [0, 1, 2, 3, 4]
    with pytest.warns(UserWarning):
        whole = load_dataset(path, gold_range=(0, 5), limit=20, on_bad="skip")
    assert whole.key == "file:many:all" and whole.limited_from is None and len(whole) == 20
    for bad in (0, -1, 1.5, True, "5"):
        with pytest.raises(DatasetError, match="limit must be a positive integer"):
            load_dataset(path, gold_range=(0, 5), limit=bad, on_bad="skip")


def test_a_directory_is_not_a_dataset(tmp_path):
    folder = tmp_path / "pairs.tsv"
    folder.mkdir()
    for spec in (folder, str(folder), str(tmp_path)):
        with pytest.raises(DatasetError, match=r"is a directory"):
            load_dataset(spec)
