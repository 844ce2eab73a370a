"""The ``Allow`` header of nginx's own 405s (TRACE, which nginx refuses itself), derived from
the app's routes: ``python -m app nginx-allow`` prints the lines of the ``$nginx_allow`` map
(nginx/render.sh puts them into modelserver.conf). A servable that brings routes of its own
gets them there with no edit to the nginx templates."""
from __future__ import annotations

import re
from collections import defaultdict


#: The map's default (GET routes and unknown paths).
DEFAULT = "GET, HEAD, OPTIONS"


def _pattern(rule: str) -> str:
    """'/v2/models/<model>/infer' -> '/v2/models/[^/?]+/infer' (an nginx/PCRE regex body)."""
    out = []
    for part in re.split(r"(<[^>]+>)", rule):
        if part.startswith("<"):
            out.append(r"[^?]+" if part.startswith("<path:") else r"[^/?]+")
        else:
            out.append(re.escape(part).replace("\\-", "-"))
    return "".join(out)


def allow_map_lines(app) -> str:
    """One map line per set of methods: a regex of every route path that takes exactly them."""
    by_methods: dict[str, list[str]] = defaultdict(list)
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = sorted((rule.methods or set()) | {"OPTIONS"})
        by_methods[", ".join(methods)].append(_pattern(rule.rule))
    # paths with several rules (GET and POST on one path) take the union of their methods
    union: dict[str, set] = defaultdict(set)
    for methods, paths in by_methods.items():
        for p in paths:
            union[p] |= set(methods.split(", "))
    grouped: dict[str, list[str]] = defaultdict(list)
    for p, methods in union.items():
        grouped[", ".join(sorted(methods))].append(p)
    lines = []
    for methods, paths in sorted(grouped.items()):
        if methods == DEFAULT:  # the map's default line
            continue
        body = "|".join(sorted(paths))
        lines.append(f'    "~^({body})(\\?.*)?$" "{methods}";')
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import os
    import sys

    from .. import create_app
    from ..config import Config
    app = create_app(Config.from_env({**os.environ, "MODEL_LOADING": "off", "LOG_LEVEL": "WARNING"}))
    sys.stdout.write(allow_map_lines(app))
    return 0
