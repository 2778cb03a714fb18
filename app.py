"""SimLens dashboard entry point: ``streamlit run app.py``.

The router: page config, the navigation of the pages in ``pages/`` (``core.dashboard.shell.APP_PAGES``, plus
any other page file there under "More") and the store's location in the sidebar. The store is
``$SIMLENS_STORE`` (default ``./store``); a first launch on an empty store builds a small demo store
(:func:`precompute.demo.build_demo_store`).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.dashboard import shell  # noqa: E402
from precompute import demo  # noqa: E402

shell.router(demo_builder=demo.build_demo_store).run()
