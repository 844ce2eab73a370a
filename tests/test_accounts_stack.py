"""Accounts on the real stack: nginx -> uWSGI (lazy-apps workers) -> Flask with ``ACCOUNTS=1`` and
``HISTORY=meta`` (the SQLite file in RUN_DIR), a user and a database key made with the CLI
against the stack's own settings; the inference history written by the workers' writer
threads and read back through nginx; schemathesis over the document, which then has
``/auth/token`` and ``/api/history``, with the user's key."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from conftest import start_stack
from test_accounts import PASSWORD, cli
from test_openapi import SCHEMATHESIS_SECONDS, run_schemathesis


@pytest.fixture(scope="module")
def accounts_stack(tmp_path_factory):
    # an environment key too: the launcher's readiness probes (/version) need a credential
    st = start_stack(tmp_path_factory.mktemp("accounts-stack"),
                     {"ACCOUNTS": "1", "HISTORY": "meta", "API_KEYS": "stack-probe-key-0123456789"})
    yield st
    st.stop()


@pytest.fixture(scope="module")
def user_key(accounts_stack):
    env = accounts_stack.env
    cli(env, "users", "create", "erin", "--password-stdin", stdin=PASSWORD + "\n")
    key = cli(env, "keys", "create", "erin", "--label", "stack").stdout.strip()
    assert key
    return key


def test_history_through_the_stack(accounts_stack, user_key):
    st = accounts_stack
    assert st.post("/api/translate", json={"text": "I have a house."}).status_code == 401
    assert st.get("/api/history").status_code == 401
    r = st.post("/api/translate", json={"text": "I have a house."}, headers={"X-API-Key": user_key})
    assert r.status_code == 200, r.text
    rid = r.headers["X-Request-ID"]
    deadline, mine = time.time() + 20, []
    while time.time() < deadline and not mine:  # the writer gathers half a second, then writes
        h = st.get("/api/history", params={"limit": 100}, headers={"X-API-Key": user_key})
        assert h.status_code == 200, h.text
        mine = [x for x in h.json()["records"] if x["request_id"] == rid]
        time.sleep(0.2)
    assert len(mine) == 1, "the record did not reach the database"
    rec = mine[0]
    assert (rec["user"], rec["credential"], rec["model"], rec["status"]) == ("erin", "api_key", "translator", 200)
    assert rec["input"]["text"]["chars"] == len("I have a house.")
    assert rec["output"]["translations"] == r.json()["translations"]
    assert rec["input_text"] is None  # meta: no content
    # an aware UTC time, though SQLite keeps none (schemathesis: "not a date-time")
    assert datetime.fromisoformat(rec["created_at"]).utcoffset() == timedelta(0)


def test_schemathesis_with_accounts(accounts_stack, user_key, tmp_path):
    spec = accounts_stack.get("/openapi.json").json()
    assert {"/auth/token", "/api/history"} <= set(spec["paths"])
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    generated = run_schemathesis(accounts_stack, tmp_path, {"X-API-Key": user_key})
    print(f"\n[schemathesis, ACCOUNTS=1] {generated} cases in {SCHEMATHESIS_SECONDS}s, 0 failures")
