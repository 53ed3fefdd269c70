#!/usr/bin/env python3
"""imagemeta's benchmark: one command, side by side with a fixed-body axum server.

Builds in release mode, seeds databases, starts imagemeta (embedded SQLite, static tokens,
synchronous=FULL) and the fixed-body yardstick on loopback, drives each scenario with wrk at
10 and 50 connections, and prints requests/s, p50, p99 and the ratio to the yardstick measured
in the same run with a body of the scenario's own response size. Each scenario runs --pairs
times (3), each run right after one of its yardstick: the table gives the median run of each
and the median of the pairs' ratios, so that the machine's drift over minutes does not land
between a scenario and its yardstick. Everything it starts it stops; everything it writes is
under a temporary directory that it removes.

With --postgres it also starts a throwaway PostgreSQL cluster (ci/postgres/start.sh, as root)
and runs the point-read and write scenarios against imagemeta on it, side by side with
pgbench's single-row update on the same server in the same run (the PostgreSQL yardstick for
writes; reads keep the fixed body's).

Usage: bench/run.py [--duration SECONDS] [--sizes 10000,100000,1000000] [--main-images N]
                    [--skip-detail] [--no-build] [--postgres] [--pg-images N] [--skip-sqlite]
                    [--pairs N] [--only NAME]
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "imagemeta")
FIXED = os.path.join(ROOT, "target", "release", "examples", "fixed_body")
TOKEN = "bench-token"
PROJECT = "0123456789abcdef0123456789abcdef"
CONNECTIONS = (10, 50)
# The smallest body the yardstick can send, `{"metadata": {"k": ""}}` (for a 204 without one).
MIN_FIXED_BODY = 23


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def build():
    log("cargo build --release (imagemeta, fixed_body)")
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bin", "imagemeta", "--example", "fixed_body"],
        cwd=ROOT,
        check=True,
    )


class Proc:
    """A server process that reports its URL on stdout; killed on exit."""

    def __init__(self, args, marker, cwd):
        self.started = time.monotonic()
        self.p = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.urls = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{args[0]} exited before listening")
            m = re.search(r"(\w+)(?: API)? listening on (http://\S+)", line)
            if m:
                self.urls[m.group(1)] = m.group(2)
                if all(k in self.urls for k in marker):
                    return
        raise RuntimeError(f"{args[0]} did not report {marker}")

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-Auth-Token", TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def seed(work, name, count, props, database=None):
    """A database with `count` public images of `props` properties each; returns (db url, ids)."""
    db = database or f"sqlite:{os.path.join(work, name + '.db')}"
    args = [BIN, "image", "create", "--database", db, "--name", "img", "--owner", PROJECT,
            "--visibility", "private", "--count", str(count), "--created-at", "2026-01-01T00:00:00Z"]
    for i in range(props):
        args += ["--property", f"k{i}=value-{i}-" + "x" * 8]
    t = time.monotonic()
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    log(f"seeded {count} images x {props} properties in {time.monotonic() - t:.1f}s")
    # Write the seeding's dirty pages back now, so that the kernel's writeback (up to a
    # gigabyte for a million images) does not run during the measurements that follow.
    os.sync()
    return db, ids


def start_imagemeta(work, db, tag):
    tokens = os.path.join(work, "tokens.json")
    args = [BIN, "serve", "--compute-listen", "127.0.0.1:0", "--image-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--database", db, "--image-data-dir", os.path.join(work, f"data-{tag}"),
            "--auth", "static", "--tokens", tokens, "--allow-new-database"]
    if db.startswith("sqlite:"):
        args += ["--synchronous", "full"]
    env_cwd = work
    return Proc(args, ("compute", "image"), env_cwd)


def cpu_seconds(pid):
    """The user and system CPU time process `pid` (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url, conns, duration, script=None, env=None, pid=None):
    """One wrk run; with `pid`, also the CPU time that server process spent per request (a
    steadier measure than requests/s on a machine shared with wrk: it does not move with how
    the two cores happen to be shared)."""
    args = ["wrk", "-t", "2", "-c", str(conns), "-d", f"{duration}s", "--latency",
            "-H", f"X-Auth-Token: {TOKEN}"]
    if script:
        args += ["-s", script]
    args.append(url)
    before = cpu_seconds(pid) if pid else None
    out = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    after = cpu_seconds(pid) if pid else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    cpu_us = (after - before) / requests * 1e6 if pid and requests else float("nan")
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "non2xx": int(errors.group(1)) if errors else 0,
            "cpu_us": cpu_us}


