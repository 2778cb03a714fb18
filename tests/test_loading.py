"""core/loading.py: a model or dataset given by name or as an object resolves the same way everywhere."""

from __future__ import annotations

import warnings

import pytest
from test_precompute import write_pairs

from core.datasets import DatasetError, PairDataset
from core.loading import as_dataset, as_model, model_name
from core.models import SimilarityModel


def test_a_loaded_object_passes_through_and_a_name_is_loaded(tmp_path, tiny_models, tiny_folders):
    model = tiny_models["bert"]
    assert as_model(model) is model and model_name(model) == model.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = as_model(str(tiny_folders["bert"]), device="cpu", quiet=True)
    assert isinstance(loaded, SimilarityModel) and loaded is not model and loaded.model_id == model.model_id
    assert model_name(str(tiny_folders["bert"])) == str(tiny_folders["bert"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = as_dataset(str(write_pairs(tmp_path / "pairs.tsv", 3)))
    assert isinstance(ds, PairDataset) and len(ds.frame) == 3 and as_dataset(ds) is ds


def test_a_bad_name_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="nope"):
        as_dataset("nope:test", data_dir=tmp_path)
    with pytest.raises((OSError, ValueError)):
        as_model(str(tmp_path / "no-such-model"))
