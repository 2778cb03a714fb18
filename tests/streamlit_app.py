"""``streamlit run app.py`` as a real server process, for the browser tests and ``bench/bench_first_launch.py``."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class ServerDidNotStart(RuntimeError):
    """The server exited or its health check did not answer in time; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_app(cwd: Path, env: Mapping[str, str], log_path: Path, timeout: float = 90.0) -> Iterator[str]:
    """Run the dashboard headless at a free port with working folder ``cwd`` and environment ``env``; yield its
    URL once ``/_stcore/health`` answers ``ok``, and stop the server (terminate, then kill) on the way out.

    Raises ``ServerDidNotStart`` when the process exits or ``timeout`` seconds pass without a healthy answer."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115  (closed in the finally below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise ServerDidNotStart(f"streamlit did not start ({log_path}): {log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False
