"""Every face of a photo (issue 14) through the real stack: the detector + landmark pipeline on
/image-bin, /image-64 and the V2 protocol, its options, the drawn picture, and agreement with
the same pipeline run in-process (training/face_detector/evaluate.py: what the model card's
figures come from). Scenes are composed at test time from held-out test faces of ../shared."""
from __future__ import annotations

import functools
import io

import cv2
import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from app.serving.repository import version_dir
from conftest import NOSE_DATA, b64, shared_faces, skip_or_fail


@functools.lru_cache(maxsize=None)
def scenes(n_faces: tuple = (1, 2, 3, 4), seed: int = 3):
    """640x480 JPEG scenes of held-out test faces 80-200 px wide: [(jpeg bytes, boxes, points)]."""
    if not (NOSE_DATA / "labels.csv").exists():
        skip_or_fail(f"shared face data not found at {NOSE_DATA}")
    from training.face_detector import data as D
    labels = D.load_labels(NOSE_DATA / "labels.csv")
    idx = D.split_indices(labels["source"], seed=0)["test"]
    idx = idx[labels["source"][idx] == "cuhk_net"][:200]
    imgs, scales = D.load_images(NOSE_DATA, labels, idx, 400)
    maker = D.SceneMaker(labels, imgs, scales, idx, seed=seed)
    out = []
    for k in n_faces:
        while True:
            img, boxes, pts = maker.scene(640, 480, n_faces=k, min_w=80, max_w=200)
            # a plain background (no photo with its own face) and every face pasted whole
            if len(boxes) == k and (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all():
                break
        out.append((cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes(), boxes, pts))
    return out


def iou(box: dict, gt) -> float:
    x0, y0 = max(box["x"], gt[0]), max(box["y"], gt[1])
    x1, y1 = min(box["x"] + box["width"], gt[2]), min(box["y"] + box["height"], gt[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (box["width"] * box["height"] + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter)


def nme(p, gt_pts) -> float:
    return float(np.linalg.norm(np.asarray(p) - gt_pts[0]) / np.linalg.norm(gt_pts[1] - gt_pts[2]))


def post_bin(stack, data: bytes, name="scene.jpg", **fields):
    return stack.post("/image-bin", files={"image": (name, data, "image/jpeg")},
                      data={k: str(v) for k, v in fields.items()})


@pytest.fixture(scope="module")
def pipeline():
    from training.face_detector.evaluate import Pipeline
    return Pipeline(version_dir("face_detector") / "face_detector.pb",
                    version_dir("nose_tracker") / "nose_tracker.pb")


def test_every_face_of_a_scene(stack):
    """Each scene's faces are all found (IoU >= 0.5), none more, largest first, the nose within
    0.15 inter-ocular distances; the legacy fields are the most prominent face's nose."""
    for data, gts, pts in scenes():
        r = post_bin(stack, data)
        assert r.status_code == 200, r.text
        body = r.json()
        faces = body["faces"]
        assert len(faces) == len(gts), (len(gts), faces)
        assert body["face_found"] is True and body["face_detector_version"] == version_dir("face_detector").name
        areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
        assert areas == sorted(areas, reverse=True)
        for g in range(len(gts)):
            best = max(range(len(faces)), key=lambda k: iou(faces[k]["box"], gts[g]))
            assert iou(faces[best]["box"], gts[g]) >= 0.5, (g, gts[g], faces)
            assert nme(faces[best]["landmarks"]["nose"], pts[g]) < 0.15, (g, pts[g], faces[best])
            assert 0 < faces[best]["score"] <= 1
            assert set(faces[best]["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
        from app.servables.nose_tracker.faces import prominent
        best = faces[prominent([[f["box"][k] for k in ("x", "y", "width", "height")] for f in faces],
                               [f["score"] for f in faces])]
        nose = best["landmarks"]["nose"]
        assert body["x_px"] == pytest.approx(nose[0], abs=0.02) and body["y_px"] == pytest.approx(nose[1], abs=0.02)
        assert body["x"] == pytest.approx(nose[0] / 640, abs=1e-5) and (body["width"], body["height"]) == (640, 480)


def test_server_equals_the_evaluated_pipeline(stack, pipeline):
    """What the server answers is what the model card measured: the same boxes and points as
    training/face_detector/evaluate.py's Pipeline on the same JPEG bytes (decoded at 1/2 for the
    detector, the small faces' crops from a full decode)."""
    meta_thr = stack.get("/v2/models/face_detector").json()["parameters"]["min_score"]
    for data, _, _ in scenes():
        boxes, scores, pts = pipeline.from_bytes(data, meta_thr)
        faces = post_bin(stack, data).json()["faces"]
        assert len(faces) == len(boxes)
        for f, box, sc, p in zip(faces, boxes, scores, pts):
            b = f["box"]
            assert [b["x"], b["y"], b["width"], b["height"]] == pytest.approx(box.tolist(), abs=0.01)
            assert f["score"] == pytest.approx(float(sc), abs=1e-4)
            assert f["landmarks"]["nose"] == pytest.approx(p[0].tolist(), abs=0.02)
            assert f["landmarks"]["mouth_right"] == pytest.approx(p[4].tolist(), abs=0.02)


def test_a_face_photo_still_works(stack):
    """A face that fills the photo (the original use): found, its nose inside the annotated box."""
    for face in shared_faces(4):
        body = post_bin(stack, face["bytes"], "face.jpg").json()
        assert body["face_found"] and len(body["faces"]) >= 1, body
        assert float(face["face_left"]) <= body["x_px"] <= float(face["face_right"]), (face["path"], body)
        assert float(face["face_top"]) <= body["y_px"] <= float(face["face_bottom"]), (face["path"], body)


def test_no_face_answers_the_whole_image_estimate(stack, pipeline):
    """Nothing face-like: no face, face_found false, and x, y from the whole-image net."""
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
    data = cv2.imencode(".png", img)[1].tobytes()
    body = stack.post("/image-bin", files={"image": ("noise.png", data, "image/png")}).json()
    assert body["faces"] == [] and body["face_found"] is False, body
    whole = pipeline.whole(img)[0]
    assert body["x_px"] == pytest.approx(whole[0], abs=0.05) and body["y_px"] == pytest.approx(whole[1], abs=0.05)


def test_max_faces_and_min_score(stack):
    data, gts, _ = scenes()[3]  # four faces
    full = post_bin(stack, data).json()["faces"]
    one = post_bin(stack, data, max_faces=1).json()
    assert len(one["faces"]) == 1 and one["faces"][0]["box"] == full[0]["box"]  # the largest
    none = post_bin(stack, data, max_faces=0).json()
    assert none["faces"] == [] and none["face_found"] is False
    top = max(f["score"] for f in full)
    high = post_bin(stack, data, min_score=round(top - 1e-4, 4)).json()["faces"]
    assert [f["score"] for f in high] == [top]
    # the same options as JSON fields of /image-64, and in the query string
    a = stack.post("/image-64", json={"image": b64(data), "max_faces": 2}).json()
    b = stack.post("/image-64?max_faces=2", json={"image": b64(data)}).json()
    assert [f["box"] for f in a["faces"]] == [f["box"] for f in b["faces"]] == [f["box"] for f in full[:2]]


@pytest.mark.parametrize("fields,query,code", [
    ({"max_faces": "-1"}, "", "invalid_input"), ({"max_faces": "51"}, "", "invalid_input"),
    ({"max_faces": "a lot"}, "", "invalid_input"), ({"min_score": "0"}, "", "invalid_input"),
    ({"min_score": "nan"}, "", "invalid_input"), ({"min_score": "' OR 1=1 --"}, "", "invalid_input"),
    ({"annotate": "2"}, "", "invalid_parameter"), ({"annotate": "true"}, "", "invalid_parameter"), ({}, "?bogus=1", "invalid_parameter"),
    ({}, "?max_faces=" + "9" * 5000, "invalid_input"),
])
def test_bad_options_are_400(stack, fields, query, code):
    data = scenes()[0][0]
    r = stack.post("/image-bin" + query, files={"image": ("s.jpg", data, "image/jpeg")}, data=fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    r = stack.post("/image-64" + query, json={"image": b64(data), **fields})
    assert r.status_code == 400, r.text  # JSON fields must be numbers besides


def test_annotate_returns_the_drawn_picture(stack):
    data, gts, _ = scenes()[2]
    r = post_bin(stack, data, annotate=1)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", r.text[:200]
    assert r.headers["X-Faces"] == str(len(gts)) and r.headers["X-Request-ID"]
    drawn = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == plain.shape
    faces = post_bin(stack, data).json()["faces"]
    for f in faces:  # the nose is drawn red where the JSON says
        x, y = (int(round(v)) for v in f["landmarks"]["nose"])
        assert tuple(drawn[y, x]) == (40, 40, 255)
    r = stack.post("/image-64", json={"image": b64(data), "annotate": 1})
    assert r.status_code == 200 and r.content == post_bin(stack, data, annotate=1).content


def test_exif_rotated_photo_gets_displayed_coordinates(stack):
    data, _, _ = scenes()[1]
    upright = Image.open(io.BytesIO(data)).convert("RGB")
    ref = post_bin(stack, data).json()["faces"]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned, shown upright
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    body = post_bin(stack, buf.getvalue(), "r.jpg").json()
    assert (body["width"], body["height"]) == (640, 480) and len(body["faces"]) == len(ref)
    for f, g in zip(body["faces"], ref):
        assert iou(f["box"], [g["box"]["x"], g["box"]["y"], g["box"]["x"] + g["box"]["width"],
                              g["box"]["y"] + g["box"]["height"]]) > 0.8
        assert np.linalg.norm(np.subtract(f["landmarks"]["nose"], g["landmarks"]["nose"])) < 4


def test_v2_outputs_and_the_detector_alone(stack):
    c = httpclient.InferenceServerClient(url=stack.base.removeprefix("http://"), network_timeout=120)
    data = [d for d, _, _ in scenes()[:3]]
    t = httpclient.InferInput("image", [3], "BYTES")
    t.set_data_from_numpy(np.array([b64(d) for d in data], dtype=object), binary_data=False)
    r = c.infer("nose_tracker", [t])
    count = r.as_numpy("face_count")
    assert count.tolist() == [1, 2, 3]
    boxes, pts, nose = r.as_numpy("face_boxes"), r.as_numpy("face_points"), r.as_numpy("nose")
    assert boxes.shape == (3, 3, 4) and pts.shape == (3, 3, 5, 2) and r.as_numpy("face_scores").shape == (3, 3)
    assert (boxes[0, 1:] == 0).all()  # padding
    for i, d in enumerate(data):
        legacy = post_bin(stack, d).json()
        assert boxes[i, 0].tolist() == pytest.approx([legacy["faces"][0]["box"][k] for k in
                                                      ("x", "y", "width", "height")], abs=0.01)
        assert nose[i].tolist() == pytest.approx([legacy["x"], legacy["y"]], abs=1e-5)
    r = c.infer("face_detector", [t], parameters={"max_faces": 2})
    assert r.as_numpy("count").tolist() == [1, 2, 2] and r.as_numpy("boxes").shape == (3, 2, 4)
    c.close()


def test_each_model_has_its_own_metrics(stack):
    post_bin(stack, scenes()[0][0])
    text = stack.get("/metrics").text
    for model in ("face_detector", "nose_tracker"):
        assert f'model_inference_seconds_count{{model="{model}"' in text, model
