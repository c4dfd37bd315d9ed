"""A throwaway PostgreSQL server on a free loopback port, for the record-event tests.

Uses Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, package ``postgresql``):
``initdb`` into a fresh temporary directory (trust auth, no fsync), then ``postgres`` itself as
a child process listening on 127.0.0.1 only, with its unix socket in the same directory.
PostgreSQL refuses to run as root, so under root both run as the ``postgres`` system user and
the directory is handed to that user. ``stop()`` shuts the server down and removes everything.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.live import HOST, free_port

SERVER_USER = "postgres"
DATABASE = "test"
INSTALL_HINT = (
    "scripts/test.sh installs them (Debian: apt-get install postgresql), "
    "or point RTBROKER_TEST_POSTGRES_URL at a running server"
)


def _version_key(bindir: str) -> tuple[int, ...]:
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` and ``postgres``, else ``initdb`` on PATH."""
    candidates = [os.path.dirname(path) for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    for bindir in sorted(candidates, key=_version_key, reverse=True):
        if all(os.access(os.path.join(bindir, name), os.X_OK) for name in ("initdb", "postgres")):
            return Path(bindir)
    raise RuntimeError(
        "PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb and "
        f"postgres, and initdb on PATH); {INSTALL_HINT}"
    )


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, serving database ``test`` to user ``postgres``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.run_as: dict[str, Any] = {}
        self.owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, and PostgreSQL refuses to run as root: it runs as the "
                    f"'{SERVER_USER}' system user, which does not exist. Create it "
                    f"(useradd --system --home-dir /var/lib/postgresql {SERVER_USER}; installing "
                    f"Debian's postgresql package does that) or run the tests as another user"
                ) from None
            self.owner = (entry.pw_uid, entry.pw_gid)
            self.run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.root: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SERVER_USER}@{HOST}:{self.port}/{DATABASE}"

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> "PostgresServer":
        """initdb, start on a free port (retrying another port if it was taken), create the database."""
        self.root = Path(tempfile.mkdtemp(prefix="rtbroker-pg-"))
        try:
            if self.owner is not None:
                os.chown(self.root, *self.owner)
            self._initdb(timeout=120.0)
            for attempt in range(attempts):
                self.port = free_port()
                if self._launch(timeout):
                    break
                if attempt == attempts - 1 or "already in use" not in self._log_tail():
                    raise RuntimeError(
                        f"PostgreSQL ({self.bindir}) did not start on {HOST}:{self.port}; "
                        f"server log:\n{self._log_tail()}"
                    )
            self._create_database()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self, timeout: float) -> None:
        command = [
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]
        result = subprocess.run(
            command, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
            **self.run_as,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed with exit code {result.returncode}:\n{result.stdout.decode(errors='replace')}"
            )

    def _launch(self, timeout: float) -> bool:
        """Start ``postgres``; True once it accepts connections, False if it exited."""
        assert self.root is not None
        command = [
            str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self.root}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "logging_collector=off", "-c", "shared_buffers=16MB", "-c", "max_connections=100",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self.run_as,
            )
        import psycopg  # test extra; imported here so that conftest.py loads without it

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                psycopg.connect(host=HOST, port=self.port, user=SERVER_USER, dbname="postgres", connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"PostgreSQL did not accept connections on {HOST}:{self.port} within {timeout:.0f}s; "
            f"server log:\n{self._log_tail()}"
        )

    def restart(self, down_for: float = 0.0, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown: every connection is cut), wait *down_for* seconds,
        and start it again on the same port with the same data."""
        process, self.process = self.process, None
        assert process is not None, "restart() needs a started server"
        process.send_signal(signal.SIGINT)
        process.wait(timeout)
        time.sleep(down_for)
        if not self._launch(timeout):
            raise RuntimeError(f"PostgreSQL did not start again on port {self.port}; server log:\n{self._log_tail()}")

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host=HOST, port=self.port, user=SERVER_USER, dbname="postgres", connect_timeout=5, autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL if that takes too long; then remove the directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
