"""The engine honours ``max_memory``: the peak RSS one explanation adds, measured in a fresh subprocess with
its own high-water mark (``VmHWM``), stays under the bound; the factors do not depend on it; ``autodiff="auto"`` takes the
cheaper mode per batch. The bound reaches the engine from the CLI (``--max-memory``, checked before anything
loads), runs and Ray workers; the Explain page caps tokens, steps and memory and says so. (Speed belongs to the
benchmarks: nothing here is timed.)"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import ROOT

from core.memory import (
    DEFAULT_MAX_MEMORY,
    EncoderShape,
    cheaper_mode,
    graph_bytes,
    mode_seconds,
    parse_memory,
    plan_batch,
    row_bytes,
)

MEASURE = r"""
import json, os, sys, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from core import explain, load_model
folder, method, steps, max_memory, autodiff, words = sys.argv[1:7]
steps = int(steps) or None
model = load_model(folder, device="cpu")
explain(model, "a short warm-up", "another one", method=method, steps=steps and 2, autodiff=autodiff)
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
text = " ".join(["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"] * 60)
a = " ".join(text.split()[: int(words)])
b = " ".join(text.split()[3 : 3 + int(words)])
exp = explain(model, a, b, method=method, steps=steps, max_memory=max_memory, autodiff=autodiff)
# VmHWM: this process's own peak (ru_maxrss would also count the pytest parent's size at fork, kept across exec)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"growth": peak - before, "tokens": [len(exp.tokens_a), len(exp.tokens_b)],
                  "matrix": exp.matrix.tolist()}))
