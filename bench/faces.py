"""The face pipeline's cost, against the whole-image nose answer, in the same run (issue 14).

One stack (nginx -> uWSGI -> Flask, as start.sh runs it). The cells alternate, round by round:

- ``image-bin``: POST /image-bin, the benchmark's 640x480 JPEG with one face: detector +
  landmark net on the face crop (what every client gets now);
- ``image-bin-whole``: the same upload with ``max_faces=0``: no detection, the landmark net on the
  whole image squashed to 112x112 and the JPEG decoded at 1/4 scale: exactly the path
  /image-bin took before the face detector (the baseline);
- ``image-bin-scene``: a 640x480 JPEG with three faces (held-out test faces composed by
  training/face_detector/data.py's scene maker).

Printed as a Markdown table: req/s and p50/p99 at c=1 and c=32, and the ratios.

    .venv/bin/python bench/faces.py [--duration 5] [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import ENDPOINTS, NOSE_DATA, build_inputs, drain, machine, md_table, ours_env, wrk_cell  # noqa: E402
from bench.stack import OurStack, cell_arguments  # noqa: E402

ENDPOINTS.update({
    "image-bin-whole": ("/image-bin?max_faces=0", None, "multipart",
                        "POST /image-bin?max_faces=0 (no detection: the whole-image path, the baseline)"),
    "image-bin-scene": ("/image-bin", None, "scene", "POST /image-bin (640x480 JPEG, 3 faces)"),
})
CELLS = ["image-bin-whole", "image-bin", "image-bin-scene"]


def scene_input(tmp: Path, inputs: dict) -> None:
    import cv2
    from training.face_detector import data as D
    from training.nose_tracker.data import load_labels, split_indices
    labels = load_labels(NOSE_DATA / "labels.csv")
    idx = split_indices(labels["source"], seed=0)["test"]
    imgs, scales = D.load_images(NOSE_DATA, labels, idx, 400)
    maker = D.SceneMaker(labels, imgs, scales, idx, seed=7)
    while True:
        img, boxes, _ = maker.scene(640, 480, n_faces=3, min_w=60, max_w=200)
        if len(boxes) == 3:
            break
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    b = inputs["boundary"]
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"scene.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpg + f"\r\n--{b}--\r\n".encode()
    (tmp / "scene.bin").write_bytes(body)
    inputs["files"]["scene"] = tmp / "scene.bin"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cell_arguments(ap, rounds=2)
    ap.add_argument("--concurrency", default="1,32")
    a = ap.parse_args()
    concs = [int(c) for c in a.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-faces-"))
    inputs = build_inputs(tmp)
    scene_input(tmp, inputs)
    st = OurStack(ours_env())
    rows = []
    try:
        st.start()
        for ep in CELLS:
            wrk_cell(st.base, ep, inputs, 8, 1, 0)  # warm-up, not recorded
        for rnd in range(a.rounds):
            for c in concs:
                for ep in CELLS:
                    drain(st.worker_pids)
                    r = wrk_cell(st.base, ep, inputs, c, a.duration, a.max_requests)
                    r["round"] = rnd
                    rows.append(r)
                    print(f"  round {rnd} {ep:16s} c={c:<3d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                          f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
    finally:
        st.stop()

    def med(ep, c, k):
        return statistics.median(r[k] for r in rows if r["endpoint"] == ep and r["c"] == c)

    table = []
    for c in concs:
        base_p50, base_rps = med("image-bin-whole", c, "p50_ms"), med("image-bin-whole", c, "rps")
        for ep in CELLS:
            table.append([ep, c, f"{med(ep, c, 'rps'):.1f}", f"{med(ep, c, 'p50_ms'):.2f}", f"{med(ep, c, 'p99_ms'):.2f}",
                          f"{med(ep, c, 'p50_ms') / base_p50:.2f}x", f"{med(ep, c, 'rps') / base_rps:.2f}x",
                          sum(r["errors"] for r in rows if r["endpoint"] == ep and r["c"] == c)])
    md = md_table(["cell", "c", "req/s", "p50 ms", "p99 ms", "p50 / whole-image", "req/s / whole-image",
                   "errors"], table)
    print("\n" + md)
    print("\n" + "\n".join(f"- `{ep}`: {ENDPOINTS[ep][3]}" for ep in CELLS))
    out = {"machine": machine(), "rows": rows, "table": table, "rounds": a.rounds, "duration": a.duration}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0 if not any(r["errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
