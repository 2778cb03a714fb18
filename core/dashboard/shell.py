"""The navigation shell: page config, the app's pages by section, the sidebar's store info, and the store
check every page starts with (which builds the demo store on a first launch, or says what to run).

The demo builder lives in :mod:`precompute.demo` (core does not import precompute): ``app.py`` hands it to
:func:`router`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from core.dashboard import data
from core.safe_text import literal
from core.views.location import (
    DEMO_DATASET,
    DEMO_MODEL,
    ROOT,
    STORE_ENV,
    progress_text,
    should_autobuild,
    store_help,
    store_location,
)
from core.views.runs import status_counts

DemoBuilder = Callable[..., Any]  # (path, progress=callable(fraction, text)) -> results
_DEMO: dict[str, DemoBuilder] = {}  # the builder app.py installed (one per server process)
_DEMO_LOCK = threading.Lock()


def sidebar_store_info() -> None:
    """The store's location and size in the sidebar, with a refresh button."""
    if st.session_state.get("_reload_store"):  # clicked: this whole page run reads the newest snapshot
        data.forget_snapshots()
    path, explicit = store_location()
    state = data.state()
    with st.sidebar:
        st.caption("Store" + (f" (${STORE_ENV})" if explicit else f" (default; set ${STORE_ENV})"))
        st.code(str(path.resolve() if isinstance(path, Path) and path.exists() else path), language=None,
                wrap_lines=True)
        if state.state == "ok":
            counts = status_counts(data.runs())
            parts = [f"{v} {k}" for k, v in counts.items() if v]
            st.caption(f"{state.n_runs} runs: " + ", ".join(parts))
        else:
            st.caption({"missing": "no store yet", "empty": "store has no runs"}.get(state.state, "store unreadable"))
        st.button("Reload store", key="_reload_store", help="Move to the store's newest snapshot (new runs and chunks)")


# (file in pages/, title, icon, section); URL paths are Streamlit's defaults, the file names without their
# number (Compare, Example, ...), the same names its legacy pages/ mode uses (see ensure_navigation).
APP_PAGES = (
    ("1_Overview.py", "Overview", ":material/dashboard:", "Corpus audit"),
    ("2_POS_interactions.py", "POS interactions", ":material/grid_on:", "Corpus audit"),
    ("3_Compare.py", "Compare runs", ":material/compare_arrows:", "Corpus audit"),
    ("4_Failures.py", "Failures", ":material/report:", "Corpus audit"),
    ("5_Example.py", "Example", ":material/zoom_in:", "Single pairs"),
    ("6_Explain.py", "Explain your own pair", ":material/edit_note:", "Single pairs"),
    ("7_Search.py", "Search", ":material/manage_search:", "Retrieval"),
)


def navigation_pages() -> dict[str, list[Any]]:
    """The app's pages by section; other files in pages/ (added by other features) go under "More"."""
    sections: dict[str, list[Any]] = {}
    for n, (name, title, icon, section) in enumerate(APP_PAGES):
        sections.setdefault(section, []).append(st.Page(f"pages/{name}", title=title, icon=icon, default=n == 0))
    listed = {name for name, *_ in APP_PAGES}
    extra = []
    for f in sorted((ROOT / "pages").glob("*.py")):
        if f.name not in listed and not f.name.startswith(("_", ".")):
            title = re.sub(r"^\d+[_ -]*", "", f.stem).replace("_", " ").strip() or f.stem
            extra.append(st.Page(f"pages/{f.name}", title=title))
    if extra:
        sections["More"] = extra
    return sections


def router(demo_builder: DemoBuilder | None = None) -> Any:
    """Page config, navigation and the sidebar's store info; returns the page to run (app.py runs it).
    ``demo_builder(path, progress=...)`` builds the first-launch demo store (:func:`precompute.demo.build_demo_store`)."""
    if demo_builder is not None:
        _DEMO["build"] = demo_builder
    st.set_page_config(page_title="SimLens", page_icon=":material/search:", layout="wide")
    page = st.navigation(navigation_pages())
    sidebar_store_info()
    return page


def ensure_navigation() -> None:
    """Route a page through app.py when Streamlit ran it without app.py.

    Because the project has a ``pages/`` folder, Streamlit serves the first request of a fresh server in its
    legacy multipage mode, which runs a requested page such as ``/Example?run=...`` directly, without
    app.py's navigation and sidebar. A fresh session is rerun, now through app.py's router (same URL and
    query parameters); a session with widget state (AppTest resets the mode before every run) keeps its run,
    so no click is lost, and gets the page layout and the sidebar's store info."""
    from streamlit.runtime.pages_manager import PagesManager

    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    if not list(st.session_state.keys()):
        st.rerun()
    st.set_page_config(page_title="SimLens", page_icon=":material/search:", layout="wide")
    sidebar_store_info()


def require_store() -> Path:
    """Return the store path if it has runs; otherwise build the demo (first launch) or explain what to
    run, and stop the page."""
    ensure_navigation()
    path, explicit = store_location()
    state = data.state()
    if state.state == "ok":
        return path
    if should_autobuild(state, explicit) and "build" in _DEMO and _bootstrap(path, first_launch=True):
        st.rerun()
    st.warning("This page needs audit results.", icon=":material/info:")
    howto = store_help(path, state)
    st.markdown(howto.head)
    st.code(howto.commands, language="bash", wrap_lines=True)
    st.markdown(howto.footer)
    if state.state in ("missing", "empty") and "build" in _DEMO:
        st.markdown(f"Or build a small demo store here: {DEMO_MODEL} on the project's {_demo_pairs()} demo pairs "
                    f"(a few minutes on a CPU; the progress bar shows the expected time and the time left).")
        if st.button("Build the demo store", key="_build_demo", type="primary") and _bootstrap(path):
            st.rerun()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def _demo_pairs() -> int:
    try:
        return max(sum(1 for _ in DEMO_DATASET.open(encoding="utf-8")) - 1, 0)
    except OSError:
        return 0


def _bootstrap(path: Path, first_launch: bool = False) -> bool:
    if first_launch:
        st.info(f"First launch: `{path}` holds no audit yet, so SimLens is building a small demo store "
                f"({DEMO_MODEL} on {_demo_pairs()} demo pairs: scores, BiLRP and integrated Jacobians). The bar "
                f"below shows the expected time, then the time left.")
    bar = st.progress(0.0, text="starting…")
    t0 = time.perf_counter()

    start: list[tuple[float, float]] = []  # (seconds, fraction) of the first progress after the model load

    def progress(fraction: float, text: str) -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        elapsed = time.perf_counter() - t0
        if fraction > 0 and not start:
            start.append((elapsed, fraction))
        bar.progress(fraction, text=progress_text(text, fraction, elapsed, start[0] if start else (elapsed, 0.0)))

    try:
        with _DEMO_LOCK:  # one build per server process; a second session waits, then finds the runs
            if data.state().state != "ok":
                _DEMO["build"](path, progress=progress)
    except Exception as exc:  # noqa: BLE001  (show what failed, never a trace)
        st.error(f"Could not build the demo store in {literal(path)}: {literal(f'{type(exc).__name__}: {exc}')}")
        return False
    data.forget_snapshots()
    return True
