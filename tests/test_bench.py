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
