#!/usr/bin/env python3
"""Instructions per request: imagemeta's point reads beside the fixed body, counted by callgrind.

Requests per second on a 2-core machine shared with wrk move by ±10% between runs minutes
apart, more than most changes to the request path are worth. The number of instructions the
server executes per request does not depend on how the cores happen to be shared: this
program counts it with valgrind's callgrind, for imagemeta (on an embedded SQLite catalogue
by default, or `--database URL`) and for the fixed-body yardstick answering a body of the same
size, and prints both and their ratio. Only user space is counted (the kernel's TCP work,
about as much again, is the same for both servers), and the count moves by about 1% between
runs (how often the runtime parks differs).

Each scenario is one keep-alive connection from this script: `--warmup` requests (300), the
counters zeroed, `--requests` requests (2,000), the counters dumped. Everything it starts it
stops; everything it writes is under a temporary directory that it removes.

Usage: bench/instructions.py [--requests N] [--warmup N] [--no-build] [--database URL]
                             [--only NAME] [--bin PATH]
Needs: valgrind (apt-get install -y valgrind).
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED = os.path.join(ROOT, "target", "release", "examples", "fixed_body")
TOKEN = "bench-token"
PROJECT = "0123456789abcdef0123456789abcdef"


def log(msg):
    print(f"[instructions] {msg}", file=sys.stderr, flush=True)


class Counted:
    """A server under callgrind, started with `args`, whose listening URLs it prints."""

    def __init__(self, args, names, work, tag):
        self.out = os.path.join(work, f"callgrind.{tag}")
        self.log = open(os.path.join(work, f"{tag}.log"), "w+")
        self.p = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}", "--dump-instr=no"] + args,
            stdout=self.log, stderr=subprocess.STDOUT, cwd=work)
        self.urls = {}
        deadline = time.monotonic() + 120
        while len(self.urls) < len(names):
            if time.monotonic() > deadline or self.p.poll() is not None:
                self.log.seek(0)
                sys.exit(f"{args[0]} did not start:\n{self.log.read()[-2000:]}")
            time.sleep(0.5)
            self.log.seek(0)
            for m in re.finditer(r"(\w+)(?: API)? listening on (http://\S+)", self.log.read()):
                if m.group(1) in names:
                    self.urls[m.group(1)] = m.group(2)
        self.dumps = 0

    def control(self, option):
        subprocess.run(["callgrind_control", option, str(self.p.pid)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def count(self, url, path, warmup, requests):
        """Instructions per request of `requests` GETs of `path` (after `warmup` of them)."""
        get(url, path, warmup)
        self.control("--zero")
        get(url, path, requests)
        self.control("--dump")
        self.dumps += 1
        dump = f"{self.out}.{self.dumps}"
        deadline = time.monotonic() + 30
        while not os.path.exists(dump) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(dump) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1]) / requests
        sys.exit(f"no totals in {dump}")

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def get(url, path, n):
    """`n` GETs of `path` on one keep-alive connection; the body of the last."""
    host = url.split("//", 1)[1].rstrip("/")
    c = http.client.HTTPConnection(host, timeout=60)
    body = b""
    for _ in range(n):
        c.request("GET", path, headers={"X-Auth-Token": TOKEN})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
    c.close()
    return body


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--database", help="a catalogue URL (default: a new SQLite file)")
    ap.add_argument("--only", default="", help="only the scenarios whose name contains this")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "imagemeta"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind: apt-get install -y valgrind")
    if not args.no_build:
        log("cargo build --release (imagemeta, fixed_body)")
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "imagemeta", "--example", "fixed_body"],
                       cwd=ROOT, check=True)

    work = tempfile.mkdtemp(prefix="imagemeta-instructions-")
    servers = []
    try:
        tokens = os.path.join(work, "tokens.json")
        with open(tokens, "w") as f:
            json.dump({TOKEN: {"user_id": "bench", "project_id": PROJECT, "roles": ["member", "reader"]}}, f)
        db = args.database or f"sqlite:{os.path.join(work, 'catalogue.db')}"
        create = [args.bin, "image", "create", "--database", db, "--name", "img", "--owner", PROJECT,
                  "--visibility", "private", "--count", "1", "--created-at", "2026-01-01T00:00:00Z"]
        for i in range(10):
            create += ["--property", f"k{i}=value-{i}-" + "x" * 8]
        out = subprocess.run(create, check=True, stdout=subprocess.PIPE, text=True).stdout
        image = json.loads(out.splitlines()[0])["id"]

        log("starting imagemeta under callgrind")
        im = Counted([args.bin, "serve", "--compute-listen", "127.0.0.1:0", "--image-listen", "127.0.0.1:0",
                      "--admin-listen", "127.0.0.1:0", "--database", db, "--image-data-dir", os.path.join(work, "data"),
                      "--auth", "static", "--tokens", tokens, "--allow-new-database"], ("compute", "image"), work, "imagemeta")
        servers.append(im)
        scenarios = [
            ("GET metadata (10 keys)", "compute", f"/v2.1/images/{image}/metadata"),
            ("GET metadata item", "compute", f"/v2.1/images/{image}/metadata/k3"),
            ("GET image", "compute", f"/v2.1/images/{image}"),
            ("Glance GET image", "image", f"/v2/images/{image}"),
        ]
        fixed = {}
        rows = []
        for name, api, path in scenarios:
            if args.only not in name:
                continue
            size = len(get(im.urls[api], path, 1))
            if size not in fixed:
                fixed[size] = Counted([FIXED, str(size)], ("fixed_body",), work, f"fixed-{size}")
                servers.append(fixed[size])
            ours = im.count(im.urls[api], path, args.warmup, args.requests)
            theirs = fixed[size].count(fixed[size].urls["fixed_body"], "/", args.warmup, args.requests)
            log(f"{name}: {ours:,.0f} instructions per request, the fixed body ({size} B) {theirs:,.0f}: {ours / theirs:.2f}x")
            rows.append((name, size, ours, theirs))

        print()
        print(f"| scenario (callgrind, {args.requests} requests, one connection) | body | imagemeta instructions/request "
              "| fixed body's | ratio |")
        print("|---|---:|---:|---:|---:|")
        for name, size, ours, theirs in rows:
            print(f"| {name} | {size} B | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
