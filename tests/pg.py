"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, listening on loopback only (a free port,
its unix socket in that folder), trust authentication, and a fresh database for each test that asks for one.

Debian's `postgresql` package puts initdb and pg_ctl in /usr/lib/postgresql/VERSION/bin (.ci/run installs it). initdb
refuses to run as root, so as root the server runs as the `postgres` user the package creates.
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

SERVER_OPTIONS = [
    "-c", "listen_addresses=127.0.0.1",
    # the tests kill clients and restart the server cleanly, never the machine: fsync guards against power loss only
    "-c", "fsync=off",
    "-c", "max_connections=200",  # several writer processes with a pool each, and a database per test
]


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda f: int(Path(f).parent.name))
    if not folders:
        raise RuntimeError("the PostgreSQL tests need initdb and pg_ctl: install Debian's postgresql package "
                           "(apt-get install postgresql; .ci/run does it)")
    return Path(folders[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = postgres_bin()
        # directly under /tmp: the postgres user cannot enter pytest's tmp folders (mode 0700, owned by root)
        self.root = Path(tempfile.mkdtemp(prefix="ftchat-pg-"))
        self.data, self.socket_dir, self.log = self.root / "data", self.root / "socket", self.root / "server.log"
        self.socket_dir.mkdir()
        self.as_owner = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.socket_dir, "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.port = 0

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self.as_owner, *command], capture_output=True, text=True, timeout=120)
        if result.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                               f"\n{log}")

    def start(self) -> "PostgresServer":
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        self.port = free_port()
        options = " ".join([*SERVER_OPTIONS, "-p", str(self.port), "-k", str(self.socket_dir)])
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every client connection is cut, and the server is back once this returns."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as db:
            db.execute(statement)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"ftchat_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
