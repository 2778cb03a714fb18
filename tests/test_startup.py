"""Start-up: ``python -m precompute --help`` and argument errors parse the command line without importing torch,
transformers, spaCy or Ray (what a fresh process would pay seconds for), and still answer as before. Checked in
a fresh interpreter through ``sys.modules`` (no timing: speed belongs to bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

HEAVY = ("torch", "transformers", "sentence_transformers", "spacy", "ray")

PROBE = r"""
import json, runpy, sys
argv, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["precompute", *argv]
try:
    runpy.run_module("precompute", run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}),
      file=sys.stderr)
"""


def run_cli(tmp_path, *argv: str) -> tuple[int, list[str], str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"], result.stdout + result.stderr


@pytest.mark.parametrize("argv,code,says", [
    (["--help"], 0, "attribute"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "the following arguments are required: verb"),
    (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["merge"], 2, "the following arguments are required: sources, --store"),
    (["compact", "--keep-hours", "soon"], 2, "invalid float value: 'soon'"),
])
def test_help_and_argument_errors_import_no_torch(tmp_path, argv, code, says):
    returned, loaded, output = run_cli(tmp_path, *argv)
    assert returned == code, output
    assert says in output
    assert loaded == [], f"{' '.join(argv) or '(no arguments)'} imported {loaded}"


def test_help_lists_every_registered_verb(tmp_path):
    """The verbs come from the registries (evaluations, search) although no verb's options are built."""
    from precompute import evaluations, search_cli

    _, _, output = run_cli(tmp_path, "--help")
    for verb in ["attribute", "predict", "list", "merge", *evaluations.verbs(), *search_cli.VERBS]:
        assert verb in output


def test_a_verbs_help_still_lists_its_options(tmp_path):
    returned, _, output = run_cli(tmp_path, "attribute", "--help")
    assert returned == 0
    for option in ("--method", "--max-memory", "--ray", "--chunk-size", "--save-factors"):
        assert option in output
