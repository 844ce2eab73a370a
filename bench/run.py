"""The benchmark: our stack vs the original design vs BentoML, same machine, same models, same inputs.

    .venv/bin/python bench/run.py                # full run (~15 min), Markdown to stdout, JSON to bench/results/
    .venv/bin/python bench/run.py --quick        # 2 s cells, c=1 and 32 only, no peers (~2 min)
    .venv/bin/python bench/run.py --sweep        # workers x threads sweep for the defaults (~3 min)

Loopback only. Load comes from wrk (Debian; bench/setup.sh installs it and the BentoML peer's
separate virtualenv .venv-bench). Every wrk cell is bounded in time (--duration) and in count
(--max-requests per cell). Inputs, built at run time from ../shared (never committed):
a 640x480 JPEG face photo (a held-out face scaled and padded), sent as multipart (/image-bin)
and as base64 JSON (/image-64); distinct real 10-word English sentences (/api/translate and the
/result form) and 3-sentence paragraphs of them. The translator's LRU cache is OFF in every server
for these rows (TRANSLATE_CACHE_SIZE=0), so each request is really decoded; one extra row shows
the cache on a repeated sentence. nginx rate limiting is disabled for the benchmark
(RATE_LIMIT_RPS=0; loopback is exempt by default anyway).
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from app.serving.repository import version_dir
from bench.stack import OurStack, children, free_port, http_get, mem_kb

ROOT = Path(__file__).resolve().parent.parent

SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
NOSE_DATA = SHARED / "data" / "nose"
SENTENCES = SHARED / "data" / "translator" / "spa-eng" / "spa.txt"
LUA = ROOT / "bench" / "post.lua"
RESULTS = ROOT / "bench" / "results"
VENV_BENCH = ROOT / ".venv-bench"

ENDPOINTS = {  # key: (path, content type, body source, label)
    "image-bin": ("/image-bin", None, "multipart", "POST /image-bin (640x480 JPEG, multipart)"),
    "image-64": ("/image-64", "application/json", "image64", "POST /image-64 (640x480 JPEG, base64 JSON)"),
    "translate": ("/api/translate", "application/json", "sentences", "POST /api/translate (10-word sentence, greedy)"),
    "paragraph": ("/api/translate", "application/json", "paragraphs",
                  "POST /api/translate (3-sentence paragraph, greedy)"),
    "result": ("/result", "application/x-www-form-urlencoded", "forms", "POST /result (HTML form, 10-word sentence)"),
    # the same inputs through the Open Inference Protocol (our stack only)
    "v2-image": ("/v2/models/nose_tracker/infer", "application/json", "v2image",
                 "POST /v2/models/nose_tracker/infer (640x480 JPEG, base64 BYTES tensor)"),
    "v2-translate": ("/v2/models/translator/infer", "application/json", "v2sentences",
                     "POST /v2/models/translator/infer (10-word sentence, BYTES tensor)"),
    "lt-translate": ("/translate", "application/json", "ltsentences",
                     "POST /translate (LibreTranslate API, 10-word sentence)"),
    # no model, no body: what nginx + uWSGI + Flask + wrk alone cost on these cores (our stack only)
    "healthz": ("/healthz", None, "none", "GET /healthz (no model: the HTTP stack's ceiling)"),
}


# --- inputs -----------------------------------------------------------------------------------
def build_inputs(tmp: Path, seed: int = 0) -> dict:
    import cv2
    import numpy as np
    from training.nose_tracker.data import frame_photo  # the face as a 640x480 photo, edge pixels around it
    if not (NOSE_DATA / "labels.csv").exists() or not SENTENCES.exists():
        raise SystemExit(f"benchmark inputs not found: need {NOSE_DATA}/labels.csv and {SENTENCES} "
                         "(put ../shared beside the repository or set SHARED_DIR)")
    with open(NOSE_DATA / "labels.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["source"] == "cuhk_net")
    img = cv2.imread(str(NOSE_DATA / row["path"]), cv2.IMREAD_COLOR)
    pts = np.array([[float(row["nose_x"]), float(row["nose_y"])]])
    photo, _ = frame_photo(img, pts, 640, 480)
    jpg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    (tmp / "face.jpg").write_bytes(jpg)
    boundary = "----benchboundary7MA4YWxkTrZu0gW"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"face.jpg\"\r\n"
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + jpg + f"\r\n--{boundary}--\r\n".encode()
    (tmp / "multipart.bin").write_bytes(multipart)
    (tmp / "image64.json").write_text(json.dumps({"image": base64.b64encode(jpg).decode()}))
    (tmp / "v2image.json").write_text(json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                              "data": [base64.b64encode(jpg).decode()]}]}))
    ten, short = set(), set()
    with open(SENTENCES, encoding="utf-8") as fh:
        for line in fh:
            en = line.split("\t", 1)[0].strip()
            n = len(en.split())
            if n == 10:
                ten.add(en)
            elif 6 <= n <= 9:
                short.add(en)
    rnd = random.Random(seed)
    ten, short = sorted(ten), sorted(short)
    rnd.shuffle(ten)
    rnd.shuffle(short)
    paragraphs = [" ".join(short[3 * i:3 * i + 3]) for i in range(min(4000, len(short) // 3))]
    (tmp / "sentences.txt").write_text("\n".join(json.dumps({"text": s}, ensure_ascii=False) for s in ten) + "\n")
    (tmp / "paragraphs.txt").write_text("\n".join(json.dumps({"text": p}, ensure_ascii=False)
                                                  for p in paragraphs) + "\n")
    (tmp / "v2sentences.txt").write_text("\n".join(json.dumps({"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}]}, ensure_ascii=False) for s in ten) + "\n")
    (tmp / "ltsentences.txt").write_text("\n".join(json.dumps({"q": s, "source": "en", "target": "es"},
                                                             ensure_ascii=False) for s in ten) + "\n")
    (tmp / "forms.txt").write_text("\n".join(urllib.parse.urlencode({"English": s}) for s in ten) + "\n")
    (tmp / "repeated.txt").write_text(json.dumps({"text": ten[0]}) + "\n")
    return {"jpeg_bytes": len(jpg), "jpeg_size": [640, 480], "sentences": len(ten), "paragraphs": len(paragraphs),
            "example_sentence": ten[0], "example_paragraph": paragraphs[0], "face": row["path"],
            "files": {"multipart": tmp / "multipart.bin", "image64": tmp / "image64.json",
                      "v2image": tmp / "v2image.json", "v2sentences": tmp / "v2sentences.txt",
                      "ltsentences": tmp / "ltsentences.txt",
                      "sentences": tmp / "sentences.txt", "paragraphs": tmp / "paragraphs.txt",
                      "forms": tmp / "forms.txt", "repeated": tmp / "repeated.txt"},
            "boundary": boundary, "ten": ten[:64]}


# --- load generation --------------------------------------------------------------------------
def wrk_cell(base: str, endpoint: str, inputs: dict, conc: int, duration: float, max_requests: int,
             source: str | None = None, offset: int = 0, api_key: str = "") -> dict:
    path, ctype, src, _ = ENDPOINTS[endpoint]
    src = source or src
    env = dict(os.environ, BENCH_MAX=str(max_requests), BENCH_OFFSET=str(offset), BENCH_API_KEY=api_key)
    f = inputs["files"].get(src)
    if src == "none":
        env["BENCH_METHOD"] = "GET"
    elif src in ("multipart", "image64", "v2image", "scene"):
        env["BENCH_BODY_FILE"] = str(f)
    else:
        env["BENCH_BODIES_FILE"] = str(f)
    env["BENCH_CTYPE"] = ctype or f"multipart/form-data; boundary={inputs['boundary']}"
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{max(1, int(round(duration)))}s", "--timeout", "30s", "-s", str(LUA), base + path]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {p.stdout[-500:]} {p.stderr[-500:]}")
    r = json.loads(line[len("BENCHJSON "):])
    errors = sum(r["errors"].values())
    secs = r["duration_us"] / 1e6
    return {"endpoint": endpoint, "c": conc, "requests": r["requests"], "seconds": round(secs, 2),
            "rps": round(r["requests"] / secs, 1), "p50_ms": round(r["p50_us"] / 1000, 2),
            "p95_ms": round(r["p95_us"] / 1000, 2), "p99_ms": round(r["p99_us"] / 1000, 2),
            "mean_ms": round(r["mean_us"] / 1000, 2), "errors": errors, "error_detail": r["errors"]}


class MemSampler(threading.Thread):
    """Peak RSS/PSS per process of a process tree, sampled every 0.5 s."""

    def __init__(self, pids_fn):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.peak: dict[int, dict] = {}
        self.stop_ev = threading.Event()

    def sample(self):
        for pid in self.pids_fn():
            m = mem_kb(pid)
            if not m:
                continue
            p = self.peak.setdefault(pid, {"rss": 0, "pss": 0})
            p["rss"] = max(p["rss"], m.get("rss", 0))
            p["pss"] = max(p["pss"], m.get("pss", 0))

    def run(self):
        while not self.stop_ev.wait(0.5):
            self.sample()

    def stop(self):
        self.stop_ev.set()
        self.sample()
        return self.peak


def cpu_ticks(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def drain(pids_fn, timeout: float = 60.0) -> float:
    """Wait until the server has finished the previous cell's backlog (its processes use
    < 10% of a core for 0.5 s), so that no cell pays for the one before. Returns seconds waited."""
    t0 = time.time()
    hz = os.sysconf("SC_CLK_TCK")
    quiet = 0
    last = cpu_ticks(pids_fn())
    while time.time() - t0 < timeout:
        time.sleep(0.25)
        now = cpu_ticks(pids_fn())
        quiet = quiet + 1 if (now - last) <= 0.1 * hz * 0.25 else 0
        last = now
        if quiet >= 2:
            break
    return round(time.time() - t0, 2)


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children(p):
            out.append(c)
            todo.append(c)
    return out


# --- servers ----------------------------------------------------------------------------------
class Process:
    """A peer server process (original design or BentoML), with start-to-ready timing."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict, log: Path):
        self.name, self.cmd, self.port, self.env, self.log = name, cmd, port, env, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc = None
        self.ready_s = None

    def start(self, timeout: float = 240) -> float:
        t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: " + self.log.read_text(errors="replace")[-2000:])
            if http_get(self.base + "/readyz", 2)[0] == 200:
                self.ready_s = round(time.time() - t0, 2)
                return self.ready_s
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready in {timeout}s")

    def pids(self) -> list[int]:
        return [self.proc.pid] + descendants(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group only
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def peer(name: str, tmp: Path) -> Process:
    port = free_port()
    env = dict(os.environ, TRANSLATE_CACHE_SIZE="0", TF_CPP_MIN_LOG_LEVEL="2")
    if name.startswith("original"):
        server = name.split("-", 1)[1]
        cmd = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "peers" / "original.py"),
               "--server", server, "--port", str(port)]
    elif name == "bentoml":
        # .venv-bench has not the project installed: app/ and bench/ from the repository root
        env.update(BENTO_WORKERS="2", BENTO_THREADS="4", BENTOML_HOME=str(tmp / "bentoml-home"),
                   BENTOML_DO_NOT_TRACK="True", PYTHONPATH=str(ROOT))
        cmd = [str(VENV_BENCH / "bin" / "bentoml"), "serve", "bench.peers.bento_service:NoseAndTranslator",
               "--host", "127.0.0.1", "--port", str(port)]
    else:
        raise ValueError(name)
    return Process(name, cmd, port, env, tmp / f"{name}.log")


