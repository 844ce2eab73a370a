"""Deployment files: what can be checked without a Docker engine."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from app.runtime.launcher import nginx_allow_map
from conftest import ROOT, free_port, nginx_bin, skip_or_fail

DOCKERFILES = ["Dockerfile-flask", "Dockerfile-nginx"]


def _instructions(path):
    text = (ROOT / path).read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES + ["Dockerfile-models"])
def test_every_copied_file_exists(dockerfile):
    copies = [ln for ln in _instructions(dockerfile) if ln.upper().startswith("COPY ")]
    assert copies
    for ln in copies:
        parts = [p for p in ln.split()[1:] if not p.startswith("--")]
        if "--from=" in ln:
            continue
        for src in parts[:-1]:
            assert glob.glob(str(ROOT / src)), f"{dockerfile}: COPY source {src} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_pinned_base_non_root_healthcheck(dockerfile):
    ins = _instructions(dockerfile)
    for ln in ins:
        if ln.upper().startswith("FROM "):
            image = ln.split()[1]
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), f"base image not pinned: {image}"
    users = [ln.split()[1] for ln in ins if ln.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "container must not run as root"
    assert any(ln.upper().startswith("HEALTHCHECK ") for ln in ins)


def test_dockerignore_keeps_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_containers_use_the_native_config_files():
    flask = (ROOT / "Dockerfile-flask").read_text()
    assert "app.ini" in flask and "start.sh" in flask and '"./start.sh", "uwsgi"' in flask
    nginx = (ROOT / "Dockerfile-nginx").read_text()
    for f in ("nginx/nginx.conf.template", "nginx/modelserver.conf.template", "nginx/render.sh"):
        assert f in nginx
    start = (ROOT / "start.sh").read_text()
    assert '--ini "$ROOT/app.ini"' in start and "nginx/render.sh" in start


def _compose_cmd():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_docker_compose_config_valid():
    cmd = _compose_cmd()
    if cmd is None:
        skip_or_fail("docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)")
    out = subprocess.run(cmd + ["-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    cfg = out.stdout
    assert "condition: service_healthy" in cfg
    assert "Dockerfile-flask" in cfg and "Dockerfile-nginx" in cfg
    assert re.search(r"restart: unless-stopped", cfg)
    assert "/srv/app/var/reload" in cfg  # reload files bound from the host
    assert "healthcheck" in cfg


def test_compose_env_matches_container_paths():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "APP_UPSTREAM: \"app:3031\"" in text and "APP_SOCKET: \"0.0.0.0:3031\"" in text


def test_compose_postgres_is_an_opt_in_profile():
    import yaml
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["postgres"]["profiles"] == ["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+[\w.-]*", services["postgres"]["image"])
    assert services["app"]["environment"]["ACCOUNTS"] == "${ACCOUNTS:-0}"
    assert "postgres" not in services["app"].get("depends_on", {})  # the app starts without it


def test_compose_app_scales_to_replicas():
    """`docker compose up --scale app=N`: the app service has no fixed name or host port, and
    nginx re-resolves it through Docker's DNS (tests/test_nginx_upstreams.py runs that mode)."""
    import yaml
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    app, nginx = services["app"], services["nginx"]
    assert "container_name" not in app and "ports" not in app
    assert nginx["environment"]["APP_UPSTREAM"] == "app:3031"
    assert nginx["environment"]["APP_UPSTREAM_RESOLVER"] == "127.0.0.11"


