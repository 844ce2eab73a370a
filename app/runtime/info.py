"""Facts about the serving process: uWSGI worker id, start times, worker list."""
from __future__ import annotations

import os
import time

try:  # only importable inside uWSGI
    import uwsgi  # type: ignore
except ImportError:  # pragma: no cover - dev server / tests
    uwsgi = None

PROCESS_STARTED = time.time()


def server_started() -> float:
    """When the server (uWSGI master, else this process) started."""
    if uwsgi is not None:
        try:
            return float(uwsgi.started_on)
        except Exception:
            pass
    return PROCESS_STARTED


def runtime_info() -> dict:
    info = {
        "pid": os.getpid(),
        "started_at": round(PROCESS_STARTED, 3),
        "server": "uwsgi" if uwsgi is not None else "standalone",
        "server_started_at": round(server_started(), 3),
        "uptime_s": round(time.time() - server_started(), 1),
    }
    if uwsgi is not None:
        try:
            info["worker_id"] = uwsgi.worker_id()
            info["workers_configured"] = int(uwsgi.numproc)
            info["master_pid"] = os.getppid()
        except Exception:
            pass
    return info


def workers() -> list[dict]:
    """Every uWSGI worker (pid, status, requests), or just this process."""
    if uwsgi is None:
        return [{"id": 1, "pid": os.getpid(), "status": "idle", "requests": None, "avg_rt_ms": None}]
    out = []
    try:
        for w in uwsgi.workers():
            out.append({
                "id": w.get("id"),
                "pid": w.get("pid"),
                "status": (w.get("status") or b"").decode() if isinstance(w.get("status"), bytes)
                else w.get("status"),
                "requests": w.get("requests"),
                "avg_rt_ms": round((w.get("avg_rt") or 0) / 1000, 1),
                "respawns": w.get("respawn_count"),
            })
    except Exception:
        pass
    return out
