"""Versioned model repository: a new version folder, then a rollback by pinning the old one in
model.json, each through the chain reload while clients keep sending requests; no request
may fail, and /version, /v2, the repository index and the metrics show which version each
worker serves."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time

import pytest
import requests

from app.serving.repository import version_dir
from conftest import b64, start_stack, synthetic_face

RELOAD_TIMEOUT = float(os.environ.get("E2E_RELOAD_TIMEOUT", "240"))
OLD, NEW = version_dir("nose_tracker").name, "99.0.0"  # the shipped version, then a higher one


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("versions")
    repo = tmp / "models"
    model = repo / "nose_tracker"
    shutil.copytree(version_dir("nose_tracker"), model / OLD)
    (model / "model.json").write_text(json.dumps({"servable": "nose_tracker"}))
    st = start_stack(tmp, {"MODEL_REPOSITORY": str(repo), "ENABLED_MODELS": "nose_tracker", "PRELOAD_LIBRARIES": "0"})
    yield st, model
    st.stop()


class Load(threading.Thread):
    """/image-bin, /v2 infer and /version in a loop; every answer recorded."""

    def __init__(self, stack, kind: int):
        super().__init__(daemon=True)
        self.stack, self.kind = stack, kind
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: list[tuple[float, str, int]] = []  # (t, version, pid) from /version
        self.img = synthetic_face(160, 120, 8 + kind)
        self.n = 0

    def one(self):
        if self.kind == 0:
            r = self.stack.post("/image-bin", files={"image": ("f.jpg", self.img, "image/jpeg")}, timeout=120)
        elif self.kind == 1:
            r = self.stack.post("/v2/models/nose_tracker/infer", json={"inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(self.img)]}]}, timeout=120)
        else:
            r = self.stack.get("/version", timeout=120)
            if r.status_code == 200:
                self.versions.append((time.time(), r.json()["models"]["nose_tracker"]["version"],
                                      r.json()["worker"]["pid"]))
        if r.status_code != 200:
            self.failures.append(f"{r.status_code}: {r.text[:200]}")

    def run(self):
        while not self.stop.is_set():
            try:
                self.one()
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.n += 1
            time.sleep(0.01)


def _switch(stack, expect: str) -> tuple[float, int]:
    """Chain-reload under load until every worker serves ``expect``; (seconds, requests)."""
    old_pids = set(stack.worker_pids())
    load = [Load(stack, k) for k in (0, 1, 2, 2)]
    for t in load:
        t.start()
    try:
        time.sleep(0.5)
        t0 = time.time()
        os.utime(stack.env["TOUCH_CHAIN_RELOAD"])
        while time.time() - t0 < RELOAD_TIMEOUT:
            now = set(stack.worker_pids())
            seen = {pid for t in load for (ts, v, pid) in t.versions if ts > t0 and v == expect}
            if not (now & old_pids) and 0 not in now and now <= seen:
                break
            time.sleep(0.3)
        elapsed = time.time() - t0
        time.sleep(0.5)
    finally:
        for t in load:
            t.stop.set()
        for t in load:
            t.join(150)
    failures = [f for t in load for f in t.failures]
    assert not failures, failures[:5]
    now = set(stack.worker_pids())
    assert not (now & old_pids), stack.log_tail()
    # once a new worker answered, it only ever reported the new version
    assert all(v == expect for t in load for (ts, v, pid) in t.versions if pid in now)
    return elapsed, sum(t.n for t in load)


def _live_versions(stack) -> dict[int, str]:
    """pid -> version of every live worker's model_info gauge."""
    text = stack.get("/metrics").text
    out = {}
    for line in re.findall(r'^model_info\{[^}]*model="nose_tracker"[^}]*\}', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out[int(labels["pid"])] = labels["version"]
    return out


def test_new_version_then_rollback_without_a_failed_request(versioned):
    stack, model = versioned
    assert stack.get("/version").json()["models"]["nose_tracker"]["version"] == OLD

    # a new version folder: the highest version is served after the chain reload
    shutil.copytree(model / OLD, model / NEW)
    meta = json.loads((model / NEW / "metadata.json").read_text())
    (model / NEW / "metadata.json").write_text(json.dumps({**meta, "version": NEW}))
    elapsed, n = _switch(stack, NEW)
    print(f"\n[versions] {OLD} -> {NEW}: all workers on {NEW} after {elapsed:.1f}s, {n} requests, 0 failed")
    assert set(_live_versions(stack).values()) == {NEW}
    assert set(_live_versions(stack)) == set(stack.worker_pids())
    assert stack.get("/v2/models/nose_tracker").json()["versions"] == [NEW]
    assert stack.get(f"/v2/models/nose_tracker/versions/{OLD}").status_code == 404
    index = {r["version"]: r for r in stack.post("/v2/repository/index").json()}
    assert index[NEW]["state"] == "READY" and index[OLD]["state"] == "UNAVAILABLE"
    assert "not the served version" in index[OLD]["reason"]
    html = stack.get("/dashboard").text
    assert re.search(r'id="model-nose_tracker".*?data-field="version">' + re.escape(NEW), html, re.S)

    # rollback: pin the old version in model.json
    (model / "model.json").write_text(json.dumps({"servable": "nose_tracker", "version": OLD}))
    elapsed, n = _switch(stack, OLD)
    print(f"[versions] rollback to {OLD}: after {elapsed:.1f}s, {n} requests, 0 failed")
    assert set(_live_versions(stack).values()) == {OLD}
    r = stack.post(f"/v2/models/nose_tracker/versions/{OLD}/infer", json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(synthetic_face(90, 90, 1))]}]})
    assert r.status_code == 200 and r.json()["model_version"] == OLD


def test_a_pin_to_a_missing_version_fails_that_model_only(versioned, tmp_path):
    """A bad pin is a broken model: /readyz says which and why (checked on a fresh registry,
    so the running stack is left as it is)."""
    from app.config import Config
    from app.serving.registry import ModelRegistry
    stack, model = versioned
    cfg = Config.from_env({"MODEL_REPOSITORY": str(model.parent), "ENABLED_MODELS": "nose_tracker",
                           "NOSE_TRACKER_VERSION": "7.0.0", "MODEL_LOADING": "off"})
    reg = ModelRegistry(cfg)
    h = reg.handles["nose_tracker"]
    assert h.status == "failed" and "NOSE_TRACKER_VERSION pins '7.0.0'" in h.error
    assert reg.not_ready() == ["nose_tracker"]
