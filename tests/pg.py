"""A real, throwaway PostgreSQL server for the tests (Debian's ``postgresql`` package; importable as ``pg``).

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port with its unix socket in that
directory, ``pg_ctl stop`` at the end. PostgreSQL refuses to run as root: as root, both run through
``runuser -u postgres`` on a directory owned by ``postgres``. Each test gets a database of its own
(``CREATE DATABASE``: milliseconds), dropped after it.

Where PostgreSQL (or the psycopg driver) is missing the PostgreSQL tests are skipped, except under ``CI=true``,
where they fail: CI installs the package (``.ci/run``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port, wait_for


def find_bin(name: str) -> str | None:
    """``initdb`` / ``pg_ctl``: on PATH, or Debian's ``/usr/lib/postgresql/<version>/bin``, newest first."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return candidates[-1] if candidates else None


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (where PostgreSQL is part of the set-up and its absence is a bug)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


class PgServer:
    """One running server; ``url(db)`` gives a SQLAlchemy URL, ``create_db()`` a fresh database."""

    def __init__(self, root: Path, port: int, as_postgres: bool) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.as_postgres = as_postgres
        self.pg_ctl = find_bin("pg_ctl") or "pg_ctl"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run([*prefix, *argv], check=check, capture_output=True, text=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            conn.execute(sql)

    def create_db(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self.run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        wait_for(lambda: self.admin("SELECT 1") is None, 30, "PostgreSQL to connect", tolerate=(Exception,))

    def stop(self) -> None:
        self.run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def discard(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    """Start a server (the caller stops it); ``unavailable()`` when it cannot be had."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    initdb = find_bin("initdb")
    if initdb is None:
        unavailable("initdb not found (apt-get install postgresql)")
    as_postgres = os.geteuid() == 0
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="longtail-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    server = PgServer(root, free_port(), as_postgres)
    try:
        server.run(initdb, "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        server.start()
    except (subprocess.CalledProcessError, AssertionError) as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        detail = getattr(exc, "stderr", "") or str(exc)
        server.discard()
        unavailable(f"the server did not start: {detail.strip()[-500:]} {log[-500:]}")
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.discard()


def db_url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of ``backend`` ("sqlite" or "postgresql") for one test, dropped after it."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_db()
    request.addfinalizer(lambda: server.drop_db(name))
    return server.url(name)