# --- upper bound (no HTTP) --------------------------------------------------------------------
def bound_worker(kind: str, seconds: float, files: dict) -> None:
    """One process, one thread for TF and OpenCV (like one uWSGI worker): prints items/s."""
    import cv2
    cv2.setNumThreads(1)
    if kind in ("nose", "nose_whole"):
        from app.serving.imaging import REDUCED_MIN_SIDE, decode_image_scaled
        from app.servables.nose_tracker.model import NoseTracker
        from training.face_detector.evaluate import Pipeline  # the server's functions, tested equal to it
        data = Path(files["jpeg"]).read_bytes()
        if kind == "nose":
            pipe = Pipeline(version_dir("face_detector") / "face_detector.pb",
                            version_dir("nose_tracker") / "nose_tracker.pb")
            min_score = json.loads((version_dir("face_detector") / "metadata.json").read_text())["min_score"]
        else:
            m = NoseTracker.load(str(version_dir("nose_tracker")))
            m.warmup()

        def pipeline():  # what /image-bin runs: decode for the detector, detect, one crop per face, landmarks
            boxes, _, pts = pipe.from_bytes(data, min_score, 40_000_000)
            if not len(boxes):
                raise SystemExit("the bench photo's face was not found")
            return pts

        def whole():  # max_faces=0: the whole-image net, 1/4-scale decoding
            img, w, h = decode_image_scaled(data, 40_000_000, REDUCED_MIN_SIDE)
            m.predict(img, size=(w, h))
        step = pipeline if kind == "nose" else whole
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += 1
    else:
        from app.config import apply_library_defaults
        apply_library_defaults()  # TF_ENABLE_ONEDNN_OPTS as our workers have it
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from app.servables.translator.model import Translator
        m = Translator.load(version_dir("translator"), cache_size=0)
        m.warmup()
        src = files["paragraphs"] if kind.startswith("paragraph") else files["sentences"]
        lines = [json.loads(ln)["text"] for ln in Path(src).read_text().splitlines()]
        batch = 1 if kind == "translate1" else 32
        n, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            texts = [lines[(i + k) % len(lines)] for k in range(batch)]
            i += batch
            m.translate(texts, beam=1)
            n += batch
    print(json.dumps({"kind": kind, "items": n, "seconds": round(time.perf_counter() - t0, 3)}), flush=True)


