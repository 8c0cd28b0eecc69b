"""A real PostgreSQL server for tests, started by the suite itself.

``initdb`` into a temporary folder, run as an unprivileged system user when the suite runs as
root (PostgreSQL refuses root), listening on loopback only, trust authentication. Fixtures:

* ``postgres_server`` (session): the running server (``url``, ``create_database()``, ``sql()``);
* ``postgres_url`` and ``fresh_postgres_url`` (per test, the same thing): a new, empty database on
  that server, as a SQLAlchemy URL (``postgresql+psycopg://``).

Skips (with the command that fixes it) when the PostgreSQL binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

PG_USER = "sopagent-pg"


def find_bin(name: str) -> str | None:
    """A PostgreSQL binary on PATH or under /usr/lib/postgresql/*/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0, reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", PG_USER, "--"]


class PostgresServer:
    """A throwaway PostgreSQL cluster on loopback."""

    def __init__(self) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does this)")
        self.pg_ctl = pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="sopagent-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.prefix = _as_user()
        if self.prefix:
            shutil.chown(self.root, PG_USER, PG_USER)
        subprocess.run([*self.prefix, initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c max_connections=300 -c fsync=off -c full_page_writes=off")
        subprocess.run([*self.prefix, pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                        "-w", "-t", "60", "start"], check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser on the ``postgres`` database."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(statement)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database for one test (its SQLAlchemy URL)."""
    return postgres_server.create_database()


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database for one test."""
    return postgres_server.create_database()
