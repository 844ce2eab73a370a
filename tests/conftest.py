"""Shared fixtures.

``stack`` (session scope) runs the real thing on free loopback ports: uWSGI
with app.ini (2 workers x 4 threads, lazy-apps) behind nginx rendered from
nginx/*.template by nginx/render.sh -- the very files the containers and
start.sh use -- with pid files, logs, sockets and the prometheus multiprocess
directory in a temporary directory (app/runtime/launcher.py, shared with the
benchmark and scripts/faults.py). Torn down at the end of the session.

In parallel (pyproject.toml: pytest-xdist, ``--dist loadfile``) every worker process has
its own ports and temporary directories, and a session ``stack`` if it runs a test that takes
one; a file's tests run in one worker, in their order (see "parallel runs" below).
"""
from __future__ import annotations

import base64
import csv
import functools
import os
import re
import warnings
from pathlib import Path

import pytest
import requests

try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pytest-xdist not installed: serial runs only
    LoadFileScheduling = None

from app.runtime import launcher
from app.runtime.launcher import INCIDENT, ROOT, VENV, free_port, stop_process, synthetic_face, wait_port  # noqa: F401

SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
NOSE_DATA = SHARED / "data" / "nose"
STARTUP_TIMEOUT = float(os.environ.get("E2E_STARTUP_TIMEOUT", "300"))


def in_ci() -> bool:
    """CI is set (``.ci/run``: CI=true), where every tool and the shared data a check needs are installed."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str):
    """pytest.skip(reason) on a developer's machine; in CI a failure, because there a missing
    tool or data set means the CI setup is broken, and a skip would hide the check."""
    if in_ci():
        pytest.fail(f"{reason} [CI is set: a check CI is meant to run must not be skipped]", pytrace=False)
    pytest.skip(reason)


def uwsgi_bin() -> str:
    try:
        return launcher.uwsgi_bin()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def nginx_bin() -> str:
    try:
        return launcher.nginx_bin()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


def render_nginx(env: dict) -> str:
    return launcher.render_nginx(env, ROOT)


def start_nginx(env: dict, log_path: Path):
    nginx_bin()
    return launcher.start_nginx(env, log_path, ROOT)


class Stack(launcher.Launcher):
    """The test stack: 2 workers x 4 threads, models loaded before serving, 2 MiB bodies, a
    revision file (``revision_file``, "rev-1"); in ``tmp`` (kept: its logs), nginx's
    directory apart. Ready when every worker answered /version (its models are final then;
    /version also answers when a model failed or MODEL_LOADING=off)."""

    ready_path = "/version"
    probes = 4
    poll_s = 0.5
    startup_timeout = STARTUP_TIMEOUT

    def __init__(self, tmp: Path, extra_env: dict | None = None):
        tmp = Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        self.revision_file = tmp / "REVISION"
        self.revision_file.write_text("rev-1\n")
        super().__init__(tmp, extra_env)

    def defaults(self) -> dict:
        return {
            "APP_REVISION_FILE": str(self.revision_file),
            "WORKERS": "2",
            "THREADS": "4",
            "MAX_BODY_BYTES": str(2 * 1024 * 1024),
            "MODEL_LOADING": "sync",
        }

    def ready_pid(self, body: dict) -> int:
        return body["worker"]["pid"]

    # --- http helpers -------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 120)
        return requests.post(self.url(path), **kw)


def start_stack(tmp: Path, extra_env: dict | None = None, cls=Stack) -> Stack:
    """A started stack (stopped again if it does not come up)."""
    st = cls(tmp, extra_env)
    try:
        st.start()
    except BaseException:
        st.stop()
        raise
    return st


def serve_stack(tmp_path_factory, name: str):
    """A default stack for a fixture's scope: started, its start-up log read, stopped after."""
    st = start_stack(tmp_path_factory.mktemp(name))
    print(f"\n[{name}] up in {st.startup_s:.1f}s at {st.base}")
    st.new_incidents()
    yield st
    st.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    yield from serve_stack(tmp_path_factory, "stack")


# --- parallel runs (pytest-xdist) ---------------------------------------------------------------
#
# pyproject.toml runs the suite with `-n 3 --dist loadfile --no-loadscope-reorder`: a file's tests
# run in one worker process, in their order, and its module-scoped stack starts once. Here the
# files on the session ``stack`` also form one unit (SESSION_STACK_GROUP): one worker runs them
# all on one session stack, as a serial run would, instead of every worker starting a stack of
# its own (seconds of CPU each on 2 cores). (xdist_group marks with --dist loadgroup would say
# the same, but pytest-xdist 3.8 cannot rename pytest 9's node ids: the marks have no effect.)
# The units are handed out in the order below, longest first, so that the worker that finishes
# early takes the short files and all end at about the same time; only the balance depends on
# this order, never a result.

