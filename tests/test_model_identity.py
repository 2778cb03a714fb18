"""Model identity by content (docs/model-identity.md): one id for the same files by any name, path or copy,
another for any change that changes outputs; search with default settings; stores written with the name-based
ids of older SimLens keep working (search at once, runs and indexes after ``precompute migrate STORE``)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from core import load_model
from core.model_files import content_revision, legacy_model_id, legacy_revision, model_id_of
from core.models import from_parts
from core.safe_text import unliteral
from core.search import search_index
from core.store import Store
from core.store.index_search import IndexStore
from core.store.migrate import migrate_model_ids
from core.views.pairs import comparison_level
from precompute import cli

DEMO = ROOT / "data" / "demo_pairs.tsv"
TEXTS = ["A man is playing a guitar.", "A woman slices an onion.", "The cat sleeps on the sofa.",
         "Stock markets fell sharply today.", "Someone is cooking dinner."]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


# --------------------------------------------------------------------------------------------------
# one id per content
# --------------------------------------------------------------------------------------------------


def test_minilm_by_packaged_name_folder_and_copied_folder_has_one_id(minilm, tmp_path):
    by_path = _quiet(load_model, minilm.path, device="cpu")
    copy = _copy(minilm.path, tmp_path / "a copy of minilm")
    by_copy = _quiet(load_model, copy, device="cpu")
    assert minilm.name == "all-MiniLM-L6-v2" and by_copy.name == str(copy)  # the name stays a name
    assert minilm.model_id == by_path.model_id == by_copy.model_id
    assert minilm.revision == content_revision(copy)
    # a hub-style folder: symlinked files, a README, another framework's export and .bin copies SimLens never reads
    hub = tmp_path / "snapshot"
    hub.mkdir()
    for f in minilm.path.rglob("*"):
        if f.is_file():
            (hub / f.relative_to(minilm.path)).parent.mkdir(parents=True, exist_ok=True)
            (hub / f.relative_to(minilm.path)).symlink_to(f)
    (hub / "README.md").write_text("another card")
    (hub / "onnx").mkdir()
    (hub / "onnx" / "model.onnx").write_bytes(b"\0" * 16)
    (hub / "pytorch_model.bin").write_bytes(b"unread: transformers loads model.safetensors")
    assert content_revision(hub) == minilm.revision


def _tiny_copy(tiny_folders, tmp_path: Path, name: str) -> Path:
    return _copy(tiny_folders["bert"], tmp_path / name)


def test_a_changed_weight_byte_or_config_key_is_another_model(tiny_folders, tmp_path):
    base = _quiet(load_model, tiny_folders["bert"], device="cpu")
    assert _quiet(load_model, _tiny_copy(tiny_folders, tmp_path, "same"), device="cpu").model_id == base.model_id

    weights = _tiny_copy(tiny_folders, tmp_path, "weights")
    data = bytearray((weights / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's data; the file still loads
    (weights / "model.safetensors").write_bytes(bytes(data))
    assert _quiet(load_model, weights, device="cpu").model_id != base.model_id

    pooling = _tiny_copy(tiny_folders, tmp_path, "pooling")
    config = json.loads((pooling / "1_Pooling" / "config.json").read_text())
    config.pop("pooling_mode", None)
    config.update(pooling_mode="cls")
    (pooling / "1_Pooling" / "config.json").write_text(json.dumps(config))
    changed = _quiet(load_model, pooling, device="cpu")
    assert changed.pooling == "cls" and changed.model_id != base.model_id

    encoder = _tiny_copy(tiny_folders, tmp_path, "encoder")
    config = json.loads((encoder / "config.json").read_text())
    (encoder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-3}))
    assert content_revision(encoder) != base.revision

    tokenizer = _tiny_copy(tiny_folders, tmp_path, "tokenizer")
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    assert content_revision(tokenizer) != base.revision


def test_provenance_and_json_layout_do_not_change_the_id(tiny_folders, tmp_path):
    base = content_revision(tiny_folders["bert"])
    saved = _tiny_copy(tiny_folders, tmp_path, "resaved")
    config = json.loads((saved / "config.json").read_text())
    config.update(transformers_version="0.0.1", _name_or_path="/somewhere/else")
    (saved / "config.json").write_text(json.dumps(dict(reversed(list(config.items()))), indent=4))
    (saved / "README.md").write_text("# a model card")
    assert content_revision(saved) == base


def test_output_changing_options_are_variants_with_their_own_ids(tiny_folders, tiny_models, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in tiny_folders["bert"].iterdir():  # the Transformer alone: a plain Hugging Face folder
        if f.is_file() and f.name not in ("modules.json", "sentence_bert_config.json",
                                          "config_sentence_transformers.json"):
            shutil.copy(f, plain / f.name)
    mean = _quiet(load_model, plain, device="cpu")
    cls = _quiet(load_model, plain, device="cpu", pooling="cls")
    assert mean.variant == "" and cls.variant == "pooling=cls" and mean.model_id != cls.model_id
    assert _quiet(load_model, plain, device="cpu", pooling="mean").model_id == mean.model_id
    model = tiny_models["bert"]
    prompted = model.with_prompts("query: ", None)
    assert prompted.model_id != model.model_id
    assert prompted.with_prompts(None, None).model_id == model.model_id
    assert prompted.model_id == model_id_of(model.revision, 'prompts=["query: ", ""]')


def test_a_model_without_a_folder_is_identified_by_its_parameters(tiny_models):
    model = tiny_models["bert"]
    made = [from_parts(name, Path("nowhere"), model.encoder, model.tokenizer, device="cpu") for name in ("a", "b")]
    assert made[0].model_id == made[1].model_id and made[0].revision.startswith("mem-")
    param = next(model.encoder.parameters())
    saved = param.data.clone()
    try:
        param.data.view(-1)[0] += 1
        other = from_parts("a", Path("nowhere"), model.encoder, model.tokenizer, device="cpu")
    finally:
        param.data.copy_(saved)
    assert other.model_id != made[0].model_id


# --------------------------------------------------------------------------------------------------
# search with default settings
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_index(tmp_path_factory, minilm) -> Path:
    """A store with an index built by ``precompute index`` with the default model (by its packaged name)."""
    root = tmp_path_factory.mktemp("default_index")
    (root / "corpus.txt").write_text("\n".join(TEXTS) + "\n")
    rc = _quiet(cli.main, ["index", "--corpus", str(root / "corpus.txt"), "--store", str(root / "store")])
    assert rc == 0
    return root / "store"


def test_index_then_search_with_defaults_returns_hits_in_the_cli(default_index, minilm, capsys):
    record = IndexStore(default_index).indexes().iloc[0]
    assert record["model_name"] == "all-MiniLM-L6-v2" and record["model_id"] == minilm.model_id
    capsys.readouterr()
    rc = _quiet(cli.main, ["search", "--query", "someone plays music", "--k", "2", "--store", str(default_index)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "A man is playing a guitar." in out.out.splitlines()[1] and out.out.count("top pairs:") == 2


def test_index_then_search_with_defaults_returns_hits_on_the_search_page(default_index, monkeypatch):
    pytest.importorskip("streamlit.testing.v1")
    from test_search import _page

    at = _page(monkeypatch, str(default_index))
    at.text_input(key="sr_query").set_value("someone plays music")
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    hits = [unliteral(e.label) for e in at.expander if unliteral(e.label).startswith("#")]
    assert len(hits) == 5 and "guitar" in hits[0]


# --------------------------------------------------------------------------------------------------
# stores written with name-based ids
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def old_store(tiny_folders, tmp_path, monkeypatch):
    """A store written as older SimLens did: the tiny BERT by its folder's name, with the name-based id."""
    from core.datasets import load_dataset
    from precompute.index import build_index, file_corpus
    from precompute.runner import run

    folder = _copy(tiny_folders["bert"], tmp_path / "tiny-bert")
    with monkeypatch.context() as m:
        m.setattr("core.models.content_revision", legacy_revision)
        m.setattr("core.model_folders.content_revision", legacy_revision)
        m.setattr("core.models.SimilarityModel.model_id",
                  property(lambda self: legacy_model_id(self.name, self.path, self.variant)))
        model = _quiet(load_model, folder, device="cpu")
        small = tmp_path / "pairs.tsv"
        pd.read_csv(DEMO, sep="\t").head(6).to_csv(small, sep="\t", index=False)
        ds = _quiet(load_dataset, str(small), lang="en", gold_range=(0, 5))
        store = tmp_path / "store"
        run_id = _quiet(run, model, ds, store, chunk_size=8, progress=False).run_id
        (tmp_path / "corpus.txt").write_text("\n".join(TEXTS) + "\n")
        index_id = _quiet(build_index, model, file_corpus(tmp_path / "corpus.txt"), store, chunk_size=8,
                          progress=False).index_id
        old_id = model.model_id
    return {"store": store, "folder": folder, "dataset": ds, "run_id": run_id, "index_id": index_id,
            "old_id": old_id}


