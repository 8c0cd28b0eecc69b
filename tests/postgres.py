"""A real PostgreSQL server for tests, started by the test session itself (generic, reusable).

``postgres_server`` (session scope) runs ``initdb`` and ``pg_ctl`` from the PostgreSQL 15 binaries
into a temporary folder, as an unprivileged system user when the tests run as root (PostgreSQL
refuses to run as root), listening on loopback on a free port with trust authentication.
``postgres_url`` (function scope) creates a fresh database per test and yields its SQLAlchemy URL
(``postgresql+psycopg://...``). Tests are skipped with the reason when the binaries or psycopg
are missing. Import both fixtures in a conftest: ``from postgres import postgres_server, postgres_url`` (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PG_BIN_ENV = "SOPAGENT_PG_BIN"
"""Set to a folder holding initdb and pg_ctl to use other binaries."""
PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/pgsql/bin")
PG_USER = "sopagent-pg"
"""The system user the server runs as when the tests run as root."""


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    candidates = [os.environ.get(PG_BIN_ENV, "")] + list(PG_BIN_CANDIDATES)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(command: list[str]) -> list[str]:
    """Run as the unprivileged user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_USER, "--"] + command


def _ensure_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL server."""

    bin_dir: Path
    folder: Path
    port: int

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database (for CREATE DATABASE)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        subprocess.run(_as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                                 "stop"]), capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb into a new temporary folder and start a server on a free loopback port."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql-15 "
                                f"or set {PG_BIN_ENV}")
    _ensure_user()
    folder = Path(tempfile.mkdtemp(prefix="sopagent-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, PG_USER)
    subprocess.run(_as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                             "--no-sync", "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
                                       "-w", "-t", "60", "-o", options, "start"]), capture_output=True, text=True)
    if started.returncode != 0:
        log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log}")
    return PostgresServer(bin_dir, folder, port)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (skipped when unavailable)."""
    if find_pg_bin() is None:
        pytest.skip(f"PostgreSQL binaries not found (looked in {', '.join(PG_BIN_CANDIDATES)} and ${PG_BIN_ENV})")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server: its SQLAlchemy URL."""
    return postgres_server.create_database()