"""

def measure(folder, method: str, max_memory: str, autodiff: str = "auto", words: int = 250, steps: int = 0) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, str(folder), method, str(steps), max_memory, autodiff,
                             str(words)], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method,autodiff,words,steps", [
    ("bilrp", "auto", 250, 0),
    ("hxp", "forward", 160, 0),
    ("hxp", "reverse", 120, 0),
    ("ij", "auto", 90, 4),
])
def test_one_explanation_stays_under_its_memory_bound(wide_model, method, autodiff, words, steps):
    bound = "96MiB"
    small = measure(wide_model, method, bound, autodiff, words, steps)
    assert min(small["tokens"]) >= words  # long texts, not truncated away
    assert small["growth"] <= parse_memory(bound), f"peak grew by {small['growth'] / 2**20:.0f} MiB > {bound}"
    roomy = measure(wide_model, method, "4GiB", autodiff, words, steps)
    np.testing.assert_allclose(small["matrix"], roomy["matrix"], rtol=1e-4, atol=1e-7)


def test_the_bound_changes_the_plan_not_the_factors(tiny_models):
    from core import compute_factors

    model = tiny_models["bert"]
    texts = ["A man is playing a guitar on the stage.", "A woman slices an onion.", "Two dogs run."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, steps in (("bilrp", None), ("ij", 8)):
            roomy = compute_factors(model, texts, method=method, steps=steps)
            tight = compute_factors(model, texts, method=method, steps=steps, max_memory="64MiB", max_rows=3)
            for a, b in zip(roomy, tight, strict=True):
                np.testing.assert_allclose(a.factor, b.factor, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("value,size", [(1 << 30, 1 << 30), ("2GB", 2 * 10**9), ("1.5 GiB", 3 << 29),
                                        ("800MB", 8 * 10**8), ("512mib", 1 << 29), (" 3g ", 3 * 10**9)])
def test_parse_memory(value, size):
    assert parse_memory(value) == size


@pytest.mark.parametrize("value", ["", "2 GBs", "-1GB", "1e9", "١GB", True, None, "10MB", float("inf")])
def test_parse_memory_rejects(value):
    with pytest.raises(ValueError, match="max_memory"):
        parse_memory(value)


def test_plan_fits_the_bound_and_refuses_what_cannot_fit():
    shape = EncoderShape(hidden=768, intermediate=3072, heads=12, dims=768)
    for seq in (8, 64, 256, 512):  # the default fits any length MPNet takes, in the mode auto picks
        for mode in ("auto", "forward", "reverse"):
            if mode == "reverse" and seq == 512:  # a 12-layer graph of 512 tokens: more than the default
                with pytest.raises(ValueError, match="raise max_memory or shorten the text"):
                    plan_batch(shape, seq, layers=12, n_points=64, autodiff=mode)
                continue
            plan = plan_batch(shape, seq, layers=12, n_points=64, autodiff=mode, max_memory=DEFAULT_MAX_MEMORY)
            expected = cheaper_mode(shape, seq, 12, 64) if mode == "auto" else mode
            if (seq, expected) == (512, "reverse"):  # cheaper, but only forward mode fits: auto falls back
                expected = "forward"
            assert plan.mode == expected
            assert plan.estimate <= DEFAULT_MAX_MEMORY and plan.max_rows >= plan.max_sentences >= 1
    with pytest.raises(ValueError, match="too small for one sequence of 512 tokens in reverse mode"):
        plan_batch(shape, 512, layers=12, n_points=1, autodiff="reverse", max_memory=parse_memory("64MiB"))
    # more memory, more rows per pass
    assert plan_batch(shape, 256, 12, 1, "forward", 4 << 30).max_rows > plan_batch(shape, 256, 12, 1, "forward").max_rows
    # reverse mode holds the whole graph (12 layers) besides its rows; forward mode one layer's tangents per row
    assert graph_bytes(shape, 512, 12) + row_bytes(shape, 512, "reverse") > 4 * row_bytes(shape, 512, "forward")


MINILM = EncoderShape(hidden=384, intermediate=1536, heads=12, dims=384)
#: The faster mode measured on this CPU by bench/bench_modes.py (README "Forward vs reverse mode against length"):
#: (shape, layers, {tokens: faster mode}) for MiniLM and random BERTs of other widths (heads of 64, MLP 4 x width),
#: leaving out the lengths where the two modes measured within noise of each other.
MEASURED_FASTER = [
    (MINILM, 6, {8: "forward", 64: "forward", 128: "forward", 192: "forward", 224: "forward", 256: "reverse",
                 384: "reverse", 512: "reverse"}),
    (EncoderShape(hidden=128, intermediate=512, heads=2, dims=128), 2, {64: "forward", 128: "reverse", 192: "reverse"}),
    (EncoderShape(hidden=256, intermediate=1024, heads=4, dims=256), 2,
     {96: "forward", 128: "forward", 192: "reverse", 224: "reverse"}),
    (EncoderShape(hidden=768, intermediate=3072, heads=12, dims=768), 1, {320: "forward"}),  # not in the fit
]


@pytest.mark.parametrize("shape,layers,faster", MEASURED_FASTER)
def test_auto_takes_the_mode_measured_faster(shape, layers, faster):
    assert {seq: cheaper_mode(shape, seq, layers) for seq in faster} == faster


def test_rows_of_a_batch_share_each_pass_cost():
    """More rows per batch (sentences x integration points) spread each backward pass's fixed cost, so reverse
    mode wins from fewer tokens; forward mode's estimate grows faster with the tokens than reverse mode's."""

    def crossover(rows: int) -> int:
        return next(seq for seq in range(1, 4096) if cheaper_mode(MINILM, seq, 6, rows) == "reverse")

    assert crossover(64) < crossover(1) <= 256
    ratios = [(s := mode_seconds(MINILM, seq, 6))["forward"] / s["reverse"] for seq in (32, 64, 128, 256, 512)]
    assert ratios == sorted(ratios) and ratios[0] < 0.2 and ratios[-1] > 2


@pytest.mark.slow
def test_auto_takes_forward_for_few_tokens_and_reverse_for_many(wide_model):
    from core import compute_factors, load_model

    shape = EncoderShape(hidden=128, intermediate=512, heads=8, dims=128)
    assert cheaper_mode(shape, 42, 2) == "forward" and cheaper_mode(shape, 202, 2) == "reverse"
    model = load_model(wide_model, device="cpu")  # 128 dims
    short, long = " ".join(["word"] * 40), " ".join(["word"] * 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the mode is chosen per batch (from its longest text): one text per call here
        auto = [compute_factors(model, [text], method="hxp")[0] for text in (short, long)]
        assert [f.autodiff for f in auto] == ["forward", "reverse"]
        for mode in ("forward", "reverse"):
            explicit = compute_factors(model, [short, long], method="hxp", autodiff=mode)
            assert {f.autodiff for f in explicit} == {mode}
            for a, b in zip(auto, explicit, strict=True):
                np.testing.assert_allclose(a.factor, b.factor, rtol=1e-4, atol=1e-7)


def test_plan_in_auto_mode_falls_back_to_the_mode_that_fits():
    """A 384-dim, 24-layer model at 512 tokens: reverse mode is cheaper, but its graph does not fit in 1 GiB."""
    shape = EncoderShape(hidden=384, intermediate=1536, heads=12, dims=384)
    assert cheaper_mode(shape, 512, 24) == "reverse"
    with pytest.raises(ValueError, match="too small"):
        plan_batch(shape, 512, layers=24, n_points=1, autodiff="reverse")
    assert plan_batch(shape, 512, layers=24, n_points=1, autodiff="auto").mode == "forward"


@pytest.mark.parametrize("options,message", [
    ({"max_memory": "10MB"}, "at least 64 MiB"), ({"max_memory": "lots"}, "max_memory must be"),
    ({"autodiff": "sideways"}, "autodiff must be one of"), ({"max_rows": 0}, "max_rows must be"),
    ({"batch_size": 0}, "batch_size must be"), ({"max_mem": "1GB"}, "unknown engine option"),
])
def test_bad_engine_options_are_named(tiny_models, options, message):
    from core import explain

    with pytest.raises(ValueError, match=message):
        explain(tiny_models["bert"], "A dog runs.", "A cat sits.", **options)


# ---- the bound travels: CLI -> run -> chunk job -> engine (also on a Ray worker) -----------------------


def write_pairs(path, n: int):
    import pandas as pd

    pd.DataFrame({"sentence1": [f"A dog runs {k} times." for k in range(n)],
                  "sentence2": [f"A cat sits on mat {k}." for k in range(n)],
                  "score": [float(k % 5) for k in range(n)]}).to_csv(path, sep="\t", index=False)
    return path


@pytest.mark.parametrize("value,message", [
    ("10MB", "expected at least 64 MiB, got '10MB'"), ("2 GBs", "a size like '2GB'"), ("١GB", "a size like"),
    ("=-1GB", "a size like '2GB'"), ("", "a size like"), ("=1e9", "a size like"),
])
def test_cli_rejects_a_bad_max_memory_in_one_line_before_loading(tmp_path, tiny_folders, capsys, value, message,
                                                                 monkeypatch):
    from precompute.cli import main

    pairs = write_pairs(tmp_path / "pairs.tsv", 3)
    monkeypatch.setattr("core.loading.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs), "--store",
              str(tmp_path / "s"), *([f"--max-memory{value}"] if value.startswith("=") else ["--max-memory", value])])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--max-memory" in errors[0] and message in errors[0], errors
    assert not (tmp_path / "s").exists(), "nothing is written before the options are checked"


@pytest.fixture
def engines_seen(monkeypatch):
    """Every EngineOptions the runner hands to compute_factors."""
    import precompute.runner as runner

    seen, real = [], runner.compute_factors

    def spy(*args, engine=None, **kwargs):
        seen.append(engine)
        return real(*args, engine=engine, **kwargs)

    monkeypatch.setattr(runner, "compute_factors", spy)
    return seen


def test_cli_max_memory_reaches_the_engine(tmp_path, tiny_folders, engines_seen):
    from core.store import Store
    from precompute.cli import main

    pairs = write_pairs(tmp_path / "pairs.tsv", 5)
    assert main(["attribute", "--model", str(tiny_folders["bert"]), "--dataset", str(pairs), "--store",
                 str(tmp_path / "s"), "--max-memory", "96MiB", "--chunk-size", "2"]) == 0
    assert [e.max_memory for e in engines_seen] == [96 << 20] * 3  # one engine call per chunk
    with Store(tmp_path / "s") as reader:
        assert reader.runs()["status"].tolist() == ["done"]


def test_a_ray_worker_honours_the_runs_max_memory(tmp_path, tiny_folders, engines_seen):
    """The actor class outside Ray: the bound travels in the ChunkJob that Ray hands every actor."""
    import pandas as pd

    from core import load_model
    from core.datasets import load_dataset
    from precompute.distributed import ChunkWorker
    from precompute.runner import RunSettings, start_run

    model = load_model(tiny_folders["bert"], device="cpu")
    started = start_run(model, load_dataset(str(write_pairs(tmp_path / "pairs.tsv", 4))), tmp_path / "store",
                        RunSettings(chunk_size=2, max_memory="200MB"))
    assert started.job.max_memory == 200 * 10**6
    worker = ChunkWorker(model.name, str(model.path), model.model_id, str(tmp_path / "store"), started.job, "cpu")
    batch = pd.DataFrame([{"chunk_index": k, **{c: started.rows(k)[c].tolist()
                                                for c in ("pair_id", "sentence1", "sentence2")}} for k in (0, 1)])
    assert worker(batch)["written"].tolist() == [True, True]
    assert [e.max_memory for e in engines_seen] == [200 * 10**6] * 2


def test_run_settings_are_checked_and_named():
    from precompute.runner import RunSettings

    for options, message in (({"max_memory": "1KB"}, "max_memory"), ({"chunk_size": 0}, "chunk_size"),
                             ({"limit": -1}, "limit"), ({"batch_sise": 2}, "unknown run setting")):
        with pytest.raises(ValueError, match=message):
            RunSettings.of(None, options)


# ---- the Explain page: caps on tokens, steps and memory, stated on the page --------------------------------


def test_cut_to_tokens_counts_prompt_and_special_tokens(tiny_models):
    from core.attribution import cut_to_tokens

    model = tiny_models["bert"]
    text = " ".join(f"word{k}" for k in range(80))
    assert model.max_length == 24
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the whole text is longer than the model's maximum
        for cap in (5, 12, 20):
            for prompt in ("", "query: "):
                cut = cut_to_tokens(model, text, cap, prompt)
                assert text.startswith(cut) and len(model.tokenize([cut], [prompt]).tokens[0]) <= cap
                assert len(cut_to_tokens(model, text, cap + 1, prompt)) > len(cut)  # the longest prefix that fits
        assert cut_to_tokens(model, text, 30) == text  # the model's own maximum (24) cuts it, as the page says
    assert cut_to_tokens(model, "A dog runs.", 20) == "A dog runs."
    with pytest.raises(ValueError, match="prompt and special tokens alone"):
        cut_to_tokens(model, text, 4, "a very long prompt indeed: ")


def test_explain_page_caps_tokens_steps_and_memory_and_says_so(monkeypatch, tmp_path, wide_model):
    pytest.importorskip("streamlit.testing.v1")
    from streamlit.testing.v1 import AppTest

    from core import explain, load_model, views
    from core.attribution import cut_to_tokens
    from core.safe_text import unliteral

    monkeypatch.setenv(views.STORE_ENV, str(tmp_path / "no-store"))
    monkeypatch.setenv(views.AUTO_DEMO_ENV, "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/6_Explain.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    def page_text() -> str:
        return "\n".join(unliteral(str(e.value)) for kind in ("caption", "warning", "markdown")
                         for e in getattr(at, kind))

    assert "each text is cut to its first 128 tokens" in page_text() and "at most 128 steps" in page_text()
    assert at.select_slider(key="xp_memory").options == ["256MiB", "512MiB", "1GiB"]
    at.selectbox(key="xp_method").set_value("ij")
    at.run()
    assert at.radio(key="xp_steps_mode").value == "auto"  # ij integrates to a tolerance by default
    at.radio(key="xp_steps_mode").set_value("fixed")
    at.run()
    assert at.number_input(key="xp_steps").max == 128 and at.number_input(key="xp_steps").value == 64
    at.selectbox(key="xp_method").set_value("bilrp")
    at.selectbox(key="xp_model_choice").set_value("Other (folder path or hub id)…")
    at.run()
    long_text = " ".join(["the quick brown fox jumps over a lazy dog"] * 40)  # about 360 tokens
    at.text_input(key="xp_model_path").input(str(wide_model))
    at.text_area(key="xp_text_a").input(long_text)
    at.text_area(key="xp_text_b").input("A fox jumps.")
    at.select_slider(key="xp_memory").set_value("256MiB")
    at.button(key="xp_go").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert "Text 1 cut to its first 128 tokens on this page (128 and" in page_text()
    assert "at most 256 MiB of working memory" in page_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(wide_model, device="cpu")
        expected = explain(model, cut_to_tokens(model, long_text, 128), "A fox jumps.", max_memory="256MiB")
    assert len(expected.tokens_a) == 128
    assert [m.value for m in at.metric if m.label == "model score"] == [f"{expected.model_score:.4f}"]
