"""The /nose page in a real browser: Debian's Chromium driven by selenium (chromedriver).

- a photo of three faces chosen with the file input: the page draws every box and nose on its
  canvas (read back pixel by pixel) and shows the JSON;
- the camera mode with Chromium's fake camera playing a clip made here from a held-out face
  (Y4M): frames go to /image-bin one at a time and the nose comes back, frame after frame.

Screenshots go to $TEST_ARTIFACTS_DIR (default test-artifacts/ in the repository, ignored by git).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import ROOT, skip_or_fail
from test_faces import scenes

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> None:
    """An uncompressed YUV 4:2:0 clip, the format Chromium's fake camera reads."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for f in frames:
            fh.write(b"FRAME\n" + cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 640x480 clip of one held-out face drifting a few pixels, and its true nose per frame."""
    data, boxes, pts = scenes()[0]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    frames, noses = [], []
    for k in range(30):
        dx = int(round(6 * np.sin(k / 5)))
        M = np.float32([[1, 0, dx], [0, 1, 0]])
        frames.append(cv2.warpAffine(img, M, (640, 480), borderMode=cv2.BORDER_REPLICATE))
        noses.append(pts[0][0] + [dx, 0])
    p = tmp_path_factory.mktemp("clip") / "face.y4m"
    write_y4m(p, frames)
    return p, np.array(noses), float(np.linalg.norm(pts[0][1] - pts[0][2]))


def _driver(tmp: Path, clip_path: Path | None = None):
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        skip_or_fail("Chromium and chromedriver are needed (Debian: chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,1600",
              f"--user-data-dir={tmp / 'profile'}", "--use-fake-ui-for-media-stream"):
        opts.add_argument(a)
    if clip_path is not None:
        opts.add_argument("--use-fake-device-for-media-stream")
        opts.add_argument(f"--use-file-for-fake-video-capture={clip_path}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


def _wait(driver, script: str, timeout: float = 60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.2)
    logs = driver.get_log("browser")
    raise AssertionError(f"timed out waiting for {script!r}; browser log: {logs[-10:]}")


def _pixel(driver, canvas_id: str, x: float, y: float) -> list[int]:
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return Array.from(c.getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data);",
        canvas_id, int(round(x)), int(round(y)))


def test_photo_upload_draws_every_face(stack, tmp_path):
    data, gts, pts = scenes()[2]  # three faces
    photo = tmp_path / "three.jpg"
    photo.write_bytes(data)
    d = _driver(tmp_path)
    try:
        d.get(stack.url("/nose"))
        assert d.title == "Face and nose tracking"
        # accessible form: every control has a label, results are announced
        for el in d.find_elements("css selector", "input:not([type=hidden])"):
            assert d.find_elements("css selector", f"label[for='{el.get_attribute('id')}']"), el.get_attribute("id")
        assert d.find_element("id", "nose-status").get_attribute("role") == "status"
        d.find_element("id", "nose-file").send_keys(str(photo))
        assert _wait(d, "return document.body.dataset.noseResult") == "3"
        assert d.find_element("id", "nose-status").text == "3 faces found, largest first."
        result = json.loads(d.find_element("id", "nose-json").get_attribute("textContent"))
        assert len(result["faces"]) == 3 and result["width"] == 640
        for f in result["faces"]:  # drawn where the JSON says (the canvas is the photo at 1:1)
            nx, ny = f["landmarks"]["nose"]
            assert _pixel(d, "nose-canvas", nx, ny) == [255, 40, 40, 255], f
            r, g, b, _ = _pixel(d, "nose-canvas", f["box"]["x"] + f["box"]["width"] / 2, f["box"]["y"])
            assert g > 150 and r < 150 and b < 150, (r, g, b)  # the box's green edge (antialiased)
        assert len(d.find_elements("css selector", "#nose-faces li")) == 3
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.execute_script("document.getElementById('nose-status').scrollIntoView()")
        d.save_screenshot(str(ARTIFACTS / "nose-page-photo.png"))
        assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        d.quit()


def test_camera_mode_tracks_the_nose(stack, tmp_path, clip):
    path, noses, iod = clip
    d = _driver(tmp_path, path)
    try:
        d.get(stack.url("/nose"))
        d.find_element("id", "cam-start").click()
        _wait(d, "return Number(document.body.dataset.camFrames || 0) >= 8", 90)
        assert d.find_element("id", "cam-stop").is_enabled()
        nose = [float(v) for v in d.execute_script("return document.body.dataset.camNose").split(",")]
        # the frame it belongs to is one of the clip's: within 0.25 inter-ocular distances of the path
        assert min(np.linalg.norm(noses - nose, axis=1)) < 0.25 * iod, (nose, noses[:3])
        fps = float(d.find_element("id", "cam-fps").text)
        latency = float(d.find_element("id", "cam-latency").text)
        assert fps > 0 and latency > 0
        assert _pixel(d, "cam-canvas", *nose)[:3] == [255, 40, 40]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        d.execute_script("document.getElementById('cam-canvas').scrollIntoView()")
        d.save_screenshot(str(ARTIFACTS / "nose-page-camera.png"))
        d.find_element("id", "cam-stop").click()
        assert d.find_element("id", "cam-status").text == "Camera off."
        print(f"\n[camera] {fps:.1f} frames/s, latency {latency:.0f} ms in headless Chromium")
    finally:
        d.quit()