def test_an_old_index_is_searched_before_and_after_migration(old_store):
    model = _quiet(load_model, old_store["folder"], device="cpu")
    assert model.model_id != old_store["old_id"]
    before = _quiet(search_index, model, IndexStore(old_store["store"]), old_store["index_id"], "a guitar", k=2)
    assert before.hits and before.hits[0].passage == TEXTS[0]
    assert migrate_model_ids(old_store["store"]) == {old_store["old_id"]: model.model_id}
    assert IndexStore(old_store["store"]).index_info(old_store["index_id"])["model_id"] == model.model_id
    after = _quiet(search_index, model, IndexStore(old_store["store"]), old_store["index_id"], "a guitar", k=2)
    assert [h.passage for h in after.hits] == [h.passage for h in before.hits]
    assert migrate_model_ids(old_store["store"]) == {}  # again: nothing to do


def test_old_runs_meet_new_runs_of_the_same_model_after_migrate(old_store, capsys):
    from precompute.runner import run

    rc = _quiet(cli.main, ["migrate", str(old_store["store"])])
    assert rc == 0 and "migrated 1 model id(s)" in capsys.readouterr().out
    model = _quiet(load_model, Path(str(old_store["folder"])), device="cpu")
    new = _quiet(run, model, old_store["dataset"], old_store["store"], method="predict", chunk_size=8,
                 progress=False)
    with Store(old_store["store"]) as store:
        runs = store.runs().set_index("run_id")
        models = store.models()
    assert list(models["model_id"]) == [model.model_id] and models["revision"].iloc[0] == model.revision
    old, fresh = runs.loc[old_store["run_id"]], runs.loc[new.run_id]
    assert old["status"] == "done" and old["model_id"] == fresh["model_id"] == model.model_id
    assert comparison_level(old.to_dict(), fresh.to_dict()) == "token"  # the same model: compared token by token
    rc = _quiet(cli.main, ["list", "--store", str(old_store["store"])])
    out = capsys.readouterr().out
    assert rc == 0 and old_store["run_id"] in out and new.run_id in out
