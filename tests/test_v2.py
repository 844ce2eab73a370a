"""The Open Inference Protocol (KServe v2 / Triton REST) through nginx, with a real client:
``tritonclient[http]`` on every route, JSON tensors; answers equal the legacy endpoints'."""
from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from app.servables.nose_tracker.contract import preprocess
from app.servables.nose_tracker.model import NoseTracker
from app.serving.repository import version_dir
from conftest import b64, shared_faces, synthetic_face

NOSE_VERSION = version_dir("nose_tracker").name  # the repository's highest version


@pytest.fixture(scope="module")
def client(stack):
    c = httpclient.InferenceServerClient(url=stack.base.removeprefix("http://"), network_timeout=120,
                                         connection_timeout=30)
    yield c
    c.close()


def _bytes_input(name: str, values: list[str]) -> httpclient.InferInput:
    t = httpclient.InferInput(name, [len(values)], "BYTES")
    t.set_data_from_numpy(np.array(values, dtype=object), binary_data=False)
    return t


def _out(name: str) -> httpclient.InferRequestedOutput:
    return httpclient.InferRequestedOutput(name, binary_data=False)


def test_server_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "modelserver" and "model_repository" in meta["extensions"]
    for name in ("nose_tracker", "translator"):
        assert client.is_model_ready(name)
    assert client.is_model_ready("nose_tracker", NOSE_VERSION)
    assert not client.is_model_ready("nose_tracker", "0.0.1")


