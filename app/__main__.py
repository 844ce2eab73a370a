"""Command line: ``python -m app {serve,translate,env,healthcheck}``.

* ``serve [--host H] [--port P]``: single-process development server (gevent
  WSGIServer, no nginx/uWSGI needed);
* ``translate [--beam N]``: stdin lines -> Spanish stdout lines (the
  translator's own CLI);
* ``env``: ``export`` lines with the defaults of every setting not already set
  in the environment (used by start.sh);
* ``healthcheck``: GET /readyz over the uwsgi protocol (container HEALTHCHECK);
* ``nginx-allow``: the lines of nginx's ``$nginx_allow`` map, from the app's routes;
* ``k8s-env``: the settings ConfigMap of deploy/k8s (every default, pod paths);
* ``db``, ``users``, ``keys``: the accounts database (app/accounts/cli.py).
"""
from __future__ import annotations

import sys

USAGE = ("usage: python -m app {serve [--host H] [--port P] | translate [--beam N] | env | healthcheck | "
         "nginx-allow | k8s-env | db | users | keys | history}")


def serve(argv: list[str]) -> int:
    import argparse
    import os

    p = argparse.ArgumentParser(prog="python -m app serve")
    p.add_argument("--host", default=os.environ.get("BIND_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    a = p.parse_args(argv)

    from gevent.pywsgi import WSGIServer

    from . import create_app

    app = create_app()
    print(f"serving on http://{a.host}:{a.port} (development server, single process)", flush=True)
    server = WSGIServer((a.host, a.port), app, log=None)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(USAGE)
        return 0 if len(argv) >= 2 else 2
    cmd = argv[1]
    if cmd == "serve":
        return serve(argv[2:])
    if cmd == "translate":
        from .servables.translator.model import cli_main
        return int(cli_main(argv[2:]) or 0)
    if cmd == "env":
        from .config import shell_exports
        sys.stdout.write(shell_exports())
        return 0
    if cmd == "nginx-allow":
        from .web.nginx_map import main as nginx_allow
        return nginx_allow(argv[2:])
    if cmd in ("db", "users", "keys", "history"):
        from .accounts.cli import main as accounts
        return accounts(argv[1:])
    if cmd == "k8s-env":
        from .runtime.kubernetes import main as k8s_env
        return k8s_env(argv[2:])
    if cmd == "healthcheck":
        from .runtime.healthcheck import main as hc
        return hc(argv[2:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