SESSION_STACK_GROUP = "<files on the session stack>"
#: Units that take longest (measured), first; the other files follow in their usual order.
LONGEST_FIRST = ("test_faults.py", SESSION_STACK_GROUP, "test_reload.py", "test_translator.py", "test_cli.py")
_TESTS = Path(__file__).resolve().parent


@functools.cache
def session_stack_files() -> frozenset[str]:
    """Names of the test files whose tests or fixtures take the session ``stack`` (a parameter
    of that name) and that do not define a ``stack`` fixture of their own. From the source,
    because xdist's controller schedules before any worker has collected; a file this misses
    only runs apart, on a stack of its own."""
    uses = re.compile(r"^\s*(?:def test_\w+|@pytest\.fixture[^\n]*\n\s*def \w+)\([^)]*\bstack\b", re.M)
    own = re.compile(r"^def stack\(", re.M)
    out = set()
    for f in _TESTS.glob("test_*.py"):
        src = f.read_text(errors="replace")
        if uses.search(src) and not own.search(src):
            out.add(f.name)
    return frozenset(out)


def _unit(path: Path) -> str:
    return SESSION_STACK_GROUP if path.name in session_stack_files() and path.parent == _TESTS else path.name


if LoadFileScheduling is not None:
    class SessionStackFileScheduling(LoadFileScheduling):
        """--dist loadfile, with the files on the session stack as one unit."""

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SESSION_STACK_GROUP if Path(path).name in session_stack_files() else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadfile" and LoadFileScheduling is not None:
        return SessionStackFileScheduling(config, log)
    return None


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # a stable sort: a file's tests keep their order, the files theirs within a rank
    items.sort(key=lambda item: rank.get(_unit(item.path), len(rank)))
    for item in items:
        fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).get("stack")
        if fixtures and fixtures[-1].scope == "session" and _unit(item.path) != SESSION_STACK_GROUP:
            warnings.warn(f"{item.path.name} uses the session stack but session_stack_files() does not see it: "
                          "under pytest-xdist it runs apart, on a session stack of its own")
            break


def pytest_configure(config):
    config.addinivalue_line("markers", "kills_workers: the test kills uWSGI workers on purpose")
    config.addinivalue_line("markers", "ci_may_skip(reason): this test may be skipped even when CI is set")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI set, a skipped test is reported as failed (unless marked ci_may_skip): the safety
    net behind skip_or_fail() for every pytest.skip / importorskip / skipif in tests/, so that a
    tool or data set missing in CI (chromium, wrk, docker-compose, ../shared, TensorFlow) fails
    the run instead of silently dropping its check."""
    rep = yield
    if (rep.skipped and not hasattr(rep, "wasxfail") and in_ci()
            and item.get_closest_marker("ci_may_skip") is None):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"skipped in CI: {reason}\nCI is set, and a check CI is meant to run must not be skipped "
                        f"(install what it needs, see .ci/run; or mark the test ci_may_skip)")
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at collection (pytest.importorskip at module level)."""
    rep = yield
    if rep.outcome == "skipped" and in_ci():
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI at collection: {rep.longrepr}\nCI is set: a check CI is meant to run must not be skipped"
    return rep


@pytest.fixture(autouse=True)
def _no_worker_deaths(request):
    """Fail the test during which a worker of its ``stack`` (the session's, or the module's own
    where a module overrides the fixture) died unexpectedly, showing why (the uWSGI log:
    faulthandler's stacks, uWSGI's own report); tests marked kills_workers may. Per process:
    under pytest-xdist each worker watches its own stacks."""
    if "stack" not in request.fixturenames:
        yield
        return
    st = request.getfixturevalue("stack")
    st.new_incidents()
    yield
    incidents = st.new_incidents()
    if incidents and request.node.get_closest_marker("kills_workers") is None:
        pytest.fail("a uWSGI worker died during this test:\n\n" + "\n---\n".join(incidents), pytrace=False)


# --- test data -------------------------------------------------------------------

def shared_faces(n: int = 4) -> list[dict]:
    """A few real faces from ../shared (never copied into the repo)."""
    labels = NOSE_DATA / "labels.csv"
    if not labels.exists():
        skip_or_fail(f"shared face data not found at {NOSE_DATA} (set SHARED_DIR or put ../shared beside the repo)")
    rows = []
    with open(labels, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] == "cuhk_net" and row["width"] == "400":
                p = NOSE_DATA / row["path"]
                if p.exists():
                    rows.append({**row, "file": p, "bytes": p.read_bytes()})
            if len(rows) >= n:
                break
    if not rows:
        skip_or_fail("no face images found in the shared data")
    return rows


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