def median_run(runs):
    """The run of median requests per second."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def lua(work, name, text):
    path = os.path.join(work, name + ".lua")
    with open(path, "w") as f:
        f.write(text)
    return path


COMMON_LUA = """
local ids = {}
for line in io.lines("IDS_FILE") do ids[#ids + 1] = line end
local n = 0
local thread_no = 0
setup = function(thread) thread:set("tid", thread_no); thread_no = thread_no + 1 end
-- Writes land on images in random order, as a cloud's users' do (each wrk thread its own
-- fixed seed, so runs repeat): an order that follows the seeding's would find the rows a
-- batch changes side by side on disk, which no real workload does.
init = function(args) math.randomseed(1000 + tid) end
"""

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/v2.1/images/" .. id .. "/metadata", nil, '{"metadata": {"bench": "' .. n .. '"}}')
end
"""

PUT_LUA = """
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local id = ids[math.random(#ids)]
  return wrk.format("PUT", "/v2.1/images/" .. id .. "/metadata/k1", nil, '{"meta": {"k1": "v' .. n .. '"}}')
end
"""

DELETE_LUA = """
request = function()
  n = n + 1
  -- Every request deletes a key that exists: image i, key k(2..9), each pair once across
  -- runs (BENCH_OFFSET moves each run past the pairs the previous ones deleted). Multiplying
  -- by a prime that shares no factor with the image count scatters consecutive requests
  -- over the catalogue and still visits every image once per round.
  local m = n * 2 + tid + tonumber(os.getenv("BENCH_OFFSET") or "0")
  local i = (m * 7919) % #ids
  local k = 2 + math.floor(m / #ids) % 8
  return wrk.format("DELETE", "/v2.1/images/" .. ids[i + 1] .. "/metadata/k" .. k)
end
"""


def postgres_run(args, work, procs, rows, scenarios):
    """A throwaway PostgreSQL cluster: pgbench's single-row update as the yardstick of
    durable writes, then the scenarios against imagemeta on the same server."""
    state = os.path.join(work, "pg")
    os.chmod(work, 0o755)  # the cluster runs as the postgres user, inside it
    url = subprocess.run([os.path.join(ROOT, "ci", "postgres", "start.sh"), state], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    pg_bin = open(os.path.join(state, "bin")).read().strip()
    try:
        server = url.rsplit("/", 1)[0]
        for name in ("pgbench", "imagemeta"):
            subprocess.run(["psql", "-q", url, "-c", f"CREATE DATABASE {name}"], check=True)
        subprocess.run([os.path.join(pg_bin, "pgbench"), "-q", "-i", "-s", "10", f"{server}/pgbench"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        script = os.path.join(work, "update.sql")
        with open(script, "w") as f:
            f.write("\\set aid random(1, 100000 * :scale)\n"
                    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n")
        def pgbench(c):
            """One run of pgbench's single-row update at `c` clients."""
            out = subprocess.run([os.path.join(pg_bin, "pgbench"), "-n", "-f", script, "-c", str(c), "-j", "2",
                                  "-T", str(args.duration), "-r", f"{server}/pgbench"],
                                 check=True, stdout=subprocess.PIPE, text=True).stdout
            tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
            lat = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
            log(f"pgbench single-row update c={c}: {tps:.0f} tps")
            return {"rps": tps, "p50": lat, "p99": float("nan"), "non2xx": 0, "cpu_us": float("nan")}

        db = f"{server}/imagemeta?sslmode=disable"
        db_seeded, ids = seed(work, "pg", args.pg_images, 10, database=db)
        scenarios("postgres", db_seeded, ids, write_yard=(pgbench, "pgbench single-row UPDATE (synchronous_commit on)"))
    finally:
        subprocess.run([os.path.join(ROOT, "ci", "postgres", "stop.sh"), state], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--sizes", default="10000,100000,1000000", help="image counts for the detail scenario")
    ap.add_argument("--main-images", type=int, default=50000, help="images of the point-read and write scenarios")
    ap.add_argument("--skip-detail", action="store_true", help="only the point-read and write scenarios")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--postgres", action="store_true", help="also the PostgreSQL run, with pgbench's yardstick")
    ap.add_argument("--pg-images", type=int, default=80000, help="images of the PostgreSQL run (enough keys for every DELETE run)")
    ap.add_argument("--skip-sqlite", action="store_true", help="only the PostgreSQL run")
    ap.add_argument("--only", default="", help="only the scenarios whose name contains this (e.g. POST)")
    ap.add_argument("--pairs", type=int, default=3,
                    help="runs of each scenario, each right after a run of its yardstick (medians reported)")
    args = ap.parse_args()
    if args.main_images % 7919 == 0:
        sys.exit("--main-images must not be a multiple of 7919 (the DELETE scenario's stride)")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian package wrk)")
    if not args.no_build:
        build()

    work = tempfile.mkdtemp(prefix="imagemeta-bench-")
    procs = []
    rows = []
    try:
        with open(os.path.join(work, "tokens.json"), "w") as f:
            json.dump({TOKEN: {"user_id": "bench", "project_id": PROJECT, "roles": ["member", "reader"]}}, f)

        sizes = [int(s) for s in args.sizes.split(",")]
        done = [0]
        fixed_servers = {}

        def fixed_body(size):
            """A run of the fixed-body server of `size` bytes (started once, idle between runs)."""
            if size not in fixed_servers:
                fixed_servers[size] = Proc([FIXED, str(size)], ("fixed_body",), work)
                procs.append(fixed_servers[size])
            url = fixed_servers[size].urls["fixed_body"] + "/"
            return lambda c: wrk(url, c, args.duration, pid=fixed_servers[size].p.pid)

        def scenarios(label, db, ids, write_yard=None):
            """The point-read and write scenarios on `db`: reads against the fixed body of
            their size, writes against `write_yard` (pgbench) when given."""
            im = start_imagemeta(work, db, label)
            procs.append(im)
            compute, image = im.urls["compute"], im.urls["image"]
            one = ids[0]
            ids_file = os.path.join(work, f"ids-{label}.txt")
            with open(ids_file, "w") as f:
                f.write("\n".join(ids) + "\n")
            common = COMMON_LUA.replace("IDS_FILE", ids_file)
            post = lua(work, f"post-{label}", common + POST_LUA)
            put = lua(work, f"put-{label}", common + PUT_LUA)
            delete = lua(work, f"delete-{label}", common + DELETE_LUA)

            def run(name, url, size, script=None, writes=False):
                """`--pairs` runs of the yardstick and the scenario, one after the other: the
                medians of each, and the median of the pairs' ratios (the machine's speed
                drifts over minutes; a pair's two runs are seconds apart)."""
                if args.only not in name:
                    return
                if writes and write_yard:
                    yard, yard_name = write_yard
                else:
                    body = max(size, MIN_FIXED_BODY)
                    yard, yard_name = fixed_body(body), f"fixed body ({body} B)"
                for c in CONNECTIONS:
                    ours, theirs, ratios, cpu_ratios = [], [], [], []
                    for _ in range(args.pairs):
                        b = yard(c)
                        env = dict(os.environ, BENCH_OFFSET=str(done[0]))
                        r = wrk(url, c, args.duration, script, env, pid=im.p.pid)
                        done[0] += int(r["rps"] * args.duration * 1.2) + 1000
                        ours.append(r)
                        theirs.append(b)
                        ratios.append(r["rps"] / b["rps"])
                        cpu_ratios.append(r["cpu_us"] / b["cpu_us"])
                    r, b, ratio = median_run(ours), median_run(theirs), statistics.median(ratios)
                    rows.append((f"[{label}] {yard_name}, paired with the next", c, b, None))
                    rows.append((f"[{label}] {name} ({size} B)", c, r, ratio))
                    spread = ", ".join(f"{x:.2f}" for x in ratios)
                    cpu = statistics.median(cpu_ratios)
                    cpu_note = "" if math.isnan(cpu) else f"; server CPU per request {r['cpu_us']:.1f} us, {cpu:.2f}x the yardstick's"
                    log(f"[{label}] {name} c={c}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms, "
                        f"{yard_name} {b['rps']:.0f}: {ratio:.2f}x (pairs: {spread}), non-2xx {r['non2xx']}{cpu_note}")

            def size_of(method, url, body=None):
                return len(http(method, url, body)[1])

            # Each scenario's response size, from one request of its kind (on images the runs
            # below do not write: the last ids).
            spare = ids[-1]
            sizes_of = {
                "metadata": size_of("GET", f"{compute}/v2.1/images/{one}/metadata"),
                "item": size_of("GET", f"{compute}/v2.1/images/{one}/metadata/k3"),
                "image": size_of("GET", f"{compute}/v2.1/images/{one}"),
                "glance": size_of("GET", f"{image}/v2/images/{one}"),
                "post": size_of("POST", f"{compute}/v2.1/images/{spare}/metadata", {"metadata": {"bench": "1000000"}}),
                "put": size_of("PUT", f"{compute}/v2.1/images/{spare}/metadata/k1", {"meta": {"k1": "v1000000"}}),
            }
            run("GET metadata (10 keys)", f"{compute}/v2.1/images/{one}/metadata", sizes_of["metadata"])
            run("GET metadata item", f"{compute}/v2.1/images/{one}/metadata/k3", sizes_of["item"])
            run("GET image", f"{compute}/v2.1/images/{one}", sizes_of["image"])
            run("Glance GET image", f"{image}/v2/images/{one}", sizes_of["glance"])
            run("POST merge one key (durable)", compute + "/", sizes_of["post"], post, writes=True)
            run("PUT one item (durable)", compute + "/", sizes_of["put"], put, writes=True)
            run("DELETE one item (durable)", compute + "/", 0, delete, writes=True)
            im.stop()

        if not args.skip_sqlite:
            # The main database: 50,000 images of 10 properties each (enough distinct keys for
            # every DELETE to remove one that exists).
            db, ids = seed(work, "main", args.main_images, 10)
            scenarios("sqlite", db, ids)
        if args.postgres:
            postgres_run(args, work, procs, rows, scenarios)

        # images/detail?limit=100 over growing catalogues.
        detail = {}
        for n in [] if (args.skip_detail or args.skip_sqlite) else sizes:
            db_n, _ = seed(work, f"n{n}", n, 10)
            t = time.monotonic()
            srv = start_imagemeta(work, db_n, f"n{n}")
            procs.append(srv)
            http("GET", f"{srv.urls['compute']}/v2.1/images/detail?limit=1")
            startup = time.monotonic() - t
            for c in CONNECTIONS:
                r = wrk(f"{srv.urls['compute']}/v2.1/images/detail?limit=100", c, args.duration)
                rows.append((f"GET images/detail limit=100, {n} images", c, r, None))
                detail[(n, c)] = r
                log(f"detail n={n} c={c}: {r['rps']:.0f} req/s p99 {r['p99']:.2f} ms")
            log(f"{n} images: first request served {startup * 1000:.0f} ms after start; RSS {srv.rss_kib() // 1024} MiB")
            rows.append((f"start to first request, {n} images: {startup * 1000:.0f} ms; RSS after load {srv.rss_kib() // 1024} MiB", 0, None, None))
            srv.stop()
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"| scenario (median of {args.pairs} runs) | conns | req/s | p50 ms | p99 ms | server CPU µs/req | median ratio of the pairs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c, r, ratio in rows:
        if r is None:
            print(f"| {name} | | | | | | |")
            continue
        ratio = f"{ratio:.2f}" if ratio is not None else ""
        bad = f" ({r['non2xx']} non-2xx)" if r["non2xx"] else ""
        cpu = "" if math.isnan(r.get("cpu_us", float("nan"))) else f"{r['cpu_us']:.1f}"
        print(f"| {name}{bad} | {c} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {cpu} | {ratio} |")
    if len(sizes) > 1 and not args.skip_detail:
        for c in CONNECTIONS:
            small, big = detail[(sizes[0], c)], detail[(sizes[-1], c)]
            print(f"\ndetail p99 at {sizes[-1]} vs {sizes[0]} images, c={c}: {big['p99'] / small['p99']:.2f}x")


if __name__ == "__main__":
    main()
