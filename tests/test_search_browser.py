"""The Search page in a real headless browser: type a query, see the hits with their heatmaps and the contrast
chart, and open a hit's pair in Example (the fixture store of tests/test_search.py)."""

from __future__ import annotations

import pytest
from test_browser import CHART, CHROMIUM, browser, check, open_page, settle, streamlit_server  # noqa: F401
from test_model_identity import default_index  # noqa: F401  (an index built with the default model)
from test_search import search_store  # noqa: F401  (the session's search store, built once)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (bash install.sh --browser)"),
]


@pytest.fixture(scope="module")
def search_server(search_store, tmp_path_factory):  # noqa: F811
    with streamlit_server(search_store["store"], tmp_path_factory.mktemp("streamlit_search")) as url:
        yield url


def test_type_a_query_see_hits_and_open_one_in_example(search_server, browser, search_store):  # noqa: F811
    page = open_page(browser, f"{search_server}/Search", "search_form", 0)
    page.wait_for_selector("text=Type a query and press", timeout=60_000)
    box = page.get_by_label("Query")
    box.fill("A man is playing a guitar.")
    box.press("Enter")
    page.wait_for_selector(CHART, timeout=120_000)
    page.wait_for_function("document.querySelectorAll('.vega-embed').length >= 3", timeout=60_000)
    settle(page)
    body = page.inner_text("body")
    assert "#1 · " in body and "#5 · " in body and "Contrast two hits" in body and "Σ (A − B)" in body
    assert "exact search" in body
    check(page, "search_hits")
    link = page.get_by_text("Open its pair in Example").first
    link.click()
    page.wait_for_url("**/Example?**", timeout=60_000)
    page.wait_for_selector(CHART, timeout=60_000)
    settle(page)
    body = page.inner_text("body")
    assert "Every stored explanation of this pair" in body
    assert f"run={search_store['run_id']}" in page.url
    check(page, "search_to_example")
    page.close()


@pytest.fixture(scope="module")
def default_server(default_index, tmp_path_factory):  # noqa: F811
    with streamlit_server(default_index, tmp_path_factory.mktemp("streamlit_default")) as url:
        yield url


def test_an_index_built_with_default_settings_is_searched(default_server, browser):  # noqa: F811
    """``precompute index`` with the default model (by its packaged name), then the page, which loads the
    index's model from its folder: the same model (docs/model-identity.md), so the query is answered."""
    page = open_page(browser, f"{default_server}/Search", "search_form_default", 0)
    page.wait_for_selector("text=Type a query and press", timeout=60_000)
    box = page.get_by_label("Query")
    box.fill("someone plays music")
    box.press("Enter")
    page.wait_for_selector(CHART, timeout=180_000)
    settle(page)
    body = page.inner_text("body")
    assert "#1 · " in body and "A man is playing a guitar." in body and "different model" not in body
    check(page, "search_default_model")
    page.close()
