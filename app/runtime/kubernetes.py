"""The settings ConfigMap of the Kubernetes manifests (deploy/k8s/base/settings.env).

``python -m app k8s-env > deploy/k8s/base/settings.env`` writes every setting of
app/config.py and of the built-in servables with its default, except the few that the pod's
layout fixes (:data:`POD`: the container paths of Dockerfile-flask / Dockerfile-nginx, nginx
and uWSGI on the pod's loopback, logs to stdout). The file is committed and a test keeps it
equal to this output, so the manifests cannot drift from the code.
"""
from __future__ import annotations

#: What the pod's layout fixes: image paths (the same as the Dockerfiles'), the nginx sidecar
#: talking to uWSGI over the pod's loopback, logs to the container's stdout/stderr.
POD = {
    "APP_ROOT": "/srv/app",
    "RUN_DIR": "/srv/app/run",
    "APP_SOCKET": "127.0.0.1:3031",
    "APP_UPSTREAM": "127.0.0.1:3031",
    "BIND_HOST": "0.0.0.0",
    "TOUCH_RELOAD": "/srv/app/var/reload/reload",
    "TOUCH_CHAIN_RELOAD": "/srv/app/var/reload/chain-reload",
    "NGINX_RUN_DIR": "/tmp/nginx",
    "NGINX_ACCESS_LOG": "/dev/stdout",
    "NGINX_ERROR_LOG": "/dev/stderr",
    "STATIC_ROOT": "/srv/static",
}

#: Secrets never go into the ConfigMap: the Deployment reads them from the Secret
#: ``modelserver-secrets`` (optional keys), see deploy/k8s/base/deployment.yaml.
SECRET = ("API_KEYS", "JWT_SECRET", "DATABASE_URL")


def settings_env() -> str:
    """``NAME=value`` lines (kustomize's env-file format), in the order of app/config.py."""
    from ..config import SETTINGS, effective_env
    from ..servables import BUILTIN

    values = effective_env(dict(POD))
    lines = [f"{s.name}={values[s.name]}" for s in SETTINGS if s.name not in SECRET]
    for cls in BUILTIN.values():
        lines += [f"{s.name}={s.default}" for s in cls.settings]
    for line in lines:
        if "\n" in line:
            raise ValueError(f"setting with a newline cannot go into an env file: {line!r}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import sys
    if argv:
        print("usage: python -m app k8s-env > deploy/k8s/base/settings.env", file=sys.stderr)
        return 2
    sys.stdout.write(settings_env())
    return 0
