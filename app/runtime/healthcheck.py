"""Health check over the uwsgi protocol (the app container speaks no HTTP).

``python -m app healthcheck [--socket HOST:PORT|/path.sock] [--path /readyz]``
sends one request straight to uWSGI and exits 0 on a 2xx answer.
"""
from __future__ import annotations

import os
import socket
import struct


def _pack_vars(env: dict[str, str]) -> bytes:
    body = b""
    for k, v in env.items():
        kb, vb = k.encode(), v.encode()
        body += struct.pack("<H", len(kb)) + kb + struct.pack("<H", len(vb)) + vb
    return struct.pack("<BHB", 0, len(body), 0) + body


def request(sock_addr: str, path: str = "/readyz", timeout: float = 5.0,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, raw HTTP response) of a GET sent over the uwsgi protocol."""
    env = {
        "REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "healthcheck", "SERVER_PORT": "0",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "healthcheck", "HTTP_ACCEPT": "application/json",
    }
    for k, v in (headers or {}).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    if sock_addr.startswith("unix:") or sock_addr.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = sock_addr[5:] if sock_addr.startswith("unix:") else sock_addr
    else:
        host, _, port = sock_addr.rpartition(":")
        host = host or "127.0.0.1"
        if host in ("0.0.0.0", "", "*"):
            host = "127.0.0.1"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    s.settimeout(timeout)
    try:
        s.connect(target)
        s.sendall(_pack_vars(env))
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    raw = b"".join(chunks)
    try:
        status = int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, raw


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m app healthcheck")
    p.add_argument("--socket", default=os.environ.get("APP_SOCKET", "127.0.0.1:3031"))
    p.add_argument("--path", default="/readyz")
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    try:
        status, _ = request(a.socket, a.path, a.timeout)
    except OSError as exc:
        print(f"unhealthy: {exc}")
        return 1
    print(f"{a.path}: {status}")
    return 0 if 200 <= status < 300 else 1
