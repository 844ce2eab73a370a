"""Thread budget: WORKERS x max(TF intra-op, OpenCV threads) compared with the cores."""
from __future__ import annotations

import os

from app.config import Config
from app.serving.threads import thread_budget

CORES = len(os.sched_getaffinity(0))


def test_defaults_fit_the_machine():
    b = thread_budget(Config.from_env({}), {"WORKERS": "2"})
    assert b == {"workers": 2, "cores": CORES, "compute_threads": 2, "within_budget": CORES >= 2}


def test_over_budget_is_reported(caplog, monkeypatch):
    import logging
    monkeypatch.setattr(logging.getLogger("app"), "propagate", True)  # the app's JSON logging stops it
    cfg = Config.from_env({"TF_INTRA_OP_THREADS": str(CORES), "CV2_THREADS": "1"})
    b = thread_budget(cfg, {"WORKERS": "2"})
    assert b["compute_threads"] == 2 * CORES and not b["within_budget"]
    assert "thread budget exceeded" in caplog.text


def test_zero_means_the_library_default_of_all_cores():
    b = thread_budget(Config.from_env({"TF_INTRA_OP_THREADS": "0"}), {"WORKERS": "1"})
    assert b["compute_threads"] == CORES and b["within_budget"]
