"""app/config.py: defaults, overrides, validation; it is the one source of every variable."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT
from app.config import SETTINGS, SETTINGS_BY_NAME, Config, effective_env, settings_markdown, shell_exports
from app.servables import BUILTIN, TranslatorServable


def test_defaults():
    cfg = Config.from_env({})
    assert cfg.model_loading == "sync"
    assert cfg.enabled_models == ("face_detector", "nose_tracker", "translator")
    assert (cfg.tf_intra_op_threads, cfg.tf_inter_op_threads, cfg.cv2_threads) == (1, 1, 1)
    assert cfg.max_body_bytes == 10 * 1024 * 1024
    assert cfg.model_repository == str(ROOT / "models")
    assert cfg.revision == "dev"


def test_overrides_and_revision_file(tmp_path):
    rev = tmp_path / "REV"
    rev.write_text("abc123\nignored\n")
    env = {"TF_INTRA_OP_THREADS": "3", "MAX_BEAM": "8", "APP_REVISION_FILE": str(rev),
           "MODEL_REPOSITORY": "/opt/models", "MODEL_LOADING": "Background"}
    cfg = Config.from_env(env)
    assert cfg.tf_intra_op_threads == 3 and TranslatorServable.read_settings(env)["MAX_BEAM"] == 8
    assert cfg.revision == "abc123"
    assert cfg.model_repository == "/opt/models"
    assert cfg.model_loading == "background"


@pytest.mark.parametrize("env", [
    {"WORKERS": "x", "TF_INTRA_OP_THREADS": "many"},
    {"MODEL_LOADING": "eager"},
    {"MAX_BODY_BYTES": "10"},
    {"ENABLED_MODELS": "nose_tracker,../etc"},
    {"MODEL_WARMUP": "maybe"},
])
def test_invalid_values_rejected(env):
    with pytest.raises(ValueError):
        Config.from_env(env)


@pytest.mark.parametrize("env", [
    {"DEFAULT_BEAM": "5", "MAX_BEAM": "4"},
    {"TRANSLATE_BATCH_MAX": "-1"},
    {"MAX_BATCH_TEXTS": "many"},
])
def test_invalid_servable_settings_rejected(env):
    with pytest.raises(ValueError):
        TranslatorServable.read_settings(env)


def test_relative_paths_resolved_against_app_root():
    eff = effective_env({"APP_ROOT": "/srv/app", "RUN_DIR": "run", "STATS_SOCKET": "127.0.0.1:9191"})
    assert eff["RUN_DIR"] == "/srv/app/run"
    assert eff["NGINX_RUN_DIR"] == "/srv/app/run/nginx"
    assert eff["STATS_SOCKET"] == "127.0.0.1:9191"
    assert eff["NGINX_ACCESS_LOG"] == "/srv/app/run/nginx/access.log"
    assert effective_env({"NGINX_ACCESS_LOG": "/dev/stdout"})["NGINX_ACCESS_LOG"] == "/dev/stdout"


def test_shell_exports_keep_set_values():
    out = shell_exports({"WORKERS": "7"})
    assert "export WORKERS=" not in out  # already set: left alone
    assert "export THREADS=16" in out
    run = subprocess.run(["bash", "-c", f"{out}\necho $THREADS $PORT"], capture_output=True, text=True)
    assert run.stdout.split() == ["16", "8080"]


def test_cli_env_subcommand():
    out = subprocess.run([sys.executable, "-m", "app", "env"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PORT": "9999"}, check=True).stdout
    assert "export PORT=" not in out and "export APP_SOCKET=127.0.0.1:3031" in out


def test_every_variable_in_app_ini_and_templates_is_a_setting():
    def code(path, comment):
        return "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith(comment))

    used = set(re.findall(r"\$\(([A-Z_]+)\)", code(ROOT / "app.ini", ";")))
    for t in (ROOT / "nginx").glob("*.template"):
        used |= set(re.findall(r"\$\{([A-Z_]+)\}", code(t, "#")))
    # computed by render.sh
    used -= {"NGINX_USER_DIRECTIVE", "NGINX_RATE_LIMIT_ZONE", "NGINX_LIMIT_REQ", "NGINX_RATE_LIMIT_EXEMPT",
             "NGINX_ALLOW_ROUTES", "NGINX_UPSTREAM", "NGINX_UWSGI_PASS",
             "NGINX_INSTANCE_LOCATIONS"}
    assert used, "no variables found"
    assert used <= set(SETTINGS_BY_NAME), used - set(SETTINGS_BY_NAME)


def test_no_setting_is_read_by_uwsgi_itself():
    # uWSGI treats every UWSGI_* environment variable as one of its options
    every = [*SETTINGS, *(s for cls in BUILTIN.values() for s in cls.settings)]
    assert not [s.name for s in every if s.name.startswith("UWSGI_")]
    assert len({s.name for s in every}) == len(every), "a servable setting shadows another setting"


def test_readme_configuration_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert settings_markdown() in readme, "regenerate the table: python -c 'import app.config as c; print(c.settings_markdown())'"
