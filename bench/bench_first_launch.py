"""The real first launch: ``streamlit run app.py`` with no store yet, opened in headless Chromium, timed until
the Overview page shows the demo store (the README's first-launch figure comes from this script).

    .venv/bin/python bench/bench_first_launch.py [--timeout 1200] [--keep DIR]

The server runs in an empty temporary folder (so ``./store`` does not exist and the first visit builds the
demo store: the offline MiniLM on ``data/demo_pairs.tsv``, ``precompute.demo.DEMO_PLAN``). The browser polls
the page's progress bar every second, so the table also shows the estimate the page gave before the build
started and the time left it showed halfway. Prints one table:

- server start: ``streamlit run`` until its health check answers;
- first page: the browser's first request until the app shows its first element;
- build: until the Overview's title is shown (the demo store is written, the page reruns);
- total: server start to the Overview (what a new user waits for), plus the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from streamlit_app import ServerDidNotStart, streamlit_app  # noqa: E402  (the tests' server helper)

CHROMIUM = Path("/usr/bin/chromium")
DONE = "SimLens audit overview"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for the Overview")
    ap.add_argument("--keep", type=Path, default=None, help="run in this (empty) folder and keep its store")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = args.keep or Path(tempfile.mkdtemp(prefix="simlens_first_launch_"))
    work.mkdir(parents=True, exist_ok=True)
    if (work / "store").exists():
        print(f"error: {work / 'store'} exists: a first launch needs no store", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("SIMLENS_STORE", "SIMLENS_AUTO_DEMO")}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    texts: list[tuple[float, str]] = []
    try:
        with streamlit_app(work, env, work / "server.log", timeout=120) as url, sync_playwright() as p:
            t_server = time.perf_counter()
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            t_request = time.perf_counter()
            page.goto(url)
            page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
            t_page = time.perf_counter()
            while time.perf_counter() - t0 < args.timeout:
                body = page.inner_text("body")
                if DONE in body:
                    break
                bar = page.locator('[data-testid="stProgress"]')
                if bar.count():
                    texts.append((time.perf_counter() - t_request, " ".join(bar.first.inner_text().split())))
                page.wait_for_timeout(1000)
            else:
                print(f"error: no Overview after {args.timeout:.0f} s", file=sys.stderr)
                return 1
            t_done = time.perf_counter()
            browser.close()
    except ServerDidNotStart as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    build = t_done - t_page
    estimate = next((t for _, t in texts if "expected" in t), "–")
    halfway = next((t for s, t in texts if s >= build / 2 and "left" in t), "–")
    print(f"first launch of `streamlit run app.py` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
          f"load average {load:.1f} at the start)")
    print("| step | seconds |")
    print("|---|---:|")
    print(f"| server start (health check answers) | {t_server - t0:.1f} |")
    print(f"| first page shown | {t_page - t_request:.1f} |")
    print(f"| demo store built, Overview shown | {build:.1f} |")
    print(f"| total (server start to Overview) | {t_done - t0:.1f} |")
    print(f"estimate shown first: {re.sub(r' · .*', '', estimate)!s}")
    print(f"shown halfway: {halfway}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