def upper_bound(kind: str, procs: int, seconds: float, inputs: dict, tmp: Path) -> dict:
    files = {"jpeg": str(tmp / "face.jpg"), "sentences": str(inputs["files"]["sentences"]),
             "paragraphs": str(inputs["files"]["paragraphs"])}
    cmd = [str(ROOT / ".venv" / "bin" / "python"), str(Path(__file__)), "--bound-worker", kind,
           "--seconds", str(seconds), "--bound-files", json.dumps(files)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
          for _ in range(procs)]
    rates = []
    for p in ps:
        out, _ = p.communicate(timeout=seconds + 180)
        r = json.loads(out.strip().splitlines()[-1])
        rates.append(r["items"] / r["seconds"])
    return {"kind": kind, "processes": procs, "per_s": round(sum(rates), 1)}


# --- reporting --------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def machine() -> dict:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        mem = open("/proc/meminfo").readline().split(":")[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def run_cells(base: str, endpoints: list[str], concs: list[int], a, inputs: dict, label: str,
              pids_fn=None) -> list[dict]:
    rows = []
    for ep in endpoints:
        wrk_cell(base, ep, inputs, min(8, max(concs)), 1, 0)  # warm-up, not recorded
        for c in concs:
            if pids_fn is not None:
                drain(pids_fn)
            r = wrk_cell(base, ep, inputs, c, a.duration, a.max_requests)
            r["server"] = label
            rows.append(r)
            print(f"  {label:16s} {ep:10s} c={c:<3d} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
    return rows


def ours_env(extra: dict | None = None) -> dict:
    env = {"TRANSLATE_CACHE_SIZE": "0", "LOG_LEVEL": "INFO"}
    env.update(extra or {})
    return env


def run_ours(a, inputs, tmp, overrides: dict, endpoints, concs, label: str) -> dict:
    st = OurStack(ours_env(overrides), workers=int(overrides.get("WORKERS", "2")))
    try:
        ready = st.start()
        sampler = MemSampler(lambda: st.worker_pids())
        sampler.start()
        rows = run_cells(st.base, endpoints, concs, a, inputs, label, st.worker_pids)
        peak = sampler.stop()
        master = mem_kb(st.uwsgi.pid)
        workers = [v for k, v in peak.items()]
        return {"label": label, "overrides": overrides, "ready_s": ready, "first_worker_ready_s": st.first_ready_s,
                "rows": rows, "peak_worker_mem_kb": workers, "master_mem_kb": master}
    finally:
        st.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell")
    ap.add_argument("--max-requests", type=int, default=20000, help="most requests per wrk cell")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--endpoints", default="image-bin,image-64,translate,paragraph,result,healthz")
    ap.add_argument("--peers", default="original-flask,original-gevent,bentoml",
                    help="comma-separated peers to compare with ('' for none)")
    ap.add_argument("--quick", action="store_true", help="2 s cells at c=1 and 32, no peers, no extras")
    ap.add_argument("--sweep", action="store_true", help="workers x threads sweep of our stack only")
    ap.add_argument("--sweep-configs", help="indexes of the sweep configs to run (default: all)")
    ap.add_argument("--no-extras", action="store_true", help="skip the batching, cache and preload runs")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh when wrk/.venv-bench miss")
    ap.add_argument("--json", help="output JSON path (default bench/results/bench-<UTC time>.json)")
    ap.add_argument("--bound-worker", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    ap.add_argument("--bound-files", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.bound_worker:
        bound_worker(a.bound_worker, a.seconds, json.loads(a.bound_files))
        return 0
    if a.quick:
        a.duration, a.concurrency, a.peers = 2.0, "1,32", ""
    concs = [int(c) for c in a.concurrency.split(",") if c]
    endpoints = [e for e in a.endpoints.split(",") if e]
    peers = [p for p in a.peers.split(",") if p]
    need_setup = not shutil.which("wrk") or ("bentoml" in peers and not (VENV_BENCH / "bin" / "bentoml").exists())
    if need_setup:
        if a.no_setup:
            raise SystemExit("wrk or .venv-bench missing: run bench/setup.sh")
        subprocess.run([str(ROOT / "bench" / "setup.sh")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out: dict = {"started": started, "machine": machine(), "args": vars(a)}
    try:
        inputs = build_inputs(tmp)
        out["inputs"] = {k: v for k, v in inputs.items() if k not in ("files", "ten")}
        print(f"# benchmark {started} on {out['machine']['cpu']} ({out['machine']['cores']} cores)", flush=True)
        if a.sweep:
            return sweep(a, inputs, tmp, out)
        # 1. upper bound, no HTTP
        secs = min(a.duration, 5.0)
        bound = {k: upper_bound(k, 2, secs, inputs, tmp) for k in ("nose", "nose_whole", "translate32", "paragraph32")}
        bound["translate1_1proc"] = upper_bound("translate1", 1, secs, inputs, tmp)
        out["bound"] = bound
        print("  bound:", json.dumps(bound), flush=True)
        # 2. our stack with the defaults (translator cache off for the table)
        out["ours"] = run_ours(a, inputs, tmp, {}, endpoints, concs, "ours")
        # 3. peers
        out["peers"] = {}
        for name in peers:
            p = peer(name, tmp)
            try:
                p.start()
                sampler = MemSampler(p.pids)
                sampler.start()
                # no HTML form in BentoML; /healthz is our stack's own ceiling row
                eps = [e for e in endpoints if e != "healthz" and not (name == "bentoml" and e == "result")]
                rows = run_cells(p.base, eps, concs, a, inputs, name, p.pids)
                peak = sampler.stop()
                out["peers"][name] = {"ready_s": p.ready_s, "rows": rows, "peak_mem_kb": list(peak.values())}
            except Exception as exc:  # a peer that fails is reported, not hidden
                print(f"  {name}: FAILED {exc}", flush=True)
                out["peers"][name] = {"error": str(exc)[-2000:]}
            finally:
                p.stop()
        if not (a.quick or a.no_extras):
            # 4. dynamic batching off vs on (translate, c=1/16/64) and the LRU cache on a repeated sentence
            bc = [1, 16, 64]
            on = run_ours(a, inputs, tmp, {}, ["translate"], bc, "batching on")
            off = run_ours(a, inputs, tmp, {"TRANSLATE_BATCH_MAX": "0"}, ["translate"], bc, "batching off")
            out["batching"] = {"on": on, "off": off}
            st = OurStack({}, workers=2)  # every default, cache on
            try:
                st.start()
                wrk_cell(st.base, "translate", inputs, 8, 1, 0, source="repeated")
                rows = []
                for c in (1, 16):
                    drain(st.worker_pids)
                    r = wrk_cell(st.base, "translate", inputs, c, a.duration, a.max_requests, source="repeated")
                    rows.append(r)
                    print(f"  cache (repeated sentence) c={c} {r['rps']} req/s p50 {r['p50_ms']} ms", flush=True)
                out["cache"] = rows
            finally:
                st.stop()
            # 5. memory with and without preloading the libraries in the uWSGI master
            out["preload"] = {}
            for pre in ("0", "1"):
                res = run_ours(a, inputs, tmp, {"PRELOAD_LIBRARIES": pre}, ["image-bin", "translate"], [8],
                               f"preload={pre}")
                out["preload"][pre] = res
            # 6. TensorFlow's oneDNN kernels on (TF's default) vs off (ours): speed and worker memory
            out["onednn"] = {}
            for v in ("1", "0"):
                out["onednn"][v] = run_ours(a, inputs, tmp, {"TF_ENABLE_ONEDNN_OPTS": v},
                                            ["image-bin", "translate", "paragraph"], [8, 32], f"onednn={v}")
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report(out)
    finally:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = Path(a.json) if a.json else RESULTS / f"bench-{started.replace(':', '')}.json"
        path.write_text(json.dumps(out, indent=1, default=str))
        print(f"\nJSON: {path}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bound_for(out: dict, ep: str) -> float | None:
    b = out.get("bound") or {}
    if ep == "healthz":
        return None
    if ep in ("image-bin", "image-64"):
        return b.get("nose", {}).get("per_s")
    if ep == "paragraph":
        return b.get("paragraph32", {}).get("per_s")
    return b.get("translate32", {}).get("per_s")


def report(out: dict) -> None:
    m = out["machine"]
    print(f"\n## Results ({m['cpu']}, {m['cores']} cores, {m['memory']}; wrk on the same machine)\n")
    ours = out["ours"]
    peers = out.get("peers", {})
    names = [n for n in peers if "rows" in peers[n]]
    header = ["Endpoint", "c", "ours req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "% of bound"]
    for n in names:
        header += [f"{n} req/s", "ours/" + n]
    rows = []
    for r in ours["rows"]:
        b = bound_for(out, r["endpoint"])
        row = [ENDPOINTS[r["endpoint"]][3], r["c"], r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["errors"],
               f"{100 * r['rps'] / b:.0f}%" if b else ""]
        for n in names:
            pr = next((x for x in peers[n]["rows"] if x["endpoint"] == r["endpoint"] and x["c"] == r["c"]), None)
            if pr is None:
                row += ["n/a", ""]
            else:
                err = f" ({pr['errors']} err)" if pr["errors"] else ""
                row += [f"{pr['rps']}{err}", f"{r['rps'] / pr['rps']:.1f}x" if pr["rps"] else "inf"]
        rows.append(row)
    print(md_table(header, rows))
    b = out.get("bound", {})
    print(f"\nUpper bound (in-process, no HTTP, 2 processes x 1 thread): nose pipeline (decode, face "
          f"detector, landmark net on the face's crop) {b.get('nose', {}).get('per_s')}/s, the whole-image net alone "
          f"(max_faces=0) {b.get('nose_whole', {}).get('per_s')}/s; translator {b.get('translate32', {}).get('per_s')} sentences/s "
          f"(batches of 32, greedy), {b.get('paragraph32', {}).get('per_s')} paragraphs/s (batches of 32); "
          f"one process, one sentence at a time: "
          f"{b.get('translate1_1proc', {}).get('per_s')} sentences/s.")
    if names:
        print("\nPeer latency (p50 / p99 ms):\n")
        prow = []
        for n in names:
            for r in peers[n]["rows"]:
                prow.append([n, ENDPOINTS[r["endpoint"]][3], r["c"], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]])
        print(md_table(["Server", "Endpoint", "c", "req/s", "p50 ms", "p99 ms", "errors"], prow))
    mem = [["ours (uWSGI worker)", w["rss"] // 1024, w["pss"] // 1024] for w in ours["peak_worker_mem_kb"]]
    for n in names:
        top = sorted(peers[n]["peak_mem_kb"], key=lambda x: -x["pss"])
        mem += [[f"{n} (largest process)", top[0]["rss"] // 1024, top[0]["pss"] // 1024]] if top else []
    print("\nPeak memory during the run (MiB):\n")
    print(md_table(["Process", "peak RSS", "peak PSS"], mem))
    ready = [["ours (2 workers, all ready)", ours["ready_s"]]] + [[n, peers[n]["ready_s"]] for n in names]
    print("\nStart to /readyz (s):\n")
    print(md_table(["Server", "seconds"], ready))
    if "batching" in out:
        on, off = out["batching"]["on"]["rows"], out["batching"]["off"]["rows"]
        print("\nDynamic batching, POST /api/translate (10-word sentence, greedy):\n")
        brow = []
        for x, y in zip(on, off):
            brow.append([x["c"], y["rps"], y["p50_ms"], y["p99_ms"], x["rps"], x["p50_ms"], x["p99_ms"],
                         f"{x['rps'] / y['rps']:.2f}x" if y["rps"] else ""])
        print(md_table(["c", "off req/s", "off p50", "off p99", "on req/s", "on p50", "on p99", "gain"], brow))
    if "cache" in out:
        print("\nLRU cache, the same sentence repeated (defaults, cache on): " +
              ", ".join(f"c={r['c']}: {r['rps']} req/s, p50 {r['p50_ms']} ms" for r in out["cache"]))
    if "preload" in out:
        print("\nLibraries imported in the uWSGI master before the fork (PRELOAD_LIBRARIES), peak per worker:\n")
        prow = []
        for k, v in out["preload"].items():
            for w in v["peak_worker_mem_kb"]:
                prow.append([k, w["rss"] // 1024, w["pss"] // 1024, v["master_mem_kb"].get("pss", 0) // 1024,
                             v["ready_s"]])
        print(md_table(["PRELOAD_LIBRARIES", "worker RSS MiB", "worker PSS MiB", "master PSS MiB",
                        "start to ready s"], prow))
    if "onednn" in out:
        print("\nTensorFlow oneDNN kernels (TF_ENABLE_ONEDNN_OPTS; 1 = TensorFlow's default, 0 = ours), peak per "
              "worker with /image-bin, /api/translate and paragraphs at c=8 and 32:\n")
        orow = []
        for k, v in out["onednn"].items():
            ws = v["peak_worker_mem_kb"]
            rps = {f"{r['endpoint']} c={r['c']}": r["rps"] for r in v["rows"]}
            orow.append([k, ", ".join(str(w["rss"] // 1024) for w in ws), ", ".join(str(w["pss"] // 1024) for w in ws),
                         rps.get("image-bin c=32"), rps.get("translate c=8"), rps.get("translate c=32"),
                         rps.get("paragraph c=32")])
        print(md_table(["TF_ENABLE_ONEDNN_OPTS", "worker RSS MiB", "worker PSS MiB", "/image-bin c=32 req/s",
                        "translate c=8 req/s", "translate c=32 req/s", "paragraph c=32 req/s"], orow))


def sweep(a, inputs, tmp, out) -> int:
    """Workers x request threads x batching wait, on /image-bin (c=1, 32) and /api/translate (c=1, 16, 64)."""
    configs = [
        {"WORKERS": "2", "THREADS": "4"},
        {"WORKERS": "2", "THREADS": "8"},
        {"WORKERS": "2", "THREADS": "16"},
        {"WORKERS": "2", "THREADS": "32"},
        {"WORKERS": "3", "THREADS": "16"},
        {"WORKERS": "1", "THREADS": "32", "TF_INTRA_OP_THREADS": "2", "CV2_THREADS": "2"},
        {"WORKERS": "2", "THREADS": "16", "TRANSLATE_BATCH_WAIT_MS": "0"},
        {"WORKERS": "2", "THREADS": "16", "TRANSLATE_BATCH_WAIT_MS": "5"},
    ]
    if a.sweep_configs:
        configs = [configs[int(i)] for i in a.sweep_configs.split(",")]
    rows = []
    out["sweep"] = []
    for cfg in configs:
        label = " ".join(f"{k}={v}" for k, v in cfg.items())
        st = OurStack(ours_env(cfg), workers=int(cfg["WORKERS"]))
        try:
            ready = st.start()
            res = run_cells(st.base, ["image-bin"], [1, 32], a, inputs, label, st.worker_pids)
            res += run_cells(st.base, ["translate"], [1, 16, 64], a, inputs, label, st.worker_pids)
        finally:
            st.stop()
        out["sweep"].append({"config": cfg, "ready_s": ready, "rows": res})
        r = {(x["endpoint"], x["c"]): x for x in res}
        rows.append([cfg["WORKERS"], cfg["THREADS"], cfg.get("TF_INTRA_OP_THREADS", "1"),
                     cfg.get("TRANSLATE_BATCH_WAIT_MS", "2"),
                     r[("image-bin", 1)]["p50_ms"], r[("image-bin", 32)]["rps"],
                     r[("translate", 1)]["p50_ms"], r[("translate", 16)]["rps"], r[("translate", 64)]["rps"], ready])
    print("\n## Sweep (translator cache off)\n")
    print(md_table(["workers", "threads", "TF/OpenCV threads", "batch wait ms", "/image-bin c=1 p50 ms",
                    "/image-bin c=32 req/s", "translate c=1 p50 ms", "translate c=16 req/s",
                    "translate c=64 req/s", "ready s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
