"""The face pipeline's parts without a server: the detector's decoding, the crop geometry,
the request parameters, the drawing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.servables.face_detector.contract import decode, preprocess
from app.servables.face_detector.servable import detection_decode, parse_detection_parameters
from app.servables.nose_tracker.draw import annotate_png
from app.servables.nose_tracker.faces import crop_blob, crop_factor, crop_points, crop_source, prominent, recentred
from app.serving.errors import InvalidInput
from app.serving.imaging import reduced_flag


def _map(gh, gw, peaks):
    """A detector output map with the given (iy, ix, score, offx, offy, w_px, h_px) peaks."""
    out = np.zeros((5, gh, gw), np.float32)
    for iy, ix, sc, ox, oy, w, h in peaks:
        out[0, iy, ix] = sc
        out[1:, iy, ix] = (ox, oy, np.log(w / 8), np.log(h / 8))
    return out


def test_preprocess_keeps_aspect_and_pads_to_32():
    img = np.full((480, 640, 3), 200, np.uint8)
    blob, s = preprocess(img, 320)
    assert blob.shape == (1, 3, 256, 320) and blob.dtype == np.float32 and s == pytest.approx(0.5)
    assert float(blob.max()) == pytest.approx(200 / 255, abs=1e-6)
    blob, s = preprocess(np.zeros((100, 50, 3), np.uint8), 320)  # upscaled, portrait
    assert blob.shape == (1, 3, 320, 160) and s == pytest.approx(3.2)


def test_decode_maps_peaks_to_image_pixels():
    out = _map(32, 40, [(10, 20, 0.9, 0.5, 0.25, 64, 80), (3, 4, 0.3, 0.0, 0.0, 16, 16)])
    boxes, scores = decode(out, 0.5, min_score=0.5)
    assert scores.tolist() == pytest.approx([0.9])
    cx, cy = (20 + 0.5) * 8 / 0.5, (10 + 0.25) * 8 / 0.5
    assert boxes[0].tolist() == pytest.approx([cx - 64, cy - 80, 128, 160], abs=1e-3)
    boxes, scores = decode(out, 0.5, min_score=0.2)
    assert len(boxes) == 2 and scores[0] > scores[1]


def test_decode_suppresses_neighbours_and_overlaps():
    # two adjacent cells of one face: only the local maximum; an overlapping weaker box: NMS
    out = _map(32, 40, [(10, 20, 0.9, 0.5, 0.5, 96, 96), (10, 21, 0.8, 0.5, 0.5, 96, 96),
                        (12, 23, 0.7, 0.5, 0.5, 96, 96)])  # IoU of the first and third: 0.45
    boxes, scores = decode(out, 1.0, min_score=0.5, nms_iou=0.4)
    assert scores.tolist() == pytest.approx([0.9])
    boxes, scores = decode(out, 1.0, min_score=0.5, nms_iou=0.9)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(decode(out, 1.0, min_score=0.5, max_faces=1)[0]) == 1


def test_decode_clips_to_the_image_and_handles_nothing():
    out = _map(8, 8, [(0, 0, 0.9, 0.0, 0.0, 40, 40)])
    boxes, _ = decode(out, 1.0, min_score=0.5, image_wh=(64, 64))
    assert boxes[0].tolist() == pytest.approx([0, 0, 20, 20])
    boxes, scores = decode(np.zeros((5, 8, 8), np.float32), 1.0)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_crop_maps_points_back_exactly():
    """A marker drawn in the image lands where crop_points says, at any scale."""
    for scale, box in ((1.0, (100, 60, 80, 100)), (0.25, (400, 240, 320, 400)), (1.0, (5, 5, 300, 200))):
        h, w = int(480 * scale), int(640 * scale)
        img = np.zeros((h, w, 3), np.uint8)
        X, Y = (box[0] + 0.4 * box[2]) * scale, (box[1] + 0.55 * box[3]) * scale
        cv2.circle(img, (int(X), int(Y)), 1, (255, 255, 255), -1)
        blob, inv = crop_blob(img, box, scale)
        assert blob.shape == (1, 3, 112, 112) and blob.dtype == np.float32
        crop = blob[0].sum(0)
        iy, ix = np.unravel_index(np.argmax(crop), crop.shape)
        row = np.zeros(10)
        row[0], row[1] = (ix + 0.5) / 112, (iy + 0.5) / 112
        p = crop_points(row, inv)[0]
        side_px = max(box[2], box[3]) * 2 / 112  # about one crop pixel, in displayed pixels
        assert abs(p[0] - (int(X) + 0.5) / scale) <= 1.5 * side_px + 1 / scale
        assert abs(p[1] - (int(Y) + 0.5) / scale) <= 1.5 * side_px + 1 / scale


def test_detection_decode_keeps_the_detector_input_and_crops_get_their_pixels():
    """A large JPEG is decoded for detection at the scale that keeps the longer side at the
    detector's input; a face whose crop would have fewer than 112 px a side there is cropped
    from a larger decode of the same bytes (the smallest factor it needs), a large one is not."""
    assert reduced_flag("JPEG", 640, 480, 112, min_long=320)[0] == 2
    assert reduced_flag("JPEG", 4000, 3000, 112, min_long=320)[0] == 8
    assert reduced_flag("JPEG", 600, 480, 112, min_long=320)[0] == 1
    assert reduced_flag("JPEG", 4000, 3000, 112, max_factor=2)[0] == 2
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (960, 1280, 3), dtype=np.uint8), (0, 0), 2)
    data = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    img, w, h = detection_decode(data, 10 ** 8, 320)
    assert img.shape == (240, 320, 3) and (w, h) == (1280, 960)  # 1/4: longer side 320
    assert crop_factor([(0, 0, 500, 420)]) == 4      # a 650 px crop: 81 px at 1/8, 162 at 1/4
    assert crop_factor([(0, 0, 700, 600)]) == 8      # 910 px: 114 at 1/8
    assert crop_factor([(0, 0, 300, 260), (0, 0, 700, 600)]) == 2  # the smallest face decides
    assert crop_factor([(0, 0, 80, 90)]) == 1
    assert crop_source(data, img, w, [(0, 0, 500, 420)], 10 ** 8) is img
    assert crop_source(data, img, w, [(0, 0, 300, 260)], 10 ** 8).shape == (480, 640, 3)
    assert crop_source(data, img, w, [(0, 0, 80, 90)], 10 ** 8).shape == (960, 1280, 3)
    assert crop_source(data, img, w, [], 10 ** 8) is img
    png = cv2.imencode(".png", big)[1].tobytes()  # no DCT scaling: decoded whole, never again
    full, w, h = detection_decode(png, 10 ** 8, 320)
    assert full.shape == (960, 1280, 3) and crop_source(png, full, w, [(0, 0, 80, 90)], 10 ** 8) is full


def test_prominent_is_a_large_sure_face_first_on_ties():
    assert prominent([(0, 0, 10, 10), (0, 0, 30, 20), (5, 5, 20, 30)], [0.9, 0.9, 0.8]) == 1
    assert prominent([(0, 0, 40, 40), (0, 0, 30, 30)], [0.5, 0.9]) == 1  # 1600 x 0.25 < 900 x 0.81
    assert prominent([(0, 0, 20, 20), (9, 9, 20, 20)], [0.7, 0.7]) == 0
    assert prominent([], []) == -1
    assert recentred((0, 0, 10, 10), [[5, 6], [2, 2], [8, 2], [3, 8], [7, 8]]) == pytest.approx((0, 0, 10, 10))


@pytest.mark.parametrize("params,ok", [
    ({}, (0.5, 10)), ({"min_score": "0.3", "max_faces": "2"}, (0.3, 2)), ({"max_faces": 0}, (0.5, 0)),
    ({"max_faces": 3.0}, (0.5, 3)), ({"min_score": 1}, (1.0, 10)),
])
def test_detection_parameters(params, ok):
    assert parse_detection_parameters(params, 0.5) == pytest.approx(ok)


@pytest.mark.parametrize("params", [
    {"max_faces": -1}, {"max_faces": 51}, {"max_faces": "two"}, {"max_faces": 2.5}, {"max_faces": True},
    {"min_score": 0}, {"min_score": 1.5}, {"min_score": "nan"}, {"min_score": None}, {"min_score": [0.5]},
    {"max_faces": "1e3"}, {"min_score": "inf"}, {"max_faces": "9" * 400},
])
def test_bad_detection_parameters(params):
    with pytest.raises(InvalidInput):
        parse_detection_parameters(params, 0.5)


def test_annotate_draws_on_a_copy():
    img = np.full((120, 160, 3), 128, np.uint8)
    faces = [{"box": (20, 20, 60, 70), "score": 0.9, "points": np.array([[50, 60], [40, 45], [65, 45],
                                                                         [42, 75], [62, 75]], float)}]
    png = annotate_png(img, faces)
    out = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert out.shape == img.shape and (img == 128).all()
    assert tuple(out[20, 50]) != (128, 128, 128)      # the box's top edge
    assert tuple(out[60, 50]) == (40, 40, 255)          # the nose, red
    assert tuple(out[100, 140]) == (128, 128, 128)      # untouched elsewhere