def test_model_metadata(client):
    m = client.get_model_metadata("nose_tracker")
    assert m["name"] == "nose_tracker" and m["versions"] == [NOSE_VERSION]
    assert m["platform"] == "opencv_dnn_tensorflow_graphdef"
    assert m["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                           {"name": "input", "datatype": "FP32", "shape": [-1, 3, 112, 112]}]
    assert [o["name"] for o in m["outputs"]] == ["nose", "points", "image_size", "face_count", "face_boxes",
                                               "face_scores", "face_points", "output"]
    assert m == client.get_model_metadata("nose_tracker", NOSE_VERSION)
    t = client.get_model_metadata("translator")
    assert t["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert t["outputs"] == [{"name": "translation", "datatype": "BYTES", "shape": [-1]},
                            {"name": "confidence", "datatype": "FP32", "shape": [-1]}]
    assert t["parameters"]["batching"]["max_batch_size"] == 32


def test_repository_index(client):
    index = client.get_model_repository_index()
    # every version is listed: the served one READY, the older translator UNAVAILABLE
    assert {(r["name"], r["version"], r["state"]) for r in index if r["name"] == "translator"} == {
        ("translator", "2026.12.02-step12270", "READY"), ("translator", "2026.11.22-step4076", "UNAVAILABLE")}
    assert {(r["name"], r["state"]) for r in index if r["state"] == "READY"} == {
        ("face_detector", "READY"), ("nose_tracker", "READY"), ("translator", "READY")}
    assert {r["name"]: r["version"] for r in index}["nose_tracker"] == NOSE_VERSION


def test_translator_infer_equals_legacy_endpoint(stack, client):
    texts = ["Good morning.", "I have a house.", "Thank you very much.", "Where is the station?"]
    for beam in (1, 4):
        r = client.infer("translator", [_bytes_input("text", texts)],
                         outputs=[_out("translation"), _out("confidence")],
                         parameters={"beam": beam}, request_id="req-7")
        assert r.get_response()["id"] == "req-7" and r.get_response()["model_name"] == "translator"
        got = [x.decode() if isinstance(x, bytes) else x for x in r.as_numpy("translation").tolist()]
        legacy = stack.post("/api/translate", json={"texts": texts, "beam": beam}).json()
        assert got == legacy["translations"]
        assert r.as_numpy("confidence").dtype == "float32"
        assert r.as_numpy("confidence").tolist() == pytest.approx(legacy["confidences"], abs=1e-6)


def test_nose_infer_image_equals_legacy_endpoint(stack, client):
    faces = shared_faces(3)
    images = [b64(f["bytes"]) for f in faces] + [b64(synthetic_face(320, 240, 5, ".png"))]
    r = client.infer("nose_tracker", [_bytes_input("image", images)],
                     outputs=[_out("nose"), _out("points"), _out("image_size")])
    nose, points, size = r.as_numpy("nose"), r.as_numpy("points"), r.as_numpy("image_size")
    assert nose.shape == (4, 2) and points.shape == (4, 5, 2) and size.tolist()[-1] == [320, 240]
    assert np.array_equal(points[:, 0], nose)
    for i, img in enumerate(images):
        legacy = stack.post("/image-64", json={"image": img}).json()
        assert (legacy["width"], legacy["height"]) == tuple(size[i])
        assert nose[i].tolist() == pytest.approx([legacy["x"], legacy["y"]], abs=1e-6)


def test_nose_infer_raw_tensor_equals_local_model(client):
    import cv2
    faces = shared_faces(2)
    blob = np.concatenate([preprocess(cv2.imdecode(np.frombuffer(f["bytes"], np.uint8), cv2.IMREAD_COLOR))
                           for f in faces])
    t = httpclient.InferInput("input", list(blob.shape), "FP32")
    t.set_data_from_numpy(blob, binary_data=False)
    r = client.infer("nose_tracker", [t], outputs=[_out("output")])
    local = NoseTracker.load(str(version_dir("nose_tracker"))).rows(blob)
    assert r.as_numpy("output").shape == (2, 10)
    assert np.allclose(r.as_numpy("output"), local, atol=1e-5)


@pytest.mark.parametrize("call,status,fragment", [
    (lambda c: c.get_model_metadata("nope"), "404", "unknown model 'nope'"),
    (lambda c: c.get_model_metadata("nose_tracker", "9.9"), "404", "version '9.9' is not served"),
    (lambda c: c.infer("nope", [_bytes_input("text", ["x"])]), "404", "unknown model"),
    (lambda c: c.infer("translator", [_bytes_input("words", ["x"])]), "400", "unknown input 'words'"),
    (lambda c: c.infer("translator", [_bytes_input("text", ["x"])], parameters={"beam": 9}), "400",
     "between 1 and 4"),
    (lambda c: c.infer("translator", [_bytes_input("text", ["x" * 5001])]), "422", "has 5001 characters"),
    (lambda c: c.infer("nose_tracker", [_bytes_input("image", ["bm90IGFuIGltYWdl"])]), "400", "not a recognised image"),
])
def test_errors_through_the_client(client, call, status, fragment):
    with pytest.raises(InferenceServerException) as exc:
        call(client)
    assert exc.value.status() == status and fragment in exc.value.message()


@pytest.mark.parametrize("body,fragment", [
    ({}, "'inputs' must be a non-empty list"),
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, "needs 2 elements, got 1"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "expected BYTES"),
    ({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}, "expected [-1]"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, "must be strings"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"], "extra": 1}]}, "unknown field"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "x"}]},
     "unknown output(s) ['x']"),
])
def test_bad_tensors_are_400_in_the_protocols_shape(stack, body, fragment):
    r = stack.post("/v2/models/translator/infer", json=body)
    assert r.status_code == 400 and set(r.json()) == {"error"} and fragment in r.json()["error"], r.text


def test_nose_raw_tensor_shape_and_values_checked(stack):
    r = stack.post("/v2/models/nose_tracker/infer", json={"inputs": [
        {"name": "input", "shape": [1, 3, 112, 111], "datatype": "FP32", "data": [0.0] * (3 * 112 * 111)}]})
    assert r.status_code == 400 and "expected [-1, 3, 112, 112]" in r.json()["error"]
    r = stack.post("/v2/models/nose_tracker/infer", data=b'{"inputs": [{"name": "input", "shape": [1], '
                   b'"datatype": "FP32", "data": [NaN]}]}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_v2_404_and_not_json(stack):
    r = stack.get("/v2/nothing-here")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = stack.post("/v2/models/translator/infer", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = requests.get(stack.url("/v2/health/ready"), timeout=30)
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_v2_metrics_carry_model_and_version(stack, client):
    client.infer("nose_tracker", [_bytes_input("image", [b64(synthetic_face(64, 64, 3))])])
    text = stack.get("/metrics").text
    assert f'model_items_total{{model="nose_tracker",version="{NOSE_VERSION}"}}' in text
    assert 'http_requests_total{endpoint="v2_infer",method="POST",status="200"}' in text
