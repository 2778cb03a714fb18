"""Rebuild tests/data/legacy_store: a store in the Parquet-directory layout (format 1) written by the last
writer of that layout (commit 172c48d, ``core/store.py``), for the ``migrate`` tests.

    python tests/data/make_legacy_store.py [COMMIT]

The old writer is taken from git history into a temporary folder and run there; nothing of it stays in the
tree. The content is that of tests/store_writer_proc.py (a bilrp run of 3 chunks with factors) plus a
scores-only run of 2 chunks and one evaluation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "legacy_store"

SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])   # the old core package
sys.path.insert(1, sys.argv[2])   # tests/ (store_writer_proc's frames)
from core.store import StoreWriter, make_run_id  # the old writer, imported before store_writer_proc's
import store_writer_proc as proc
assert proc.StoreWriter is StoreWriter
out, n, c = sys.argv[3], 6, 2
meta, pairs = proc.dataset_frames(n)
w = StoreWriter(out)
w.put_dataset(meta, pairs)
w.put_model(proc.MODEL)
rid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "bilrp", 0)
w.start_run(proc.run_spec(n, c))
for k in w.pending_chunks(rid):
    w.write_chunk(rid, k, proc.expected_tables(w.chunk_pair_ids(rid, k)))
w.finish_run(rid, {"spearman": 12.5, "pearson": 10.0, "mse": 0.2, "seconds": 3.0, "device": "cpu"})
pid = make_run_id(proc.MODEL_ID, proc.DATASET_KEY, "predict", 2)
w.start_run({**proc.run_spec(n, 3), "method": "predict", "layer": 2})
for k in w.pending_chunks(pid):
    ids = w.chunk_pair_ids(pid, k)
    w.write_chunk(pid, k, {"predictions": proc.expected_tables(ids)["predictions"][["pair_id", "model_score"]]})
w.finish_run(pid, {"spearman": 11.0, "seconds": 1.0})
import pandas as pd
w.put_evaluation({"kind": "conservation", "model_id": proc.MODEL_ID, "dataset_key": proc.DATASET_KEY,
                  "n_pairs": n, "params": {"layer": 0}, "seconds": 2.0},
                 pd.DataFrame({"metric": ["abs_residual", "abs_residual"], "method": ["bilrp", "hxp"],
                               "y": [0.01, 0.2], "n": [n, n]}))
"""


def main(argv: list[str]) -> int:
    commit = argv[0] if argv else "172c48d"
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "core"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for name in ("store.py", "store_schema.py", "metrics.py"):
            src = subprocess.run(["git", "show", f"{commit}:core/{name}"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout
            (pkg / name).write_text(src)
        shutil.rmtree(OUT, ignore_errors=True)
        subprocess.run([sys.executable, "-c", SCRIPT, tmp, str(ROOT / "tests"), str(OUT)], check=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
