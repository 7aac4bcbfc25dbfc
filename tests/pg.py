"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp directory, 127.0.0.1 only.

    with postgres_server() as url:   # postgresql://postgres@127.0.0.1:<port>/postgres
        ...

initdb refuses to run as root, so under root the server runs as the `postgres` system user (which
the postgresql package creates; scripts/setup.sh installs it). The data directory lives in a fresh
directory under the system temp dir (pytest's tmp dirs are private to root, so `postgres` could not
enter them), and the unix socket goes there too, so nothing touches a system-wide server.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from helpers import free_port


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # Debian keeps them off PATH
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def why_unavailable() -> str | None:
    """A reason to skip, or None when a server can be started here."""
    if find_pg_bin() is None:
        return "PostgreSQL is not installed (scripts/setup.sh installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed"
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private server, yield its URL, stop it and delete its files."""
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="loraclf-pg-"))
    data, log = root / "data", root / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*args: str) -> None:
        r = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            extra = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {r.stdout}{r.stderr}{extra}")

    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
