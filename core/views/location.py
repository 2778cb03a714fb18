"""Where the dashboard's store is and what state it is in (pure: no Streamlit).

``$SIMLENS_STORE`` (default ``./store``) names the store; :func:`store_state` classifies it without raising,
:func:`should_autobuild` decides whether a first launch builds the demo store, :func:`store_help` says what
to run when there is nothing to show, and :func:`store_fingerprint` is the cheap token the page caches key on.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.safe_text import literal
from core.store import Store, StoreError, latest_snapshot, parse_location

ROOT = Path(__file__).resolve().parents[2]
STORE_ENV = "SIMLENS_STORE"
AUTO_DEMO_ENV = "SIMLENS_AUTO_DEMO"
DEFAULT_STORE = "store"
DEMO_DATASET = ROOT / "data" / "demo_pairs.tsv"  # the first-launch demo store: this model on these pairs
DEMO_MODEL = "all-MiniLM-L6-v2"


def store_location(env: Mapping[str, str] | None = None) -> tuple[Path | str, bool]:
    """(store path, whether it was set explicitly): ``$SIMLENS_STORE`` (a folder, or a DuckLake connection
    string such as ``ducklake:postgres:dbname=simlens host=db data_path=s3://bucket/simlens/``), else
    ``./store``."""
    env = os.environ if env is None else env
    value = (env.get(STORE_ENV) or "").strip()
    if value:
        return (value if parse_location(value).root is None else Path(value).expanduser()), True
    return Path(DEFAULT_STORE), False


@dataclass(frozen=True)
class StoreState:
    """``state``: ``ok`` (has runs), ``empty`` (a store without runs), ``missing`` (no such directory, or an
    empty one) or ``invalid`` (not a store / unreadable); ``message`` says why; ``n_runs`` how many runs."""

    state: str
    message: str
    n_runs: int = 0


def store_state(path: str | os.PathLike, opener: Callable[[str], Store] | None = None) -> StoreState:
    """Classify the store at ``path`` without raising (``opener``: e.g. a cached ``Store`` factory)."""
    root = parse_location(path).root or str(path)
    if isinstance(root, Path) and not root.exists():
        return StoreState("missing", f"{str(root)!r} does not exist")
    if isinstance(root, Path) and root.is_dir() and not any(True for _ in root.iterdir()):
        return StoreState("missing", f"{str(root)!r} is an empty directory")
    try:
        store = (opener or Store)(str(root))
        runs = store.runs()
    except StoreError as exc:
        return StoreState("invalid", str(exc))
    except Exception as exc:  # noqa: BLE001  (a corrupt file: say what happened, never a trace)
        return StoreState("invalid", f"{type(exc).__name__}: {exc}")
    if runs.empty:
        return StoreState("empty", f"{str(root)!r} is a SimLens store without runs")
    return StoreState("ok", "", len(runs))


def should_autobuild(state: StoreState | str, explicit: bool, env: Mapping[str, str] | None = None) -> bool:
    """Whether to build the demo store without asking: on a first launch (default ``./store`` missing or
    without runs), unless ``SIMLENS_AUTO_DEMO=0``; ``SIMLENS_AUTO_DEMO=1`` also allows it for an explicit
    ``SIMLENS_STORE``. An unreadable store is never overwritten."""
    env = os.environ if env is None else env
    name = state.state if isinstance(state, StoreState) else str(state)
    flag = (env.get(AUTO_DEMO_ENV) or "").strip().lower()
    if flag in ("0", "false", "no", "off") or name not in ("missing", "empty"):
        return False
    return flag in ("1", "true", "yes", "on") or not explicit


@dataclass(frozen=True)
class StoreHelp:
    """What to run when the store cannot be shown: ``head`` (Markdown), ``commands`` (bash lines that work from
    any folder: the project folder, this server's Python and the store's absolute location), ``footer``
    (Markdown)."""

    head: str
    commands: str
    footer: str

    @property
    def markdown(self) -> str:
        """All of it as one Markdown text (the commands as a code block)."""
        return f"{self.head}\n\n```bash\n{self.commands}\n```\n\n{self.footer}"


def store_help(path: str | os.PathLike, state: StoreState, python: str | None = None) -> StoreHelp:
    """What to run when the store at ``path`` cannot be shown (``python``: the interpreter the commands use,
    default this process's)."""
    p = str(path)
    loc = parse_location(p) if p else None
    where = str(loc.root.absolute()) if loc is not None and loc.root is not None else p
    python = shlex.quote(python or sys.executable)
    store_arg = f" --store {shlex.quote(where)}"
    if state.state == "invalid":
        head = f"**The store at `{p}` cannot be read.** {literal(state.message)}."
        fix = (f"Point `{STORE_ENV}` at a SimLens store (a directory made by `python -m precompute`), or "
               f"create a new one:")
    else:
        head = f"**No audit results yet** in `{p}` ({literal(state.message)})."
        fix = "Fill the store with a precompute run, then reload this page:"
    demo = shlex.quote(str(DEMO_DATASET.relative_to(ROOT)))
    commands = "\n".join([
        f"cd {shlex.quote(str(ROOT))}",
        f"{python} -m precompute attribute --dataset stsb:test{store_arg}",
        f"{python} -m precompute predict --dataset stsb:test{store_arg}",
        f"{python} -m precompute attribute --dataset {demo} --lang en --gold-range 0,5 --limit 10{store_arg}",
    ])
    footer = (f"`python -m precompute list{store_arg}` shows what a store holds. The dashboard reads the store "
              f"named by `{STORE_ENV}` (default `./{DEFAULT_STORE}`, in the folder the server was started from).")
    return StoreHelp(f"{head}\n\n{fix}", commands, footer)


def progress_text(text: str, fraction: float, elapsed_s: float, start: tuple[float, float] = (0.0, 0.0)) -> str:
    """A long build's progress line: ``text · 35 s, about 60 s left``. The time left is extrapolated from the
    rate since ``start`` = (seconds, fraction) — the first progress after the model load, so the load does not
    count as work — once 5% more is done."""
    line = f"{text} · {elapsed_s:.0f} s"
    t0, f0 = start
    if fraction - f0 >= 0.05 and fraction < 1.0 and elapsed_s > t0:
        line += f", about {(1.0 - fraction) * (elapsed_s - t0) / (fraction - f0):.0f} s left"
    return line


def store_fingerprint(path: str | os.PathLike) -> tuple:
    """A token that changes whenever a writer commits: the store's newest snapshot id (``()`` when the store
    cannot be read)."""
    snap = latest_snapshot(str(path))
    return () if snap is None else (snap,)
