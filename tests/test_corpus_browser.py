"""Issue #9 in a real browser: ``streamlit run app.py`` on the corpus fixture store (:mod:`corpus_store`) in
Debian's headless Chromium. Every page renders without an error box, and wherever a partial run is shown the
page's captions name its coverage ("3 of 8 pairs"); the run chip and the "Special tokens" label are not cut
off where they tell runs apart."""

from __future__ import annotations

import pytest
from corpus_store import build_corpus_store
from test_browser import (
    CHROMIUM,
    browser,  # noqa: F401  (the module's headless Chromium fixture)
    check,
    open_page,
    settle,
    streamlit_server,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (bash install.sh --browser)"),
]

SUBSET = "3 of 8 pairs"  # the hxp run of model mA on stsb:test


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus_browser") / "store"
    return {"path": path, "runs": build_corpus_store(path)}


@pytest.fixture(scope="module")
def server(corpus, tmp_path_factory):
    with streamlit_server(corpus["path"], tmp_path_factory.mktemp("streamlit_corpus")) as url:
        yield url


def body(page) -> str:
    return " ".join(page.inner_text("body").split())


def pick(page, testid: str, label: str, option: str) -> None:
    """Open the selectbox / multiselect whose label contains ``label`` and click the option containing
    ``option``; wait for the rerun."""
    page.locator(f'[data-testid="{testid}"]').filter(has_text=label).first.locator("input").click()
    page.get_by_role("option").filter(has_text=option).first.click()
    page.keyboard.press("Escape")
    settle(page)


def fully_visible(page, locator) -> bool:
    """Whether an element's text is shown whole (not cut off by an ellipsis or its box)."""
    return locator.evaluate("e => e.scrollWidth <= e.clientWidth + 1")


def visible_through(page, locator, text: str) -> bool:
    """Whether ``text`` inside the element ends before the element's visible right edge (a long label may be
    cut after it)."""
    return locator.evaluate("""(e, text) => {
        const walker = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
        let node;
        while ((node = walker.nextNode())) {
            const k = node.textContent.indexOf(text);
            if (k < 0) continue;
            const range = document.createRange();
            range.setStart(node, k);
            range.setEnd(node, k + text.length);
            return range.getBoundingClientRect().right <= e.getBoundingClientRect().right + 1;
        }
        return false;
    }""", text)


def test_every_page_names_partial_runs(server, browser, corpus):  # noqa: F811
    ids = corpus["runs"]

    page = open_page(browser, server + "/", "corpus_overview", 0, text="Models × datasets")
    shown = body(page)
    assert "Models × datasets" in shown
    assert "Computed on part of the dataset only (no run covers all of it): model-mB on mstsb:en:test: 2 of 4 pairs" \
        in shown, shown[:3000]
    check(page, "corpus_overview")
    page.close()

    page = open_page(browser, server + "/POS_interactions", "corpus_pos", 3)
    pick(page, "stMultiSelect", "Runs", SUBSET)
    page.wait_for_function("document.body.innerText.includes('Partial run: 3 of 8 pairs')", timeout=60_000)
    shown = body(page)
    assert "Partial run: 3 of 8 pairs of stsb:test, model-mA hxp L0." in shown, shown[:3000]
    chip = page.locator('[data-testid="stMultiSelectTagsContainer"] [data-tag]').filter(has_text=SUBSET).first
    assert visible_through(page, chip, SUBSET), chip.inner_text()  # two subsets of one model/method differ here
    label = page.get_by_text("Special tokens", exact=True).first
    assert fully_visible(page, label) and visible_through(page, label, "Special tokens")
    check(page, "corpus_pos")
    page.close()

    page = open_page(browser, server + "/Compare", "corpus_compare", 3)
    shown = body(page)
    assert "computed on the 3 shared pairs of A's 8 and B's 3" in shown, shown[:3000]
    assert SUBSET in shown  # the run B picker names its coverage
    check(page, "corpus_compare")
    page.close()

    page = open_page(browser, server + "/Failures", "corpus_failures", 1)
    pick(page, "stSelectbox", "Run", SUBSET)
    page.wait_for_function("document.body.innerText.includes('Partial run: 3 of 8 pairs')", timeout=60_000)
    assert "Partial run: 3 of 8 pairs of stsb:test, model-mA hxp L0: the lists and charts below are about " \
           "those pairs only." in body(page)
    check(page, "corpus_failures")
    page.close()

    page = open_page(browser, f"{server}/Example?run={ids['subset']}&pair=1", "corpus_example", 1)
    assert "the run covers 3 of 8 pairs" in body(page)
    check(page, "corpus_example")
    page.close()

    page = open_page(browser, f"{server}/Example?run={ids['running']}", "corpus_example_running", 0,
                     text="This run has not written any pairs yet")
    assert "This run has not written any pairs yet (0 of 3 chunks)" in body(page)
    check(page, "corpus_example_running")
    page.close()

    for path, title in (("/Explain", "Explain your own pair"), ("/Search", "Search"),
                        ("/Faithfulness", "Faithfulness")):
        page = open_page(browser, server + path, "corpus" + path.replace("/", "_"), 0, text=title)
        assert title in body(page)
        check(page, "corpus" + path.replace("/", "_"))
        page.close()