def test_rendered_nginx_config_passes_nginx_t(tmp_path):
    env = dict(os.environ)
    env.update({"NGINX_RUN_DIR": str(tmp_path), "NGINX_WORKER_PROCESSES": "1",
                "NGINX_ERROR_LOG": str(tmp_path / "e.log"), "NGINX_ACCESS_LOG": str(tmp_path / "a.log"),
                "APP_UPSTREAM": "127.0.0.1:1", "BIND_HOST": "127.0.0.1",
                "PORT": str(free_port()), "MAX_BODY_BYTES": "1048576", "STATIC_ROOT": str(ROOT / "app" / "static"),
                "UPSTREAM_TIMEOUT": "75", "RATE_LIMIT_RPS": "10", "RATE_LIMIT_BURST": "20",
                "RATE_LIMIT_EXEMPT": "127.0.0.1 10.0.0.0/8 ::1"})
    conf = subprocess.run([str(ROOT / "nginx" / "render.sh")], env=env, capture_output=True, text=True, check=True)
    path = conf.stdout.strip()
    text = open(path).read() + open(os.path.join(os.path.dirname(path), "modelserver.conf")).read()
    assert not re.search(r"\$\{[A-Z_]+\}", text)  # every template variable substituted
    assert "client_max_body_size 1048576;" in text and "$request_id" in text
    r = subprocess.run([nginx_bin(), "-t", "-q", "-e", env["NGINX_ERROR_LOG"], "-p", str(tmp_path), "-c", path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_render_requires_every_variable(tmp_path):
    env = {"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path)}
    r = subprocess.run([str(ROOT / "nginx" / "render.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "is not set" in r.stderr


# --- the Allow map of nginx's own 405s ---------------------------------------------------------

def test_committed_allow_map_is_what_the_app_prints():
    """nginx/allow.map -- the nginx container's Allow map (it has no Python) and render.sh's
    fallback -- is what `python -m app nginx-allow` prints for the shipped model repository
    (every setting at its default), so it cannot drift from the app's routes."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    assert nginx_allow_map(env, ROOT) == (ROOT / "nginx" / "allow.map").read_text(), \
        "the app's routes changed: .venv/bin/python -m app nginx-allow > nginx/allow.map"


def _render(env: dict) -> tuple[subprocess.CompletedProcess, str]:
    r = subprocess.run([str(ROOT / "nginx" / "render.sh")], env=env, capture_output=True, text=True)
    conf = os.path.join(env["NGINX_RUN_DIR"], "conf", "modelserver.conf")
    return r, (open(conf).read() if r.returncode == 0 else "")


def test_render_puts_the_allow_map_into_the_config(tmp_path):
    env = {"PATH": os.environ["PATH"], "NGINX_RUN_DIR": str(tmp_path / "ng"), "NGINX_WORKER_PROCESSES": "1",
           "NGINX_ERROR_LOG": str(tmp_path / "e.log"), "NGINX_ACCESS_LOG": str(tmp_path / "a.log"),
           "APP_UPSTREAM": "127.0.0.1:1", "BIND_HOST": "127.0.0.1", "PORT": str(free_port()),
           "MAX_BODY_BYTES": "1048576", "STATIC_ROOT": str(ROOT / "app" / "static"), "UPSTREAM_TIMEOUT": "75",
           "RATE_LIMIT_RPS": "10", "RATE_LIMIT_BURST": "20"}
    committed = (ROOT / "nginx" / "allow.map").read_text().strip()
    own = tmp_path / "own.map"
    own_line = '    "~^/only-this(\\?.*)?$" "OPTIONS, PUT";'
    own.write_text(f"# a servable's own route\n{own_line}\n")
    # no map given: the committed one
    r, text = _render(env)
    assert r.returncode == 0, r.stderr
    assert committed in text and '"~^/(static/|favicon\\.ico(\\?.*)?$)"' in text
    # NGINX_ALLOW_MAP (start.sh, the launcher)
    r, text = _render(dict(env, NGINX_ALLOW_MAP=str(own)))
    assert r.returncode == 0, r.stderr
    assert own_line in text and committed not in text
    n = subprocess.run([nginx_bin(), "-t", "-q", "-e", env["NGINX_ERROR_LOG"], "-p", env["NGINX_RUN_DIR"], "-c",
                        os.path.join(env["NGINX_RUN_DIR"], "conf", "nginx.conf")], capture_output=True, text=True)
    assert n.returncode == 0, n.stderr
    # else $NGINX_RUN_DIR/conf/allow.map, when there
    shutil.copy(own, tmp_path / "ng" / "conf" / "allow.map")
    r, text = _render(env)
    assert r.returncode == 0 and own_line in text and committed not in text
    # a missing file, or anything but map lines: refused
    r, _ = _render(dict(env, NGINX_ALLOW_MAP=str(tmp_path / "missing.map")))
    assert r.returncode == 2 and "does not exist" in r.stderr
    own.write_text(own_line + "\n}\nserver { listen 9; }\n")
    r, _ = _render(dict(env, NGINX_ALLOW_MAP=str(own)))
    assert r.returncode == 2 and "not the lines of an nginx map" in r.stderr


def test_app_ini_has_the_required_options():
    ini = (ROOT / "app.ini").read_text()
    opts = {ln.split("=", 1)[0].strip() for ln in ini.splitlines() if "=" in ln and not ln.startswith(";")}
    for o in ("master", "lazy-apps", "die-on-term", "need-app", "harakiri", "max-requests", "max-requests-delta",
              "post-buffering", "stats", "vacuum", "single-interpreter", "enable-threads", "touch-reload",
              "touch-chain-reload", "processes", "threads"):
        assert o in opts, o
    assert re.search(r"^lazy-apps = true$", ini, re.M)


def test_gitignore_covers_runtime_dirs():
    lines = (ROOT / ".gitignore").read_text().split()
    assert "/run/" in lines and "/var/" in lines and ".venv" in lines  # no slash: a symlink too
