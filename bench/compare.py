"""This tree against an earlier commit, in one run on one machine: the legacy endpoints at
c=1/8/32 on both, and the Open Inference Protocol routes against the legacy ones at c=32.

    .venv/bin/python bench/compare.py --base 02ab199            # ~8 min; Markdown to stdout
    .venv/bin/python bench/compare.py --base 02ab199 --rounds 1 --duration 3

The earlier commit is exported with ``git archive`` into a temporary directory and run from
there (its own app/, app.ini and nginx templates, the same .venv). Both stacks run at once;
each cell runs on both sides back to back, the order alternating per round, and each figure
is the median over rounds, so drift on a shared machine falls on both sides. Translator cache off on both (TRANSLATE_CACHE_SIZE=0), as in
bench/run.py; loopback only, every wrk cell bounded in time and count.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.run import ENDPOINTS, RESULTS, build_inputs, drain, machine, md_table, ours_env, wrk_cell
from bench.stack import OurStack, cell_arguments

ROOT = Path(__file__).resolve().parent.parent

LEGACY = ["image-bin", "image-64", "translate"]
#: a newer protocol's route -> the legacy route it is compared with (same inputs, same model)
V2 = {"v2-image": "image-64", "v2-translate": "translate", "lt-translate": "translate"}


def export_commit(rev: str, dest: Path) -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, check=True, capture_output=True)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return sha


def run_interleaved(roots: dict, cells: dict, a, inputs: dict) -> dict:
    """Both stacks up at once (an idle stack costs no CPU); every cell runs on each side in
    turn, the order alternating per round, so machine drift falls on both sides alike."""
    stacks = {side: OurStack(ours_env(), workers=2, root=root) for side, root in roots.items()}
    runs: dict = {side: {} for side in stacks}
    try:
        for st in stacks.values():
            st.start()
        for side, st in stacks.items():
            for ep in dict.fromkeys(e for e, _ in cells[side]):
                wrk_cell(st.base, ep, inputs, 8, 1, 0)  # warm-up, not recorded
        every = list(dict.fromkeys(c for side in cells for c in cells[side]))
        for r in range(a.rounds):
            for cell in every:
                sides = [s for s in (("base", "head") if r % 2 == 0 else ("head", "base")) if cell in cells[s]]
                for side in sides:
                    st = stacks[side]
                    drain(st.worker_pids)
                    res = wrk_cell(st.base, cell[0], inputs, cell[1], a.duration, a.max_requests)
                    runs[side].setdefault(cell, []).append(res)
                    print(f"  {side:4s} {cell[0]:12s} c={cell[1]:<3d} {res['rps']:8.1f} req/s  "
                          f"p50 {res['p50_ms']:7.2f} ms  errors {res['errors']}", flush=True)
    finally:
        for st in stacks.values():
            st.stop()
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the earlier commit (e.g. the one before a change)")
    cell_arguments(ap, rounds=3)  # --json default: bench/results/compare-<time>.json
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        base_sha = export_commit(a.base, tmp / "base")
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
        inputs = build_inputs(tmp)
        legacy_cells = [(e, c) for e in LEGACY for c in (1, 8, 32)]
        v2_cells = [(e, 32) for e in V2]
        print(f"# compare {head} (this tree) with {base_sha}, {a.rounds} rounds, {machine()['cpu']}", flush=True)
        runs = run_interleaved({"base": tmp / "base", "head": ROOT},
                               {"base": legacy_cells, "head": legacy_cells + v2_cells}, a, inputs)
        med = {side: {k: statistics.median(r["rps"] for r in rs) for k, rs in cells.items()}
               for side, cells in runs.items()}
        rows = []
        for e, c in legacy_cells:
            b, h = med["base"][(e, c)], med["head"][(e, c)]
            rows.append([ENDPOINTS[e][3], c, f"{b:.1f}", f"{h:.1f}", f"{h / b:.3f}"])
        print("\n## Legacy endpoints: this tree vs " + base_sha + " (req/s, median of rounds)\n")
        print(md_table(["endpoint", "c", base_sha, head, "ratio"], rows))
        rows = []
        for v2, legacy in V2.items():
            h, l2 = med["head"][(v2, 32)], med["head"][(legacy, 32)]
            rows.append([ENDPOINTS[v2][3], 32, f"{h:.1f}", f"{l2:.1f}", f"{h / l2:.3f}"])
        print("\n## Open Inference Protocol and LibreTranslate routes vs the legacy route, this tree, c=32 (req/s)\n")
        print(md_table(["route", "c", "req/s", "legacy req/s", "ratio"], rows))
        errors = sum(r["errors"] for cells in runs.values() for rs in cells.values() for r in rs)
        print(f"\nerrors in all cells: {errors}")
        out = {"started": started, "machine": machine(), "base": base_sha, "head": head, "args": vars(a),
               "runs": {side: {f"{e}@{c}": rs for (e, c), rs in cells.items()} for side, cells in runs.items()},
               "median_rps": {side: {f"{e}@{c}": v for (e, c), v in m.items()} for side, m in med.items()},
               "errors": errors}
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = Path(a.json) if a.json else RESULTS / f"compare-{started.replace(':', '')}.json"
        path.write_text(json.dumps(out, indent=1))
        print(f"JSON: {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
