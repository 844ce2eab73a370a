"""Bring your own model: ``examples/digits`` (a user's NumPy servable, code and weights in its
own folder) through the harness, then end to end on real uWSGI + nginx stacks that serve a
temporary model repository holding a copy of it -- no edit under ``app/``.

The digits come from scikit-learn's bundled data (``.ci/run`` installs
``examples/digits/requirements-train.txt``; elsewhere the module is skipped without it).
The expected labels were observed on version 1's weights; a retrained version must update them.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, Stack

if os.environ.get("CI"):
    import sklearn.datasets  # noqa: F401  (CI installs it: a missing one must fail, not skip)
else:
    pytest.importorskip("sklearn.datasets", reason="pip install -r examples/digits/requirements-train.txt")
from sklearn.datasets import load_digits  # noqa: E402

from app.serving.errors import ApiError, InvalidInput, OverLimit, TooLarge  # noqa: E402
from app.serving.harness import load_servable, predict, v2_infer  # noqa: E402

MODEL = ROOT / "examples" / "digits"
VERSION_DIR = MODEL / "1"
#: Dataset indices in the held-out TEST split of train.py (seed 0), the labels version 1 gives
#: them, and their true labels: right on the first ten, wrong on the last two (a 4 read as 7,
#: a 6 read as 5; 4 of the 270 test digits are misread).
INDICES = [2, 39, 40, 42, 43, 47, 52, 55, 57, 62, 746, 792]
PREDICTED = [2, 9, 8, 1, 7, 1, 7, 0, 2, 3, 7, 5]
TRUE = [2, 9, 8, 1, 7, 1, 7, 0, 2, 3, 4, 6]
STARTUP_LIMIT_S = 60  # each stack below starts in seconds: no TensorFlow (PRELOAD_LIBRARIES=0)

INPUTS_META = [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]},
               {"name": "png", "datatype": "BYTES", "shape": [-1]}]
OUTPUTS_META = [{"name": "label", "datatype": "INT32", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_path = list(sys.path)
try:
    train = _module("digits_train", MODEL / "train.py")  # it puts its folder on sys.path for mlp.py
finally:
    sys.path[:] = _path
mlp = train.mlp


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def sv():
    return load_servable(MODEL)


def b64_png(grey: np.ndarray, ext: str = ".png") -> str:
    import cv2
    ok, buf = cv2.imencode(ext, grey)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def image_tensor(images) -> dict:
    arr = np.asarray(images, dtype=np.float32)
    return {"name": "image", "datatype": "FP32", "shape": list(arr.shape), "data": arr.ravel().tolist()}


def outputs_by_name(body: dict) -> dict:
    return {o["name"]: o for o in body["outputs"]}


# --- the artifact and its training --------------------------------------------------------

def test_indices_are_held_out_test_digits(digits):
    images, labels, stats = train.dedupe(digits.images.astype(np.float32), digits.target)
    assert stats["kept"] == len(images) == len(digits.images)  # no duplicates: indices unchanged
    test = set(train.split(labels, seed=0)["test"].tolist())
    assert set(INDICES) <= test
    assert digits.target[INDICES].tolist() == TRUE


def test_artifact_small_and_described():
    weights = VERSION_DIR / "weights.npz"
    meta = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert weights.stat().st_size < 200_000
    assert meta["sha256"]["weights.npz"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["version"] == "1" and meta["framework"] == "numpy"
    assert meta["metrics"]["dev_accuracy"] >= 0.97 and meta["metrics"]["test_accuracy"] >= 0.97
    assert "CC BY 4.0" in meta["data"]["licence"] and "BSD-3" in meta["data"]["licence"]
    assert sum(meta["data"]["split"].values()) == meta["data"]["kept"]
    card = (VERSION_DIR / "MODEL_CARD.md").read_text()
    for needle in ("CC BY 4.0", meta["sha256"]["weights.npz"], "python examples/digits/train.py",
                   f"| test | {meta['data']['split']['test']} | {meta['metrics']['test_accuracy']:.4f} |"):
        assert needle in card
    req = (MODEL / "requirements-train.txt").read_text()
    assert re.search(r"^scikit-learn==\d+\.\d+", req, re.M)


def test_train_reproduces_the_metrics(tmp_path):
    """The one command of the model card, into a scratch folder: the same split and metrics
    (bit-identical weights on this platform; elsewhere float sums may round differently)."""
    out = subprocess.run([sys.executable, str(MODEL / "train.py"), "--out", str(tmp_path / "1")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    new = json.loads((tmp_path / "1" / "metadata.json").read_text())
    old = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert new["data"] == old["data"]
    for k in ("dev_accuracy", "test_accuracy"):
        assert abs(new["metrics"][k] - old["metrics"][k]) <= 0.015, (k, new["metrics"][k], old["metrics"][k])
    assert mlp.load_weights(tmp_path / "1" / "weights.npz")["W1"].shape == (64, 64)


# --- harness: no server ---------------------------------------------------------------------

def test_harness_loads_the_folder(sv):
    assert sv.name == "digits" and sv.version == "1"
    assert type(sv).__name__ == "DigitsClassifier"
    assert sv.max_batch_size == 64  # DIGITS_BATCH_MAX's default: served by the dynamic batcher
    assert [t.as_metadata() for t in sv.inputs] == INPUTS_META
    assert [t.as_metadata() for t in sv.outputs] == OUTPUTS_META
    extra = sv.extra_metadata()
    meta = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert extra["accuracy"] == {"dev": meta["metrics"]["dev_accuracy"], "test": meta["metrics"]["test_accuracy"]}


def test_harness_predicts_real_digits(sv, digits):
    out = predict(sv, {"image": digits.images[INDICES]})
    assert out["label"].dtype == np.int32 and out["label"].tolist() == PREDICTED
    p = out["probabilities"]
    assert p.dtype == np.float32 and p.shape == (len(INDICES), 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (p.argmax(axis=1) == out["label"]).all()
    assert sum(a == b for a, b in zip(PREDICTED, TRUE)) == 10


def test_harness_batch_equals_one_by_one(sv, digits):
    batch = predict(sv, {"image": digits.images[INDICES]})["probabilities"]
    single = np.concatenate([predict(sv, {"image": digits.images[i:i + 1]})["probabilities"] for i in INDICES])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)


def test_harness_whole_test_split_accuracy(sv, digits):
    test = train.split(digits.target, seed=0)["test"]
    labels = predict(sv, {"image": digits.images[test]})["label"]
    meta = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert round(float((labels == digits.target[test]).mean()), 4) == meta["metrics"]["test_accuracy"]


@pytest.mark.parametrize("inputs, message", [
    ({"image": np.zeros((2, 8, 7), np.float32)}, "shape [2, 8, 7]"),
    ({"image": np.zeros((8, 8), np.float32)}, "add the batch dimension"),
    ({"image": np.zeros((1, 64), np.float32)}, "expected [N, 8, 8]"),
    ({"image": np.zeros((0, 8, 8), np.float32)}, "no images"),
    ({"image": np.full((1, 8, 8), 17, np.float32)}, "pixel values must be 0..16"),
    ({"image": np.full((1, 8, 8), 255, np.float32)}, "16/255"),
    ({"image": -np.ones((1, 8, 8), np.float32)}, "image 0 has values -1..-1"),
    ({"image": np.where(np.arange(128).reshape(2, 8, 8) == 70, np.nan, 0).astype(np.float32)},
     "image 1 holds NaN"),
    ({"image": np.full((1, 8, 8), np.inf, np.float32)}, "NaN or infinity"),
    ({"image": np.array([[["a"] * 8] * 8])}, "must be numbers"),
    ({"image": np.zeros((1, 8, 8)), "png": ["x"]}, "exactly one kind"),
    ({"pixels": np.zeros((1, 8, 8))}, "unknown input"),
    ({"png": ["not base64!"]}, "png[0] is not valid base64"),
    ({"png": [base64.b64encode(b"hello").decode()]}, "png[0]: the upload is not a recognised image"),
    ({"png": [b"\xff\xfe"]}, "png[0] is not base64 text"),
])
def test_harness_bad_inputs(sv, inputs, message):
    with pytest.raises(InvalidInput) as exc:
        predict(sv, inputs)
    assert exc.value.status == 400
    assert message in exc.value.message, exc.value.message


def test_harness_blank_png(sv):
    with pytest.raises(InvalidInput) as exc:
        predict(sv, {"png": [b64_png(np.full((40, 30), 255, np.uint8))]})
    assert exc.value.code == "blank_image" and exc.value.message == "png[0] is blank: no strokes that differ " \
                                                                    "from the background"


def test_harness_settings_from_env(digits):
    few = load_servable(MODEL, env={"DIGITS_MAX_IMAGES": "2", "DIGITS_BATCH_MAX": "0"}, warmup=False)
    assert few.max_batch_size == 0
    with pytest.raises(OverLimit) as exc:
        predict(few, {"image": digits.images[:3]})
    assert exc.value.status == 422 and "DIGITS_MAX_IMAGES" in exc.value.message
    with pytest.raises(ValueError, match="DIGITS_BATCH_MAX"):
        load_servable(MODEL, env={"DIGITS_BATCH_MAX": "-1"})
    small = load_servable(MODEL, env={"MAX_IMAGE_PIXELS": "1000"}, warmup=False)  # a core setting
    with pytest.raises(TooLarge) as exc:
        predict(small, {"png": [b64_png(np.full((40, 30), 255, np.uint8))]})
    assert exc.value.status == 413 and exc.value.message.startswith("png[0]: image is 30x40 = 1200 pixels")


def test_harness_png_path(sv, digits):
    """The same digits as encoded images: drawn 4x (dark on white), inverted (light on dark),
    and 16x inside a bigger off-centre JPEG canvas: each is converted back and read the same."""
    drawn = [mlp.render(digits.images[i]) for i in INDICES]
    for pngs in ([b64_png(g) for g in drawn],
                 [b64_png(255 - g) for g in drawn],
                 [b64_png(np.pad(mlp.render(digits.images[i], 16), ((40, 60), (100, 30)), constant_values=255), ".jpg")
                  for i in INDICES]):
        assert predict(sv, {"png": pngs})["label"].tolist() == PREDICTED
    # an already centred digit comes back exactly (index 2's ink spans columns 1..6 of 8)
    np.testing.assert_allclose(mlp.digit_from_image(drawn[0]), digits.images[2], atol=0.1)


def test_harness_v2_infer(sv, digits):
    body = {"inputs": [image_tensor(digits.images[INDICES[:3]])], "parameters": {}}
    out = v2_infer(sv, json.loads(json.dumps(body)))
    assert out["model_name"] == "digits" and out["model_version"] == "1"
    o = outputs_by_name(out)
    assert o["label"] == {"name": "label", "datatype": "INT32", "shape": [3], "data": PREDICTED[:3]}
    assert o["probabilities"]["shape"] == [3, 10] and len(o["probabilities"]["data"]) == 30
    with pytest.raises(ApiError, match="datatype 'INT32'; expected FP32"):
        v2_infer(sv, {"inputs": [{**image_tensor(digits.images[:1]), "datatype": "INT32"}]})
    with pytest.raises(InvalidInput, match="pixel values must be 0..16"):
        v2_infer(sv, {"inputs": [image_tensor(digits.images[:1] * 16)]})


def test_harness_refuses_corrupt_weights(tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(MODEL, copy, ignore=shutil.ignore_patterns("__pycache__"))
    w = copy / "1" / "weights.npz"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match metadata.json"):
        load_servable(copy)


# --- end to end: real uWSGI + nginx serving a temporary repository --------------------------

class QuickStack(Stack):
    """A stack that must be up within STARTUP_LIMIT_S (not conftest's 300 s)."""

    def wait_workers(self, n: int, timeout: float):
        return super().wait_workers(n, min(timeout, STARTUP_LIMIT_S))


def user_repository(root: Path, broken: bool = False) -> Path:
    """A model repository as a user would lay it out: the built-in nose tracker linked in, the
    digits folder copied in; ``broken``: plus ``digits_broken``, a copy without its weights."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "nose_tracker").symlink_to(ROOT / "models" / "nose_tracker", target_is_directory=True)
    shutil.copytree(MODEL, repo / "digits", ignore=shutil.ignore_patterns("__pycache__"))
    if broken:
        shutil.copytree(MODEL, repo / "digits_broken", ignore=shutil.ignore_patterns("__pycache__"))
        (repo / "digits_broken" / "1" / "weights.npz").unlink()
    return repo


def start(tmp: Path, env: dict) -> QuickStack:
    st = QuickStack(tmp, extra_env={"PRELOAD_LIBRARIES": "0", "MODEL_LOADING": "sync", **env})
    try:
        st.start()
        assert st.startup_s < STARTUP_LIMIT_S
    except BaseException:
        st.stop()
        raise
    print(f"\n[byo stack] up in {st.startup_s:.1f}s at {st.base}")
    return st


def stop(st: QuickStack) -> None:
    incidents = st.new_incidents()
    st.stop()
    assert not incidents, "a uWSGI worker died:\n" + "\n---\n".join(incidents)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("byo")
    repo = user_repository(tmp)
    st = start(tmp, {"MODEL_REPOSITORY": str(repo), "ENABLED_MODELS": "digits,nose_tracker"})
    yield st
    stop(st)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("byo_broken")
    repo = user_repository(tmp, broken=True)
    st = start(tmp, {"MODEL_REPOSITORY": str(repo), "ENABLED_MODELS": "digits,digits_broken",
                     "WORKERS": "1", "DIGITS_BATCH_MAX": "8"})
    yield st
    stop(st)


def infer(st: Stack, body: dict, model: str = "digits"):
    return st.post(f"/v2/models/{model}/infer", json=body)


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


def test_e2e_model_metadata(served):
    r = served.get("/v2/models/digits")
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "digits" and meta["versions"] == ["1"] and meta["platform"] == "numpy"
    assert meta["inputs"] == INPUTS_META and meta["outputs"] == OUTPUTS_META
    p = meta["parameters"]
    assert p["status"] == "ready" and p["frameworks"] == ["numpy", "opencv"]
    assert p["batching"] == {"max_batch_size": 64, "batch_wait_ms": 2.0}
    assert p["description"] == json.loads((MODEL / "model.json").read_text())["description"]
    assert p["accuracy"]["test"] == json.loads((VERSION_DIR / "metadata.json").read_text())["metrics"]["test_accuracy"]
    assert set(p["sha256"]) == {"weights.npz", "metadata.json", "MODEL_CARD.md"}
    assert served.get("/v2/models/digits/versions/1").json()["inputs"] == INPUTS_META
    assert served.get("/v2/models/digits/ready").json() == {"name": "digits", "version": "1", "ready": True}


def test_e2e_infer_real_digits(served, digits):
    r = infer(served, {"id": "req-7", "inputs": [image_tensor(digits.images[INDICES])]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "digits" and body["model_version"] == "1" and body["id"] == "req-7"
    o = outputs_by_name(body)
    assert o["label"] == {"name": "label", "datatype": "INT32", "shape": [len(INDICES)], "data": PREDICTED}
    probs = np.array(o["probabilities"]["data"]).reshape(o["probabilities"]["shape"])
    assert probs.shape == (len(INDICES), 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the README's first example (dataset image 0, a zero) as nested lists, label only
    r = infer(served, {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8],
                                   "data": digits.images[0].astype(int).tolist()}], "outputs": [{"name": "label"}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"] == [{"name": "label", "datatype": "INT32", "shape": [1], "data": [0]}]


def test_e2e_infer_png(served, digits):
    pngs = [b64_png(np.pad(mlp.render(digits.images[i], 8), 12, constant_values=255)) for i in INDICES]
    r = infer(served, {"inputs": [{"name": "png", "datatype": "BYTES", "shape": [len(pngs)], "data": pngs}]})
    assert r.status_code == 200, r.text
    assert outputs_by_name(r.json())["label"]["data"] == PREDICTED


@pytest.mark.parametrize("tensor, message", [
    ({"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [255] + [0] * 63}, "pixel values must be 0..16"),
    ({"name": "image", "datatype": "FP32", "shape": [1, 8, 7], "data": [0] * 56}, "expected [-1, 8, 8]"),
    ({"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [0] * 63}, "needs 64 elements"),
    ({"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "data": [math.nan] * 64}, "finite"),
    ({"name": "image", "datatype": "FP64", "shape": [1, 8, 8], "data": [0] * 64}, "expected FP32"),
    ({"name": "png", "datatype": "BYTES", "shape": [1], "data": ["@@@"]}, "png[0] is not valid base64"),
])
def test_e2e_bad_tensor_400(served, tensor, message):
    r = served.post("/v2/models/digits/infer", data=json.dumps({"inputs": [tensor]}),  # NaN: a JSON extension
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert message in body["error"], body


def test_e2e_concurrent_requests_batched(served, digits):
    """Concurrent one-image requests go through the dynamic batcher; each gets its own answer."""
    idx = INDICES * 3

    def one(i):
        r = infer(served, {"inputs": [image_tensor(digits.images[i:i + 1])]})
        assert r.status_code == 200, r.text
        return outputs_by_name(r.json())["label"]["data"][0]

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(one, idx))
    assert got == PREDICTED * 3
    text = served.get("/metrics").text
    assert metric(text, "model_batch_requests_count", model="digits", version="1") >= 1


def test_e2e_readyz(served):
    meta = json.loads((VERSION_DIR / "metadata.json").read_text())
    for _ in range(4):  # both workers
        r = served.get("/readyz")
        assert r.status_code == 200, r.text
        models = r.json()["models"]
        assert set(models) == {"digits", "nose_tracker"}
        assert models["digits"]["status"] == "ready" and models["digits"]["version"] == "1"
        assert models["digits"]["sha256"] == meta["sha256"]["weights.npz"]  # the primary artifact's
        assert models["nose_tracker"]["status"] == "ready"
    assert served.get("/v2/health/ready").json() == {"ready": True}


def test_e2e_metrics(served, digits):
    before = served.get("/metrics").text
    n0 = metric(before, "model_items_total", model="digits", version="1") \
        if 'model_items_total{model="digits",version="1"}' in before else 0.0
    r = infer(served, {"inputs": [image_tensor(digits.images[INDICES])]})
    assert r.status_code == 200
    text = served.get("/metrics").text
    assert metric(text, "model_inference_seconds_count", model="digits", version="1") >= 1
    assert metric(text, "model_items_total", model="digits", version="1") >= n0 + len(INDICES)


def test_e2e_openapi_lists_digits(served):
    spec = served.get("/openapi.json").json()
    for path, method in (("/v2/models/{model}", "get"), ("/v2/models/{model}/infer", "post"),
                         ("/v2/models/{model}/versions/{version}/infer", "post")):
        op = spec["paths"][path][method]
        model = next(p for p in op["parameters"] if p["name"] == "model")
        assert "digits" in model["schema"]["enum"], (path, model)
    assert "/v2/repository/index" in spec["paths"]


def test_e2e_dashboard_mentions_digits(served):
    r = served.get("/dashboard")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "digits" in r.text


def test_e2e_repository_index(served):
    r = served.post("/v2/repository/index", json={})
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()}
    assert rows["digits"] == {"name": "digits", "version": "1", "state": "READY"}
    assert rows["nose_tracker"]["state"] == "READY"


def test_e2e_broken_model_leaves_others_serving(broken, digits):
    # the good model serves, with the setting given in the environment
    r = infer(broken, {"inputs": [image_tensor(digits.images[INDICES])]})
    assert r.status_code == 200, r.text
    assert outputs_by_name(r.json())["label"]["data"] == PREDICTED
    assert broken.get("/v2/models/digits").json()["parameters"]["batching"]["max_batch_size"] == 8
    # readiness: 503 naming the broken model and why
    r = broken.get("/readyz")
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "not_ready" and "digits_broken" in err["message"]
    models = err["models"]
    assert models["digits"]["status"] == "ready"
    assert models["digits_broken"]["status"] == "failed"
    assert "FileNotFoundError" in models["digits_broken"]["error"]
    assert "weights.npz" in models["digits_broken"]["error"]
    assert broken.get("/v2/health/ready").status_code == 503
    # the broken model answers 503 with the reason; its metadata says failed
    r = infer(broken, {"inputs": [image_tensor(digits.images[:1])]}, model="digits_broken")
    assert r.status_code == 503 and "FileNotFoundError" in r.json()["error"], r.text
    assert broken.get("/v2/models/digits_broken").json()["parameters"]["status"] == "failed"
    rows = {row["name"]: row for row in broken.post("/v2/repository/index", json={}).json()}
    assert rows["digits"]["state"] == "READY"
    assert rows["digits_broken"]["state"] == "UNAVAILABLE" and "FileNotFoundError" in rows["digits_broken"]["reason"]
    # the uWSGI log holds the traceback
    log = broken.uwsgi_log.read_text(errors="replace")
    i = log.find("digits_broken")
    assert i >= 0 and "Traceback (most recent call last)" in log[i:], broken.log_tail()
    assert re.search(r"FileNotFoundError: .*digits_broken/1/weights\.npz", log[i:]), broken.log_tail()
