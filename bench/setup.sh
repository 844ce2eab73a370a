#!/usr/bin/env bash
# Prepare the benchmark: wrk (Debian) and the BentoML peer's separate virtualenv
# (.venv-bench, gitignored). Idempotent; bench/run.py calls it when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
if ! command -v wrk >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends wrk </dev/null >/dev/null
fi
if [[ ! -x .venv-bench/bin/python ]]; then
    "${PYTHON:-python3}" -m venv .venv-bench
fi
if ! cmp -s bench/requirements-peers.txt .venv-bench/.installed 2>/dev/null; then
    .venv-bench/bin/pip install -q -r bench/requirements-peers.txt </dev/null
    cp bench/requirements-peers.txt .venv-bench/.installed
fi
echo "bench setup ok: $(command -v wrk), .venv-bench/bin/python"
