"""What identity by content costs when a model loads: the content hash of a model folder against the whole load.

    python bench/bench_model_identity.py [--model all-MiniLM-L6-v2] [--repeats 5]

First, the first ``load_model`` in a new process (imports excluded), alternately with the content hash and with
the legacy name-based revision it replaced (``--repeats`` processes each: the before/after of a fresh load).
Then in one process: ``load_model`` once (imports, first read of the files), then ``--repeats`` times each of
(a) the content hash of the folder with the process's digest cache emptied (what the first load of a folder in a
process pays: every content file read and hashed), (b) the same with the cache kept (every later load of that
folder), (c) a whole ``load_model`` (its hash cached), (d) a whole ``load_model`` with the cache emptied (the hash
in its thread, as for a copy of the folder), (e) the legacy name-based revision it replaced (size and first
megabyte of config and weights). Medians in milliseconds, and the ratios of the fresh loads and of (d) to (c).
The machine's load average is printed with them: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import model_files  # noqa: E402
from core.model_folders import load_model  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


_FRESH = """
import sys, time, warnings
warnings.simplefilter("ignore")
import core.model_folders
import core.models
from core import model_files
if sys.argv[2] == "legacy":
    core.models.content_revision = core.model_folders.content_revision = model_files.legacy_revision
t = time.perf_counter()
core.model_folders.load_model(sys.argv[1], device="cpu")
print(time.perf_counter() - t)
"""


def _fresh_load_ms(model: str, how: str) -> float:
    out = subprocess.run([sys.executable, "-c", _FRESH, model, how], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=600)
    return 1000 * float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fresh: dict[str, list[float]] = {"content": [], "legacy": []}
    for _ in range(args.repeats):
        for how in fresh:
            fresh[how].append(_fresh_load_ms(args.model, how))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model, device="cpu")
        folder = model.path

        def uncached() -> None:
            model_files._DIGESTS.clear()
            model_files.content_revision(folder)

        def load_uncached() -> None:
            model_files._DIGESTS.clear()
            load_model(args.model, device="cpu")

        rows = {
            "first load_model in a process, content id": statistics.median(fresh["content"]),
            "first load_model in a process, legacy id": statistics.median(fresh["legacy"]),
            "content hash, first time in the process": _median_ms(uncached, args.repeats),
            "content hash, cached": _median_ms(lambda: model_files.content_revision(folder), args.repeats),
            "load_model (hash cached)": _median_ms(lambda: load_model(args.model, device="cpu"), args.repeats),
            "load_model (hash not cached, in its thread)": _median_ms(load_uncached, args.repeats),
            "legacy name-based revision": _median_ms(lambda: model_files.legacy_revision(folder), args.repeats),
        }
    size = sum((folder / f).stat().st_size for f in model_files.content_files(folder))
    print(f"{args.model}: {len(model_files.content_files(folder))} content files, {size / 1e6:.1f} MB; "
          f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeats}")
    for name, ms in rows.items():
        print(f"  {name:<42} {ms:9.1f} ms")
    later = rows["load_model (hash not cached, in its thread)"] / rows["load_model (hash cached)"]
    print(f"  a later load in a process of a folder not hashed yet (a copy): {later:.2f} x a load of a hashed one")
    new, old = rows["first load_model in a process, content id"], rows["first load_model in a process, legacy id"]
    print(f"  first load in a process: content id / legacy id = {new / old:.2f}")


if __name__ == "__main__":
    main()
