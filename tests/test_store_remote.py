"""A store on a PostgreSQL catalog with its data on S3: a real PostgreSQL server (Debian's ``postgresql``) and
a local S3 endpoint (``moto`` in server mode), both started and stopped here; two shard writer processes
write one run at once, and readers see it whole. Skipped, with the reason, when the servers are not installed
(``.ci/run`` installs them)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_store_lake import PROC, check_run

from core.store import Store, compact

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    path = Path(found[-1]).parent if found else (Path(shutil.which("pg_ctl")).parent if shutil.which("pg_ctl") else None)
    return path if path and (path / "initdb").exists() else None


def _moto() -> str | None:
    here = Path(sys.executable).parent / "moto_server"
    return str(here) if here.exists() else shutil.which("moto_server")


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


@pytest.fixture()
def postgres():
    """A PostgreSQL server on a free loopback port, in a temporary folder; yields the port."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="simlens-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), folder / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def s3(monkeypatch):
    """moto's S3 server on a free loopback port with a bucket ``simlens``; yields the endpoint URL."""
    moto = _moto()
    if moto is None:
        pytest.skip("moto_server is not installed: pip install 'moto[server]'")
    port = _free_port()
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="simlens")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_postgres_catalog_with_s3_data_two_shards_at_once(postgres, s3):
    store = f"ducklake:postgres:dbname=postgres host=127.0.0.1 port={postgres} user=postgres data_path=s3://simlens/lake/"
    n, c = 12, 2
    procs = [subprocess.Popen([sys.executable, PROC, store, "--n-pairs", str(n), "--chunk-size", str(c), "--sleep",
                               "0", "--shard", f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(ROOT)) for k in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    check_run(store, n, c)  # one store, no merge
    import boto3

    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="simlens")["Contents"]]
    assert any(k.startswith("lake/") and k.endswith(".parquet") for k in keys)  # the data really is on S3
    compact(store)
    check_run(store, n, c)
    with Store(store) as s:
        assert s.runs().iloc[0]["shards"] == "1/2,2/2"
