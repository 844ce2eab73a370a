"""nginx in front of several app instances (issue 17), with the real nginx and render.sh:

- APP_UPSTREAM with several addresses: requests spread over every instance; a dead instance
  (connection refused) costs no request, POSTs included (they never reached it); a POST that
  reached an instance that then failed is never re-sent to another one;
- APP_UPSTREAM_RESOLVER (docker compose --scale): nginx asks a DNS server (here a real one,
  dnslib, on loopback, standing in for Docker's 127.0.0.11) for the name, balances over every
  address it returns, and sees a replica added within seconds.

The instances here are minimal uwsgi-protocol servers that answer with their own name: the
subject under test is nginx's balancing, not the app (tests/test_cluster.py runs real app
instances).
"""
from __future__ import annotations

import os
import signal
import socket
import socketserver
import struct
import threading
import time
from collections import Counter

import pytest
import requests

from app.runtime.launcher import free_port, wait_port
from conftest import ROOT, start_nginx


class Instance(socketserver.ThreadingTCPServer):
    """Reads one uwsgi-protocol request and answers 200 with its name; ``drop_posts`` closes
    the connection after reading a POST instead (an app that died while handling it)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host, port, name, drop_posts=False):
        self.name, self.drop_posts, self.seen = name, drop_posts, Counter()
        super().__init__((host, port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        head = self._read(4)
        _, size, _ = struct.unpack("<BHB", head)
        raw, env, i = self._read(size), {}, 0
        while i < size:
            (kl,) = struct.unpack_from("<H", raw, i)
            k = raw[i + 2:i + 2 + kl].decode()
            i += 2 + kl
            (vl,) = struct.unpack_from("<H", raw, i)
            env[k] = raw[i + 2:i + 2 + vl].decode()
            i += 2 + vl
        body = self._read(int(env.get("CONTENT_LENGTH") or 0))
        self.server.seen[env["REQUEST_METHOD"]] += 1
        if self.server.drop_posts and env["REQUEST_METHOD"] == "POST":
            return  # connection closed with no answer
        out = f"{self.server.name} {len(body)}".encode()
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise ConnectionError("short read")
            data += chunk
        return data


def nginx_env(tmp_path, **extra):
    env = dict(os.environ)
    env.update({"NGINX_RUN_DIR": str(tmp_path / "ng"), "NGINX_WORKER_PROCESSES": "1",
                "NGINX_ERROR_LOG": str(tmp_path / "e.log"), "NGINX_ACCESS_LOG": str(tmp_path / "a.log"),
                "BIND_HOST": "127.0.0.1", "PORT": str(free_port()), "MAX_BODY_BYTES": "1048576",
                "STATIC_ROOT": str(ROOT / "app" / "static"), "UPSTREAM_TIMEOUT": "10",
                "RATE_LIMIT_RPS": "0", "RATE_LIMIT_BURST": "0", **extra})
    return env


@pytest.fixture
def nginx(tmp_path):
    procs = []

    def start(**extra):
        env = nginx_env(tmp_path, **extra)
        procs.append(start_nginx(env, tmp_path / "nginx.out"))
        wait_port(int(env["PORT"]))
        return f"http://127.0.0.1:{env['PORT']}"

    yield start
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)


def names(base, n, method="get"):
    out = Counter()
    for _ in range(n):
        r = getattr(requests, method)(base + "/version", timeout=10, **({"data": b"x" * 10} if method == "post" else {}))
        out[r.status_code if r.status_code != 200 else r.text.split()[0]] += 1
    return out


def test_several_instances_share_the_load_and_a_dead_one_costs_nothing(nginx):
    ports = [free_port() for _ in range(3)]
    inst = [Instance("127.0.0.1", p, f"i{k}") for k, p in enumerate(ports)]
    base = nginx(APP_UPSTREAM=" ".join(f"127.0.0.1:{p}" for p in ports), UPSTREAM_FAIL_TIMEOUT="2")
    assert names(base, 30) == {"i0": 10, "i1": 10, "i2": 10}  # round robin
    inst[1].shutdown()
    inst[1].server_close()  # connection refused from now on
    got = names(base, 20) + names(base, 20, "post")
    assert set(got) == {"i0", "i2"} and sum(got.values()) == 40  # no failed request, POSTs included
    # the dead instance is back: traffic returns to it after fail_timeout
    inst[1] = Instance("127.0.0.1", ports[1], "i1")
    # after fail_timeout nginx tries it again; once it answers, round robin includes it
    deadline, back = time.time() + 20, Counter()
    while time.time() < deadline:
        time.sleep(1)
        back = names(base, 30)
        if min(back.get(k, 0) for k in ("i0", "i1", "i2")) >= 8:
            break
    assert set(back) == {"i0", "i1", "i2"} and min(back.values()) >= 8, back


def test_a_post_that_reached_an_instance_is_never_resent(nginx):
    p1, p2 = free_port(), free_port()
    dropping, healthy = Instance("127.0.0.1", p1, "drop", drop_posts=True), Instance("127.0.0.1", p2, "ok")
    base = nginx(APP_UPSTREAM=f"127.0.0.1:{p1},127.0.0.1:{p2}", UPSTREAM_MAX_FAILS="0")
    got = names(base, 10, "post")
    assert got == {502: 5, "ok": 5}
    assert dropping.seen["POST"] == 5 and healthy.seen["POST"] == 5  # each POST reached one instance once


def test_compose_replicas_through_a_resolver(nginx):
    """APP_UPSTREAM_RESOLVER: the name is resolved at request time (valid=5s) and every address
    it has gets traffic; a new replica is used within seconds."""
    from dnslib import QTYPE, RR, A
    from dnslib.server import BaseResolver, DNSServer

    answers = {"addrs": ["127.0.0.2", "127.0.0.3"]}

    class Replicas(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            if str(request.q.qname).rstrip(".") == "app" and request.q.qtype == QTYPE.A:
                for a in answers["addrs"]:
                    reply.add_answer(RR("app", QTYPE.A, rdata=A(a), ttl=1))
            return reply

    dns_port = free_port()
    dns = DNSServer(Replicas(), port=dns_port, address="127.0.0.1")
    dns.start_thread()
    port = free_port()
    inst = [Instance(a, port, a) for a in ("127.0.0.2", "127.0.0.3", "127.0.0.4")]
    try:
        base = nginx(APP_UPSTREAM=f"app:{port}", APP_UPSTREAM_RESOLVER=f"127.0.0.1:{dns_port}")
        assert set(names(base, 20)) == {"127.0.0.2", "127.0.0.3"}
        answers["addrs"].append("127.0.0.4")  # docker compose up --scale app=3
        deadline, seen = time.time() + 15, Counter()
        while "127.0.0.4" not in seen and time.time() < deadline:
            seen.update(names(base, 6))
            time.sleep(0.5)
        assert "127.0.0.4" in seen
        assert set(names(base, 30)) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    finally:
        dns.stop()
        for i in inst:
            i.shutdown()
            i.server_close()


def test_render_refuses_bad_upstreams(tmp_path):
    import subprocess
    for extra, message in [({"APP_UPSTREAM": "a:1 b:2", "APP_UPSTREAM_RESOLVER": "127.0.0.11"}, "takes one name"),
                           ({"APP_UPSTREAM": "a:1;evil"}, "not an address"),
                           ({"APP_UPSTREAM": "app:1", "APP_UPSTREAM_RESOLVER": "8.8.8.8;x"}, "not an address"),
                           ({"APP_UPSTREAM": "a:1", "UPSTREAM_MAX_FAILS": "x"}, "must be integers")]:
        r = subprocess.run([str(ROOT / "nginx" / "render.sh")], env=nginx_env(tmp_path, **extra),
                           capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
