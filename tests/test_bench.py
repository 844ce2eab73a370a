"""The benchmark harness (bench/run.py) on the test stack: a short, bounded wrk cell per
endpoint through nginx with the benchmark's own inputs (a 640x480 face JPEG built from
../shared, real sentences), every response 200 and wrk's JSON summary parsed."""
from __future__ import annotations

import shutil

import pytest

from bench import run as bench
from conftest import SHARED


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    if not shutil.which("wrk"):
        pytest.fail("wrk is not installed (apt-get install wrk; .ci/run installs it)")
    if not (SHARED / "data" / "nose" / "labels.csv").exists() or not bench.SENTENCES.exists():
        pytest.skip(f"shared data not found under {SHARED}: the benchmark's inputs are built from it")
    return bench.build_inputs(tmp_path_factory.mktemp("bench"))


def test_inputs_are_realistic(inputs):
    import cv2
    import numpy as np
    img = cv2.imdecode(np.frombuffer(inputs["files"]["multipart"].read_bytes().split(b"\r\n\r\n", 1)[1],
                                     np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
    assert len(inputs["example_sentence"].split()) == 10
    assert inputs["sentences"] > 1000 and inputs["paragraphs"] > 1000


@pytest.mark.parametrize("endpoint", ["image-bin", "image-64", "translate", "result"])
def test_wrk_cell_through_nginx(stack, inputs, endpoint):
    r = bench.wrk_cell(stack.base, endpoint, inputs, conc=4, duration=1, max_requests=400)
    assert r["errors"] == 0, r["error_detail"]
    assert r["requests"] > 0 and r["rps"] > 0
    assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]


def test_history_benchmark_accounts_for_every_request(inputs, tmp_path):
    """bench/history.py, one short round on SQLite: both stacks answer every request (with the
    API key the accounts need), and every request the meta stack answered is a record or a
    counted drop (its exit status says so)."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    out = tmp_path / "history.json"
    p = subprocess.run([sys.executable, "bench/history.py", "--rounds", "1", "--duration", "1",
                        "--databases", "sqlite", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    cells = [r for r in res["rows"] if "endpoint" in r]
    assert {(r["mode"], r["endpoint"]) for r in cells} == {(m, e) for m in ("off", "meta")
                                                           for e in ("image-bin", "translate")}
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in cells)
    (rec,) = [r for r in res["rows"] if "records" in r]
    assert rec["records"] + rec["dropped_metric"] >= rec["requests_sent"] > 0


@pytest.mark.parametrize("kind", ["nose", "nose_whole"])
def test_upper_bound_runs_what_the_server_runs(inputs, kind):
    """The in-process bound of /image-bin is the face pipeline (decode, detector, a crop per
    face, the landmark net) since the face detector; nose_whole is the old whole-image path.
    The worker stops with an error if the bench photo's face is not found."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    jpg = inputs["files"]["multipart"].parent / "face.jpg"
    p = subprocess.run([sys.executable, "bench/run.py", "--bound-worker", kind, "--seconds", "0.5",
                        "--bound-files", json.dumps({"jpeg": str(jpg)})], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["kind"] == kind and r["items"] > 0 and r["seconds"] >= 0.5
