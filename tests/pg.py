"""A real PostgreSQL server for the tests: Debian's postgresql binaries, initdb + pg_ctl in a
temporary directory on a free loopback port, trust authentication on loopback only. As root
(CI), the server runs as the ``postgres`` user (initdb refuses root)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from app.runtime.launcher import free_port


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class Postgres:
    def __init__(self):
        # its own directory under /tmp: pytest's tmp_path is 0700 root, which postgres cannot enter
        self.root = Path(tempfile.mkdtemp(prefix="modelserver-pg-"))
        self.dir, self.port = self.root / "pgdata", free_port()
        self.as_user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd, **kw):
        kw = {"capture_output": True, **kw} if "stdout" not in kw else kw
        return subprocess.run([*self.as_user, *cmd], check=True, text=True, timeout=120, **kw)

    def start(self) -> "Postgres":
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.dir.mkdir(parents=True)
        if self.as_user:
            os.chmod(self.root, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(initdb, "-D", str(self.dir), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self._start()
        return self

    def _start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir), "-o", opts, "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "start", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self) -> None:
        """A fast shutdown (clients disconnected) and a start with the same options."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "-t", "60", "stop")
        self._start()

    def stop(self) -> None:
        subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        self._run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def wait(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if subprocess.run([pg_bin("pg_isready") or "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not come up")
