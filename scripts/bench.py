#!/usr/bin/env python3
"""`make bench`: measures gatepass side by side with its limits and writes BENCHMARKS.md.

This machine is shared and noisy, so targets are alternated (round robin), every run is
repeated BENCH_REPS times, and tables report medians and ratios, never a lone number.
Standard library only; needs wrk, the release binaries and .venv/bin/traefik.
"""
import base64
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
LUA = ROOT / "bench" / "wrk" / "rotate.lua"
DURATION = os.environ.get("BENCH_DURATION", "4s")
REPS = int(os.environ.get("BENCH_REPS", "3"))
CONNS = [16, 64]
FANOUT_CLIENTS = int(os.environ.get("BENCH_FANOUT_CLIENTS", "10000"))
WORK = Path(tempfile.mkdtemp(prefix="gatepass-bench-"))
PROCS = []
COMMANDS = []
# The targets every section checks: [target, measured, met, where to read why].
TARGETS = []
CLK = os.sysconf("SC_CLK_TCK")


def target(what, measured, met, why=""):
    TARGETS.append([what, measured, "met" if met else "**not met**", why])


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(name, args, ready_url=None, ready_port=None):
    logf = open(WORK / f"{name}.log", "w")
    p = subprocess.Popen([str(a) for a in args], stdout=logf, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
    PROCS.append(p)
    deadline = time.time() + 30
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"{name} exited: {(WORK / f'{name}.log').read_text()}")
        try:
            if ready_url:
                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status < 500:
                        return p
            elif ready_port:
                with socket.create_connection(("127.0.0.1", ready_port), timeout=1):
                    return p
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{name} did not start: {(WORK / f'{name}.log').read_text()}")


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def start_gatepass(name, config):
    """`gatepass serve --config WORK/config` on a free port, once `/healthz` answers: (port, process)."""
    port = free_port()
    p = start(name, [REL / "gatepass", "serve", "--config", WORK / config, "--listen", f"127.0.0.1:{port}"],
              ready_url=f"http://127.0.0.1:{port}/healthz")
    return port, p


def cache_hit_rows(gp, name):
    """ratio_rows over gatepass processes `gp` (kind -> (port, process)) with the HS256 tokens, the
    first kind as baseline and `name(kind)` as each row's name; stops them after."""
    tokens = {"MODE": "validate", "TOKENS": str(WORK / "tokens-hs256.txt")}
    rows = ratio_rows([{"name": name(kind), "url": f"http://127.0.0.1:{port}/validate", "env": tokens, "pid": p.pid}
                       for kind, (port, p) in gp.items()])
    for _, p in gp.values():
        retire(p)
    return rows


def retire(p):
    """Stops a process a section started and forgets it."""
    stop(p)
    PROCS.remove(p)


def stop_all():
    for p in PROCS:
        stop(p)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def ms(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def wrk(url, conns, env, duration=DURATION):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{duration}", "--latency", "-s", str(LUA), url]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "requests": total, "errors": errors}


def round_robin(targets, conns, reps=REPS):
    """Runs every target `reps` times, alternating; returns name -> medians, plus `spread`:
    (max - min) / median of req/s over the runs."""
    runs = {t["name"]: [] for t in targets}
    for rep in range(reps):
        for t in targets:
            # Optional: fresh inputs for this run (DPoP proofs are good once).
            if t.get("prepare"):
                t["prepare"](t, rep, conns)
            before = cpu_seconds(t["pid"]) if t.get("pid") else None
            # Optional: CPU per request of several processes ("cpu_us:NAME").
            before_each = {k: cpu_seconds(p) for k, p in t.get("pids", {}).items()}
            r = wrk(t["url"], conns, t["env"])
            if before is not None:
                r["cpu_us"] = (cpu_seconds(t["pid"]) - before) / max(r["requests"], 1) * 1e6
            for k, p in t.get("pids", {}).items():
                r[f"cpu_us:{k}"] = (cpu_seconds(p) - before_each[k]) / max(r["requests"], 1) * 1e6
            runs[t["name"]].append(r)
            log(f"c={conns} rep {rep + 1}/{reps} {t['name']}: {r['rps']:.0f} req/s p99 {r['p99']:.2f} ms errors {r['errors']}")
    med = {}
    for name, rs in runs.items():
        med[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        med[name]["errors"] = sum(r["errors"] for r in rs)
        rps = [r["rps"] for r in rs]
        med[name]["spread"] = (max(rps) - min(rps)) / med[name]["rps"]
    return med


def metric(url, series, ca=None):
    import ssl
    ctx = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def ratio_rows(targets):
    """Runs `targets` round robin at every connection count; rows with each target's ratio to
    the first one (the baseline) and its CPU per request."""
    rows = []
    for conns in CONNS:
        med = round_robin(targets, conns)
        base = med[targets[0]["name"]]
        for t in targets:
            m = med[t["name"]]
            rows.append([conns, t["name"], f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}",
                         f"{m['rps'] / base['rps']:.2f}", f"{m['cpu_us']:.1f}", m["errors"]])
    return rows


def shared_state_section(limit_port, traefik):
    """Cache hit with `per_user` on (never reached): memory vs a real redis-server, direct and
    through Traefik, the Redis rows on slices of the budget; then one user far above a limit,
    with the limit scripts Redis ran per request."""
    log("section 1b: shared state (redis)")
    redis_port = free_port()
    start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                    "--dir", WORK], ready_port=redis_port)
    base = (WORK / "gp-hs256.toml").read_text()
    limit = '[rate_limit]\nper_user = { rate = 1000000, per = "1s", burst = 1000000 }\n'
    state = f'[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
    (WORK / "gp-peruser-memory.toml").write_text(base + "\n" + limit)
    (WORK / "gp-peruser-redis.toml").write_text(base + "\n" + limit + "\n" + state)
    tokens = {"MODE": "validate", "TOKENS": str(WORK / "tokens-hs256.txt")}
    gp = {}
    for kind in ["memory", "redis"]:
        gp[kind] = start_gatepass(f"gp-peruser-{kind}", f"gp-peruser-{kind}.toml")
    # Redis connects in the background: wait until gatepass says it is up.
    deadline = time.time() + 10
    while metric(f"http://127.0.0.1:{gp['redis'][0]}/metrics", "gatepass_state_up") != 1.0:
        if time.time() > deadline:
            sys.exit("gatepass never connected to the bench redis-server")
        time.sleep(0.1)
    web_port = free_port()
    dyn = WORK / "dynamic-state"
    dyn.mkdir()
    (dyn / "state.yml").write_text(f"""http:
  middlewares:
    fa-memory:
      forwardAuth: {{address: "http://127.0.0.1:{gp['memory'][0]}/validate", trustForwardHeader: false}}
    fa-redis:
      forwardAuth: {{address: "http://127.0.0.1:{gp['redis'][0]}/validate", trustForwardHeader: false}}
  routers:
    fa-memory: {{entryPoints: [web], rule: "PathPrefix(`/fa-memory`)", service: limit, middlewares: [fa-memory]}}
    fa-redis: {{entryPoints: [web], rule: "PathPrefix(`/fa-redis`)", service: limit, middlewares: [fa-redis]}}
    backend: {{entryPoints: [web], rule: "PathPrefix(`/backend`)", service: limit}}
  services:
    limit:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:{limit_port}"}}]
""")
    (WORK / "traefik-state.yml").write_text(f"""global: {{checkNewVersion: false, sendAnonymousUsage: false}}
entryPoints:
  web:
    address: "127.0.0.1:{web_port}"
providers:
  file: {{directory: "{dyn}", watch: false}}
log: {{level: ERROR}}
""")
    tr = start("traefik-state", [traefik, f"--configFile={WORK / 'traefik-state.yml'}"],
               ready_url=f"http://127.0.0.1:{web_port}/backend")
    bearer = {"MODE": "bearer", "TOKENS": str(WORK / "tokens-hs256.txt")}
    targets = []
    for kind in ["memory", "redis"]:
        port, p = gp[kind]
        targets.append({"name": f"direct, per_user on {kind}", "url": f"http://127.0.0.1:{port}/validate", "env": tokens, "pid": p.pid})
    for kind in ["memory", "redis"]:
        targets.append({"name": f"through Traefik, per_user on {kind}", "url": f"http://127.0.0.1:{web_port}/fa-{kind}",
                        "env": bearer, "pid": gp[kind][1].pid})
    COMMANDS.append("redis-server --port PORT --save '' --appendonly no  # section 1b: gp-hs256.toml + [rate_limit] per_user (+ [state] redis)")
    allow = "gatepass_requests_total{outcome=\"allow\",reason=\"ok\"}"
    redis_metrics = f"http://127.0.0.1:{gp['redis'][0]}/metrics"
    calls_before = metric(redis_metrics, "gatepass_state_seconds_count")
    allows_before = metric(redis_metrics, allow)
    rows = []
    for conns in CONNS:
        med = round_robin(targets, conns)
        for via in ["direct", "through Traefik"]:
            mem = med[f"{via}, per_user on memory"]
            for kind in ["memory", "redis"]:
                m = med[f"{via}, per_user on {kind}"]
                rows.append([conns, f"{via}, per_user on {kind}", f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}",
                             f"{m['rps'] / mem['rps']:.2f}", f"{m['cpu_us']:.1f}", m["errors"]])
    calls = metric(redis_metrics, "gatepass_state_seconds_count") - calls_before
    allows = metric(redis_metrics, allow) - allows_before
    fallbacks = metric(redis_metrics, "gatepass_state_fallbacks_total")
    direct = [float(r[5]) for r in rows if r[1] == "direct, per_user on redis"]
    target("per_user on Redis (sliced) ≥ 0.9× in process, direct (1b)",
           f"{min(direct):.2f}× at the lowest", min(direct) >= 0.9)
    for p in [tr, gp["memory"][1], gp["redis"][1]]:
        retire(p)
    hot_rows, hot = hot_user_rows(redis_port, base, state)
    for p in [q for q in PROCS if q.args[0] == "redis-server"]:
        retire(p)
    return ("## 1b. Shared state: cache hit with `per_user`, in process vs Redis\n\n"
            "HS256 cache hits with a `per_user` limit that is never reached (1,000 rotating users), the limiter in "
            "process (`[state]` memory, the default) or in a real `redis-server` on the same 2 cores "
            "(`backend = \"redis\"`): one GCRA per user, of which each replica takes *slices* (here 64 requests, kept "
            "up to 1 s: the limit is far larger) and spends them locally. `× memory` is the ratio to the memory row of "
            "the same kind; CPU µs/req is gatepass's own (Redis's is not counted).\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× memory", "gatepass CPU µs/req", "errors"], rows)
            + f"\n\nRedis calls per allowed request on the Redis replica: **{calls / allows if allows else float('nan'):.3f}** "
            f"({calls:.0f} calls for {allows:.0f} allows, `gatepass_state_seconds_count`); fallbacks to the local limiter: "
            f"{fallbacks:.0f}.\n\n"
            "**One user above the limit** (`per_user = { rate = 1000, per = \"1s\", burst = 100 }`, every request from "
            "the same user, far more than 1,000/s offered): slices of 50 requests (half the burst) for 100 ms; once Redis says the budget "
            "is spent the replica answers 429 locally until the time Redis gave. *Scripts/request* counts the limit "
            "scripts Redis ran (`INFO commandstats`, EVALSHA and EVAL) over every request (200 and 429); *errors* are "
            "the 429s.\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× memory", "scripts/request", "errors"], hot_rows))


def redis_scripts(port):
    """Limit scripts Redis ran so far (EVALSHA and EVAL calls, INFO commandstats)."""
    calls = redis_calls(port)
    return calls.get("evalsha", 0) + calls.get("eval", 0)


def hot_user_rows(redis_port, base, state):
    """One user far above per_user, in process vs sliced on Redis: req/s and scripts/request."""
    limit = '[rate_limit]\nper_user = { rate = 1000, per = "1s", burst = 100 }\n'
    (WORK / "gp-hot-memory.toml").write_text(base + "\n" + limit)
    (WORK / "gp-hot-redis.toml").write_text(base + "\n" + limit + "\n" + state)
    one = WORK / "tokens-one-user.txt"
    one.write_text((WORK / "tokens-hs256.txt").read_text().splitlines()[0] + "\n")
    env = {"MODE": "validate", "TOKENS": str(one)}
    targets, procs = [], []
    for kind in ["memory", "redis"]:
        port, p = start_gatepass(f"gp-hot-{kind}", f"gp-hot-{kind}.toml")
        procs.append(p)
        targets.append({"name": f"one user above the limit, per_user on {kind}",
                        "url": f"http://127.0.0.1:{port}/validate", "env": env, "pid": p.pid})
    COMMANDS.append("gp-hs256.toml + [rate_limit] per_user 1000/s burst 100 (+ [state] redis), one token  # section 1b")
    rows, per_request = [], []
    for conns in CONNS:
        scripts_before = redis_scripts(redis_port)
        med = round_robin(targets, conns)
        # Only the Redis target runs scripts; its requests over every run of this conns.
        scripts = redis_scripts(redis_port) - scripts_before
        redis_name = "one user above the limit, per_user on redis"
        requests = med[redis_name]["requests"] * REPS
        ratio = scripts / requests if requests else float("nan")
        per_request.append((conns, ratio))
        mem = med["one user above the limit, per_user on memory"]
        for t in targets:
            m = med[t["name"]]
            rows.append([conns, t["name"], f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}",
                         f"{m['rps'] / mem['rps']:.2f}", f"{ratio:.4f}" if t["name"] == redis_name else "",
                         m["errors"]])
    worst = max(per_request, key=lambda r: r[1])
    target("Redis round trips per request, one user above the limit ≤ 0.2 (1b)",
           f"{worst[1]:.4f} at the highest ({worst[0]} conns)", worst[1] <= 0.2)
    for p in procs:
        retire(p)
    return rows, per_request


def revocation_section():
    """The revocation check on the cache-hit path: the same gatepass with an empty list and with
    1,000 entries (none of them the benchmark's tokens, so every request is checked and allowed)."""
    log("section 1c: revocation check")
    base = (WORK / "gp-hs256.toml").read_text()
    gp = {}
    for kind in ["empty", "1000"]:
        (WORK / f"gp-rev-{kind}.toml").write_text(base)
        gp[kind] = start_gatepass(f"gp-rev-{kind}", f"gp-rev-{kind}.toml")
    admin = subprocess.run([REL / "gatepass", "mint", "--config", WORK / "gp-rev-1000.toml", "--issuer", "bench",
                            "--sub", "bench-admin", "--role", "admin"], capture_output=True, text=True, check=True).stdout.strip()
    for i in range(1000):
        req = urllib.request.Request(f"http://127.0.0.1:{gp['1000'][0]}/revocations", method="POST",
                                     data=json.dumps({"sid": f"bench-session-{i}"}).encode(),
                                     headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
    entries = metric(f"http://127.0.0.1:{gp['1000'][0]}/metrics", "gatepass_revocation_entries")
    COMMANDS.append("gatepass mint ... --role admin; POST /revocations x1000  # section 1c")
    rows = cache_hit_rows(gp, lambda kind: f"cache hit, {kind} revocation list")
    return ("## 1c. Revocation check on the cache-hit path\n\n"
            f"HS256 cache hits, every request checked against the revocation list: empty, or {entries:.0f} live entries "
            "(none matching). A cached token is looked up again only when the list changed since it was last found "
            "clean, so the check is two atomic loads.\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× empty", "CPU µs/req", "errors"], rows))


def introspection_section():
    """Cache hits of opaque tokens (introspected once each) next to JWT cache hits. The
    introspection endpoint is a minimal local stub: only the cache-hit path is measured."""
    import http.server
    import threading
    log("section 1d: introspection cache hits")

    class Stub(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", "0")))
            body = json.dumps({"active": True, "sub": "opaque-user", "exp": int(time.time()) + 3600}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    (WORK / "introspection.key").write_text("bench-introspection-secret\n")
    base = (WORK / "gp-hs256.toml").read_text()
    extra = (f'\n[[issuers]]\nname = "opaque"\nissuer = "https://opaque.bench"\nalgorithms = ["RS256"]\n'
             f'introspection_url = "http://127.0.0.1:{stub.server_address[1]}/introspect"\n'
             f'introspection_client_id = "gatepass"\nintrospection_secret_file = "{WORK / "introspection.key"}"\n')
    (WORK / "gp-opaque.toml").write_text(base + extra)
    (WORK / "tokens-opaque.txt").write_text("\n".join(os.urandom(24).hex() for _ in range(1000)) + "\n")
    port, p = start_gatepass("gp-opaque", "gp-opaque.toml")
    url = f"http://127.0.0.1:{port}/validate"
    jwt = {"MODE": "validate", "TOKENS": str(WORK / "tokens-hs256.txt")}
    opaque = {"MODE": "validate", "TOKENS": str(WORK / "tokens-opaque.txt")}
    # Warm both caches: every token verified or introspected once.
    wrk(url, 16, jwt, "2s")
    wrk(url, 16, opaque, "2s")
    calls = metric(f"http://127.0.0.1:{port}/metrics", 'gatepass_introspections_total{result="active"}')
    targets = [{"name": "JWT (HS256) cache hit", "url": url, "env": jwt, "pid": p.pid},
               {"name": "opaque token, introspection cache hit", "url": url, "env": opaque, "pid": p.pid}]
    COMMANDS.append("gatepass with an introspecting issuer (local stub endpoint), 1000 opaque tokens  # section 1d")
    rows = ratio_rows(targets)
    after = metric(f"http://127.0.0.1:{port}/metrics", 'gatepass_introspections_total{result="active"}')
    retire(p)
    stub.shutdown()
    return ("## 1d. Opaque tokens: introspection cache hits vs JWT cache hits\n\n"
            "One gatepass, one HS256 issuer and one introspecting issuer (a local stub endpoint); 1,000 tokens of "
            "each kind, every one verified or introspected once before measuring. An opaque token's cache key is "
            "its SHA-256.\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× JWT", "CPU µs/req", "errors"], rows)
            + f"\n\nIntrospection calls: {calls:.0f} while warming up, {after - calls:.0f} during the measured runs.")


def redis_calls(port):
    """Commands a redis-server has run, by command (`INFO commandstats`), INFO itself excluded."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
    calls = {}
    for line in out.splitlines():
        m = re.match(r"cmdstat_(\S+?):calls=(\d+)", line)
        if m and m.group(1) != "info":
            calls[m.group(1)] = int(m.group(2))
    return calls


def session_section(traefik):
    """Sign-in sessions (SPEC §9) on the cache-hit path next to bearer tokens on one gatepass:
    sessions in process and in Redis, 200 sessions signed in at the real OpenID Provider of
    tests/oidc. The hot path is a process cache: Redis calls per session request should be 0."""
    log("section 1g: sign-in sessions")
    op_port, redis_port = free_port(), free_port()
    env = dict(os.environ, PORT=str(op_port), REDIRECT_URIS="http://app.test/_gatepass/callback",
               SIGNIN_RESOURCE="https://app.example.test", GATEPASS_SECRET="bench-oidc-client-secret",
               ACCESS_TOKEN_TTL="3600")
    logf = open(WORK / "oidc-provider.log", "w")
    op = subprocess.Popen(["node", str(ROOT / "tests" / "oidc" / "provider.mjs")], env=env, stdout=logf,
                          stderr=subprocess.STDOUT, cwd=ROOT)
    PROCS.append(op)
    start("redis-sessions", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                             "--appendonly", "no", "--dir", WORK], ready_port=redis_port)
    issuer = f"http://127.0.0.1:{op_port}"
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=1):
                break
        except Exception:
            if time.time() > deadline:
                sys.exit(f"oidc-provider did not start: {(WORK / 'oidc-provider.log').read_text()}")
            time.sleep(0.2)
    (WORK / "oidc-client.key").write_text("bench-oidc-client-secret\n")
    (WORK / "session.keys").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    base = (WORK / "gp-hs256.toml").read_text()
    signin = (f'\n[[issuers]]\nname = "op"\nissuer = "{issuer}"\ndiscovery = true\nalgorithms = ["RS256"]\n'
              f'audiences = ["https://app.example.test"]\n\n[tokens]\nsources = ["session", "bearer"]\n\n'
              f'[signin]\nissuer = "op"\nclient_id = "gatepass"\nclient_secret_file = "{WORK / "oidc-client.key"}"\n'
              f'hosts = ["app.test"]\nkey_file = "{WORK / "session.keys"}"\n')
    state = f'\n[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
    (WORK / "gp-session-memory.toml").write_text(base + signin)
    (WORK / "gp-session-redis.toml").write_text(base + signin + state)
    gp, targets = {}, []
    bearer = {"MODE": "validate", "TOKENS": str(WORK / "tokens-hs256.txt")}
    for kind in ["memory", "redis"]:
        port, p = start_gatepass(f"gp-session-{kind}", f"gp-session-{kind}.toml")
        deadline = time.time() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit(f"gp-session-{kind} never ready: {(WORK / f'gp-session-{kind}.log').read_text()}")
            time.sleep(0.1)
        subprocess.run([REL / "bench_setup", "sessions", f"http://127.0.0.1:{port}", "app.test", issuer, "200",
                        WORK / f"sessions-{kind}.txt"], check=True)
        gp[kind] = (port, p)
        url = f"http://127.0.0.1:{port}/validate"
        session = {"MODE": "session", "TOKENS": str(WORK / f"sessions-{kind}.txt")}
        # Warm both caches: every token and session resolved once.
        wrk(url, 16, bearer, "2s")
        wrk(url, 16, session, "2s")
        targets.append({"name": f"bearer (HS256) cache hit, state {kind}", "url": url, "env": bearer, "pid": p.pid})
        targets.append({"name": f"session cache hit, sessions in {kind}", "url": url, "env": session, "pid": p.pid})
    COMMANDS.append("node tests/oidc/provider.mjs; gatepass with [signin] (memory, and [state] redis); "
                    "bench_setup sessions URL app.test ISSUER 200 FILE  # section 1g")
    calls_before = redis_calls(redis_port)
    allow = "gatepass_requests_total{outcome=\"allow\",reason=\"ok\"}"
    redis_metrics = f"http://127.0.0.1:{gp['redis'][0]}/metrics"
    allows_before = metric(redis_metrics, allow)
    rows, ratios = [], []
    for conns in CONNS:
        med = round_robin(targets, conns)
        for kind in ["memory", "redis"]:
            b = med[f"bearer (HS256) cache hit, state {kind}"]
            for name in [f"bearer (HS256) cache hit, state {kind}", f"session cache hit, sessions in {kind}"]:
                m = med[name]
                ratio = m["rps"] / b["rps"]
                if name.startswith("session"):
                    ratios.append((kind, conns, ratio))
                rows.append([conns, name, f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{ratio:.2f}",
                             f"{m['cpu_us']:.1f}", m["errors"]])
    after = redis_calls(redis_port)
    delta = {k: v - calls_before.get(k, 0) for k, v in after.items() if v > calls_before.get(k, 0)}
    calls = sum(delta.values())
    allows = metric(redis_metrics, allow) - allows_before
    per = calls / allows if allows else float("nan")
    worst = min(ratios, key=lambda r: r[2])
    target("session cache hit ≥ 0.95× the bearer cache hit, memory and Redis (1g)",
           f"{worst[2]:.2f}× at the lowest ({worst[0]}, {worst[1]} conns)", worst[2] >= 0.95)
    # What Redis ran is the background (the up probe's PING, the revocation stream's blocking
    # read, the purge timer): nothing that scales with requests.
    target("Redis calls per session request at steady state = 0 (1g)",
           f"{per:.5f} ({calls} background commands for {allows:.0f} requests)", per < 0.001)
    for p in [gp["memory"][1], gp["redis"][1], op] + [q for q in PROCS if q.args[0] == "redis-server"]:
        retire(p)
    return ("## 1g. Sign-in sessions on the cache-hit path\n\n"
            "One gatepass with `[signin]` at the real OpenID Provider of `tests/oidc`: 1,000 rotating HS256 bearer "
            "tokens, or 200 rotating sign-in sessions (`Cookie: gatepass_session=...`, each signed in once with a "
            "browser's flow before measuring), sessions in the process or in a real `redis-server`. A session request "
            "is a cache lookup keyed by the cookie, then the bearer path (rules, revocation, limits). `× bearer` is the "
            "ratio to the bearer row of the same gatepass.\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× bearer", "CPU µs/req", "errors"], rows)
            + f"\n\nRedis commands during the Redis runs (`INFO commandstats`, bearer and session requests together): "
            f"**{calls}** for {allows:.0f} allowed requests ({per:.5f} per request): "
            + (", ".join(f"{k} {v}" for k, v in sorted(delta.items())) or "none")
            + ". These are the background's (the up probe, the revocation stream's blocking read, the purge "
            "timer); a session request makes none.")


def dpop_section():
    """DPoP-bound tokens (SPEC §10) on the cache-hit path: the token from the cache, the proof
    checked (parse, key, htm/htu/iat/ath, ES256 signature) and its jti stored once (in process,
    or SET NX in a real redis-server), next to the ES256 bearer cache hit and the ES256
    signature path. Proofs are good once, so every run reads its own file of fresh ones."""
    log("section 1h: DPoP")
    redis_port = free_port()
    start("redis-dpop", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                         "--appendonly", "no", "--dir", WORK], ready_port=redis_port)
    base = (WORK / "gp-es256.toml").read_text()
    # The issuer table is the file's last: these keys extend it; a window long enough for
    # proofs written before the section starts.
    dpop = '\ndpop = "allowed"\n\n[dpop]\niat_window = "1h"\n'
    state = f'\n[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
    (WORK / "gp-dpop-memory.toml").write_text(base + dpop)
    (WORK / "gp-dpop-redis.toml").write_text(base + dpop + state)
    # Enough fresh proofs for one run at well above the expected rate (about 25k req/s here).
    seconds = float(DURATION.rstrip("s"))
    per_run = int(os.environ.get("BENCH_DPOP_PROOFS", str(int(40_000 * seconds))))
    COMMANDS.append(f"bench_setup dpop DIR {per_run} FILE (a fresh file before every run); gp-es256.toml + "
                    "dpop = \"allowed\" (memory, and [state] redis)  # section 1h")
    targets, procs = [], []
    es = {"MODE": "validate", "TOKENS": str(WORK / "tokens-es256.txt")}
    for name, cfg, env in [("ES256 bearer cache hit", "gp-es256.toml", es),
                           ("ES256 signature path", "gp-es256-nocache.toml", es)]:
        port, p = start_gatepass(f"gp-1h-{cfg.split('.')[0]}", cfg)
        procs.append(p)
        targets.append({"name": name, "url": f"http://127.0.0.1:{port}/validate", "env": env, "pid": p.pid})

    def next_file(kind):
        # Written before each run (not measured): a proof is good once.
        def prepare(t, rep, conns):
            f = WORK / f"dpop-{kind}.txt"
            subprocess.run([REL / "bench_setup", "dpop", WORK, str(per_run), f], check=True)
            t["env"]["TOKENS"] = str(f)
        return prepare

    for kind in ["memory", "redis"]:
        port, p = start_gatepass(f"gp-dpop-{kind}", f"gp-dpop-{kind}.toml")
        procs.append(p)
        targets.append({"name": f"DPoP: cached token + proof, jti in {kind}", "url": f"http://127.0.0.1:{port}/validate",
                        "env": {"MODE": "dpop", "THREADS": "2", "TOKENS": ""}, "pid": p.pid,
                        "prepare": next_file(kind)})
    rows, costs = [], []
    for conns in CONNS:
        med = round_robin(targets, conns)
        sig = med["ES256 signature path"]
        for t in targets:
            m = med[t["name"]]
            rps_ratio, cpu_ratio = m["rps"] / sig["rps"], m["cpu_us"] / sig["cpu_us"]
            if t["name"].startswith("DPoP"):
                costs.append((t["name"], conns, rps_ratio, cpu_ratio))
            rows.append([conns, t["name"], f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{rps_ratio:.2f}",
                         f"{m['cpu_us']:.1f}", f"{cpu_ratio:.2f}", m["errors"]])
    worst_cpu = max(costs, key=lambda c: c[3])
    target("a DPoP request costs ≤ 1.1× an ES256 signature-path request: CPU µs/req (1h)",
           f"{min(c[3] for c in costs):.2f}–{worst_cpu[3]:.2f}× (highest: {worst_cpu[0]}, {worst_cpu[1]} conns)",
           worst_cpu[3] <= 1.1)
    # Throughput only for the in-process store: with Redis, redis-server runs on the same
    # two cores and each request waits for its round trip (reported in the table).
    memory = [c for c in costs if c[0].endswith("memory")]
    worst_rps = min(memory, key=lambda c: c[2])
    target("DPoP (jti in memory) req/s ≥ 1/1.1 of the ES256 signature path's (1h)",
           f"{worst_rps[2]:.2f}× at the lowest ({worst_rps[1]} conns)", worst_rps[2] >= 1 / 1.1)
    for p in procs + [q for q in PROCS if q.args[0] == "redis-server"]:
        retire(p)
    for kind in ["memory", "redis"]:
        (WORK / f"dpop-{kind}.txt").unlink(missing_ok=True)
    return ("## 1h. DPoP-bound tokens\n\n"
            "ES256 access tokens bound (`cnf.jkt`) to 100 client keys (ES256), each request with `Authorization: DPoP` "
            "and a fresh proof for the forwarded `GET http://app.test/api/v1/mcps` (every run its own "
            f"{per_run:,} proofs, written before it). The token comes from the cache; the proof is checked in full on every request "
            "(parse, public key, htm, htu, iat, ath, ES256 signature) and its `jti` stored once: in the process, or "
            "`SET NX PX` in a real `redis-server` (one round trip per request). `× sig` is the ratio to the ES256 "
            "signature path (every token's signature verified, no cache).\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× sig (req/s)", "CPU µs/req", "× sig (CPU)", "errors"], rows))


def validate_requests(port, tokens, n):
    """`n` forwardAuth requests (the wrk script's MODE=validate request) one after another on one
    keep-alive connection; returns the status counts."""
    codes = {}
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n):
            s.sendall((f"GET /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Method: GET\r\n"
                       f"X-Forwarded-Proto: http\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Port: 80\r\n"
                       f"X-Forwarded-Uri: /api/v1/mcps\r\nX-Forwarded-For: 10.0.0.1\r\n"
                       f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n\r\n").encode())
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            code = head.split(b" ", 2)[1].decode()
            codes[code] = codes.get(code, 0) + 1
    return codes


# The functions section 1f breaks a cache-hit request into: (label, function as callgrind names it).
PROFILE_FUNCTIONS = [
    ("request parse (hyper)", ":<hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::parse"),
    ("response head written (hyper)", ":hyper::proto::h1::conn::Conn<I,B,T>::write_head"),
    ("request dropped", ":core::ptr::drop_in_place<http::request::Parts>"),
    ("decision", ":gatepass::decision::<impl gatepass::state::State>::decide::{{closure}}"),
    ("  headers read in one pass", ":gatepass::decision::Scan::of"),
    ("  client IP (X-Forwarded-For)", ":gatepass_identity::request::client_ip"),
    ("  token found (bearer)", ":gatepass::verify::token::extract"),
    ("  rule match", ":gatepass::policy::rules::Rules::find"),
    ("  path ambiguity check", ":gatepass::policy::rules::Rules::ambiguous"),
    ("  token cache lookup", ":gatepass::verify::verifier::Verifier::lookup"),
    ("  rule's roles and permissions", ":gatepass::decision::<impl gatepass::state::State>::authorize"),
    ("allow response built", ":gatepass::decision::allow_response"),
    ("decision time histogram", " as metrics::handles::HistogramFn>::record"),
]


def instructions_section():
    """User-space instructions per cache-hit request under callgrind: unlike req/s, nearly the
    same count on every run, whatever else the machine is doing."""
    if not shutil.which("valgrind"):
        return "## 1f. Instructions per request (callgrind)\n\nvalgrind is missing: `make bench` installs it.\n"
    log("section 1f: callgrind")
    tokens = [t for t in (WORK / "tokens-hs256.txt").read_text().split() if t]
    n = 5000
    rows, counts, parts = [], {}, {}
    for name, args in [("limit (minimal hyper, 6 headers)", lambda port: [REL / "limit_server", f"127.0.0.1:{port}"]),
                       ("gatepass HS256 cache hit", lambda port: [REL / "gatepass", "serve", "--config", WORK / "gp-hs256.toml",
                                                                  "--listen", f"127.0.0.1:{port}"])]:
        port = free_port()
        out = WORK / f"callgrind.{port}"
        p = start(f"callgrind-{port}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + args(port), ready_port=port)
        validate_requests(port, tokens, 1000)  # every token verified once, every connection path warm
        subprocess.run(["callgrind_control", "--zero", str(p.pid)], check=True, capture_output=True)
        codes = validate_requests(port, tokens, n)
        subprocess.run(["callgrind_control", "--dump=measured", str(p.pid)], check=True, capture_output=True)
        retire(p)
        total = 0
        dump = WORK / f"callgrind.{port}.1"  # the --dump above; the file without a suffix is what came after
        lines = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)], capture_output=True, text=True).stdout.splitlines()
        for line in lines:
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
        # Inclusive instructions of the functions a request goes through (the first, costliest, line naming each).
        parts[name] = {}
        for label, fn in PROFILE_FUNCTIONS:
            hit = next((l for l in lines if fn in l), None)
            if hit:
                parts[name][label] = int(hit.split()[0].replace(",", "")) / n
        counts[name] = total / n
        rows.append([name, f"{total / n:,.0f}", f"{total / n / counts[next(iter(counts))]:.2f}", json.dumps(codes)])
    COMMANDS.append("valgrind --tool=callgrind SERVER; 1000 requests; callgrind_control --zero; 5000 requests; callgrind_control --dump  # section 1f")
    return ("## 1f. Instructions per request (callgrind)\n\nThe server under `valgrind --tool=callgrind`, one keep-alive "
            f"connection, the forwardAuth request of section 1 with 1,000 rotating HS256 tokens: {n} requests counted after "
            "1,000 of warm-up. User-space instructions only (the kernel's share is the same for both: one `recvfrom` and "
            "one `writev` per request); the count moves by about 0.5% from run to run (tokio's idle polling), so it shows changes of a few per cent "
            "that req/s cannot. It does not show what contention between the cores costs.\n\n"
            + table(["target", "instructions/request", "× limit", "statuses"], rows)
            + "\n\nWhere they go (inclusive instructions per request, from `callgrind_annotate --inclusive=yes`; "
            "indented rows are part of the decision; blank: inlined or not on that path):\n\n"
            + table(["function", *counts.keys()],
                    [[label.replace("  ", "&nbsp;&nbsp;", 1) if label.startswith("  ") else label,
                      *(f"{parts[t][label]:,.0f}" if label in parts[t] else "" for t in counts)]
                     for label, _ in PROFILE_FUNCTIONS]))


def assertion_section():
    """The shipped configurations sign an identity assertion on every allow; safe methods reuse
    a recent one for the same token and host (SPEC 3.6). Cache hits with it off and on."""
    log("section 1e: assertion")
    subprocess.run([REL / "gatepass", "keygen", "--out", WORK / "assertion.pem"], check=True, capture_output=True)
    base = (WORK / "gp-hs256.toml").read_text()
    (WORK / "gp-assert-off.toml").write_text(base)
    (WORK / "gp-assert-on.toml").write_text(base + f'\n[assertion]\nkey_file = "{WORK / "assertion.pem"}"\nttl = "60s"\n')
    gp = {}
    for kind in ["off", "on"]:
        gp[kind] = start_gatepass(f"gp-assert-{kind}", f"gp-assert-{kind}.toml")
    COMMANDS.append("gp-hs256.toml with and without [assertion] (gatepass keygen)  # section 1e")
    rows = cache_hit_rows(gp, lambda kind: f"cache hit, [assertion] {kind}")
    on = [float(r[5]) for r in rows if r[1].endswith(" on")]
    target("[assertion] on ≥ 0.85× off, 16 and 64 conns (1e)", ", ".join(f"{x:.2f}×" for x in on), min(on) >= 0.85)
    return ("## 1e. The shipped hot path: `[assertion]` on\n\n"
            "Every shipped config signs an Ed25519 identity assertion on each allow. Safe methods (GET, HEAD, OPTIONS, "
            "upgrades) reuse the assertion issued for the same token and `X-Forwarded-Host` while 3/4 of its lifetime "
            "is left, so a repeated GET signs nothing; every other method gets a fresh `jti`. Target: on ≥ 0.85× off.\n\n"
            + table(["conns", "target", "req/s", "p50 ms", "p99 ms", "× off", "CPU µs/req", "errors"], rows))


def traefik_section(limit, limit_port, traefik):
    """forwardAuth through real Traefik: to the limit server, to gatepass over http/1.1 and over h2."""
    log("section 3: through Traefik")
    gp_plain_port, gp_plain = start_gatepass("gp-plain", "gp-hs256.toml")
    gp_tls_port, web_port = free_port(), free_port()
    gp_tls = start("gp-tls", [REL / "gatepass", "serve", "--config", WORK / "gp-tls.toml", "--listen", f"127.0.0.1:{gp_tls_port}"], ready_port=gp_tls_port)
    sha = base64.b64encode(hashlib.sha1(b"bench-password").digest()).decode()
    dyn = WORK / "dynamic"
    dyn.mkdir()
    headers = "[X-User-Id, X-User-Username, X-User-Role, X-User-Permissions, X-User-Expires, X-User-Assertion]"
    # The shipped config's forwardAuth (traefik/dynamic.yml): only what gatepass reads goes out.
    request_headers = ("[Authorization, Cookie, Origin, Sec-WebSocket-Key, Sec-WebSocket-Version, Sec-WebSocket-Protocol, "
                       "Access-Control-Request-Method, X-User-Id, X-User-Username, X-User-Role, X-User-Permissions, "
                       "X-User-Expires, X-User-Assertion, traceparent, tracestate]")
    (dyn / "bench.yml").write_text(f"""http:
  middlewares:
    basic:
      basicAuth:
        users: ["bench:{{SHA}}{sha}"]
    fa-limit:
      forwardAuth: {{address: "http://127.0.0.1:{limit_port}/validate", trustForwardHeader: false, authResponseHeaders: {headers}}}
    fa-gp:
      forwardAuth: {{address: "http://127.0.0.1:{gp_plain_port}/validate", trustForwardHeader: false, authResponseHeaders: {headers}}}
    fa-gp-h2:
      forwardAuth:
        address: "https://127.0.0.1:{gp_tls_port}/validate"
        trustForwardHeader: false
        authResponseHeaders: {headers}
        tls: {{ca: "{WORK / 'ca.pem'}"}}
    fa-gp-h2-shipped:
      forwardAuth:
        address: "https://127.0.0.1:{gp_tls_port}/validate"
        trustForwardHeader: false
        authRequestHeaders: {request_headers}
        authResponseHeadersRegex: "^X-User-"
        headerField: X-User-Id
        tls: {{ca: "{WORK / 'ca.pem'}"}}
  routers:
    backend: {{entryPoints: [web], rule: "PathPrefix(`/backend`)", service: limit}}
    basic: {{entryPoints: [web], rule: "PathPrefix(`/basic`)", service: limit, middlewares: [basic]}}
    fa-limit: {{entryPoints: [web], rule: "PathPrefix(`/fa-limit`)", service: limit, middlewares: [fa-limit]}}
    fa-gp: {{entryPoints: [web], rule: "PathPrefix(`/fa-gp-http1`)", service: limit, middlewares: [fa-gp]}}
    fa-gp-h2: {{entryPoints: [web], rule: "PathPrefix(`/fa-gp-h2`)", service: limit, middlewares: [fa-gp-h2]}}
    fa-gp-h2-shipped: {{entryPoints: [web], rule: "PathPrefix(`/fa-shipped-h2`)", service: limit, middlewares: [fa-gp-h2-shipped]}}
  services:
    limit:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:{limit_port}"}}]
""")
    (WORK / "traefik.yml").write_text(f"""global: {{checkNewVersion: false, sendAnonymousUsage: false}}
entryPoints:
  web:
    address: "127.0.0.1:{web_port}"
providers:
  file: {{directory: "{dyn}", watch: false}}
log: {{level: ERROR}}
""")
    tr = start("traefik", [traefik, f"--configFile={WORK / 'traefik.yml'}"], ready_url=f"http://127.0.0.1:{web_port}/backend")
    web = f"http://127.0.0.1:{web_port}"
    hs_tokens = str(WORK / "tokens-hs256.txt")
    basic = base64.b64encode(b"bench:bench-password").decode()
    targets = [
        {"name": "backend alone", "url": f"{web}/backend", "env": {"MODE": "none", "TOKENS": ""}},
        {"name": "basicAuth {SHA}", "url": f"{web}/basic", "env": {"MODE": "basic", "TOKENS": "", "BASIC": basic}},
        {"name": "forwardAuth → limit server (http/1.1)", "url": f"{web}/fa-limit", "env": {"MODE": "none", "TOKENS": ""}},
        {"name": "forwardAuth → gatepass (http/1.1)", "url": f"{web}/fa-gp-http1", "env": {"MODE": "bearer", "TOKENS": hs_tokens}},
        {"name": "forwardAuth → gatepass (https, h2)", "url": f"{web}/fa-gp-h2", "env": {"MODE": "bearer", "TOKENS": hs_tokens}},
        {"name": "forwardAuth → gatepass (https, h2, shipped: authRequestHeaders + regex)", "url": f"{web}/fa-shipped-h2",
         "env": {"MODE": "bearer", "TOKENS": hs_tokens}},
    ]
    for t in targets:
        t["pids"] = {"traefik": tr.pid, "limit": limit.pid}
        if "gatepass" in t["name"]:
            t["pids"]["gatepass"] = (gp_tls if "h2" in t["name"] else gp_plain).pid
    COMMANDS.append(f"wrk -t2 -c{{16,64}} -d{DURATION} --latency -s bench/wrk/rotate.lua http://127.0.0.1:PORT/ROUTE  # Traefik {ROOT.joinpath('.venv/bin/traefik').relative_to(ROOT)}")
    ca = str(WORK / "ca.pem")
    conn_series = {"gp-plain": ("gatepass_connections_total{transport=\"plain\"}", f"http://127.0.0.1:{gp_plain_port}/metrics", None),
                   "gp-tls": ("gatepass_connections_total{transport=\"h2\"}", f"https://127.0.0.1:{gp_tls_port}/metrics", ca)}
    allow = "gatepass_requests_total{outcome=\"allow\",reason=\"ok\"}"
    before = {k: (metric(u, s, c), metric(u, allow, c)) for k, (s, u, c) in conn_series.items()}
    rows, bounds = [], []
    for conns in CONNS:
        med = round_robin(targets, conns)
        base = med["backend alone"]["rps"]
        fa_limit = med["forwardAuth → limit server (http/1.1)"]["rps"]
        for t in targets:
            m = med[t["name"]]
            gp_cpu = m.get("cpu_us:gatepass")
            rows.append([conns, t["name"], f"{m['rps']:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{m['rps'] / base:.2f}",
                         f"{m['rps'] / fa_limit:.2f}" if "gatepass" in t["name"] else "",
                         f"{m['cpu_us:traefik']:.0f}", f"{gp_cpu:.1f}" if gp_cpu is not None else "", f"{m['cpu_us:limit']:.1f}",
                         m["errors"]])
        # The shipped h2 row with gatepass free: the same CPU-bound cores shared by Traefik and
        # the limit alone (wrk's share is left out, so this overstates the gain a little).
        shipped = med[targets[-1]["name"]]
        others = shipped["cpu_us:traefik"] + shipped["cpu_us:limit"]
        gatepass_cpu = shipped["cpu_us:gatepass"]
        ratio = shipped["rps"] / fa_limit
        bounds.append({"conns": conns, "ratio": ratio, "free": ratio * (others + gatepass_cpu) / others,
                       "share": gatepass_cpu / (others + gatepass_cpu)})
    after = {k: (metric(u, s, c), metric(u, allow, c)) for k, (s, u, c) in conn_series.items()}
    per_k = {}
    for k in conn_series:
        conns_opened = after[k][0] - before[k][0]
        reqs = after[k][1] - before[k][1]
        per_k[k] = (conns_opened, reqs, conns_opened / reqs * 1000 if reqs else float("nan"))
    h2_total = after["gp-tls"][0]
    target("through Traefik, shipped h2 forwardAuth ≥ 1.3× the forwardAuth-limit row, 16 and 64 conns (3)",
           ", ".join(f"{b['ratio']:.2f}× at {b['conns']}" for b in bounds), all(b["ratio"] >= 1.3 for b in bounds),
           "Traefik's share of the CPU: with gatepass free, at most " + ", ".join(f"{b['free']:.2f}× at {b['conns']}" for b in bounds))
    section = ("## 3. Through real Traefik 3.7.15\n\nAll routes end at the limit server as backend. Ratios are to *backend alone*; "
                    "the last column compares gatepass rows with the forwardAuth-limit row.\n\n"
                    + table(["conns", "route", "req/s", "p50 ms", "p99 ms", "× backend", "× forwardAuth limit",
                             "Traefik CPU µs/req", "gatepass CPU µs/req", "limit CPU µs/req", "errors"], rows)
                    + "\n\nTarget for the h2 rows: ≥ 1.3× the forwardAuth-limit row. Traefik's own work dominates every "
                    "forwardAuth row. Were gatepass free (its CPU given to Traefik and the limit, the cores staying saturated), "
                    "the shipped h2 row would reach at most: "
                    + "; ".join(f"{b['conns']} conns {b['ratio']:.2f}× → **{b['free']:.2f}×** (gatepass {b['share']:.0%} of the CPU measured)"
                                for b in bounds) + "."
                    + f"\n\nConnections Traefik opened to gatepass during these runs: http/1.1 **{per_k['gp-plain'][0]:.0f}** for "
                    f"{per_k['gp-plain'][1]:.0f} auth calls (**{per_k['gp-plain'][2]:.1f} per 1,000**); https with ALPN-negotiated h2 "
                    f"(`gatepass_connections_total{{transport=\"h2\"}}` = {h2_total:.0f} in all) **{per_k['gp-tls'][0]:.0f}** for "
                    f"{per_k['gp-tls'][1]:.0f} auth calls (**{per_k['gp-tls'][2]:.2f} per 1,000**).")
    stop_all()
    PROCS.clear()
    return section



def fanout_section():
    """10,000 WebSocket clients on one mcp-status: delivery latency, RSS and CPU per delivery."""
    log(f"section 5: fan-out to {FANOUT_CLIENTS} WebSocket clients")
    demo_port, ms_port = free_port(), free_port()
    start("demo", [REL / "mcp-status", "demo-mcp", "--listen", f"127.0.0.1:{demo_port}"], ready_port=demo_port)
    (WORK / "mcp-status.toml").write_text(f"""[limits]
max_connections = {FANOUT_CLIENTS + 100}
max_connections_per_user = 5
[[mcps]]
name = "bench_mcp"
health_url = "http://127.0.0.1:{demo_port}/health"
interval = "1h"
""")
    msp = start("mcp-status", [REL / "mcp-status", "serve", "--config", WORK / "mcp-status.toml", "--listen", f"127.0.0.1:{ms_port}"],
                ready_url=f"http://127.0.0.1:{ms_port}/healthz")
    out = subprocess.run([str(REL / "ws_fanout"), "--addr", f"127.0.0.1:{ms_port}", "--mcp", "bench_mcp", "--pid", str(msp.pid),
                          "--clients", str(FANOUT_CLIENTS), "--rounds", "3"],
                         capture_output=True, text=True, timeout=600, preexec_fn=raise_nofile)
    COMMANDS.append(f"target/release/ws_fanout --addr 127.0.0.1:PORT --mcp bench_mcp --pid PID --clients {FANOUT_CLIENTS} --rounds 3")
    try:
        f = json.loads(out.stdout.strip().splitlines()[-1])
        cpu = {k: f[f"{k}_us_per_delivery"] for k in ("server_user", "server_sys", "client_user", "client_sys")}
        # With user space free, the kernel's share alone, spread over every core, still takes this long.
        floor_ms = (cpu["server_sys"] + cpu["client_sys"]) * f["connected"] / os.cpu_count() / 1000
        all_ms = sum(cpu.values()) * f["connected"] / os.cpu_count() / 1000
        everyone = all(d == f["connected"] for d in f["delivered_per_round"]) and f["connected"] == f["clients"]
        delivered = ", ".join(str(d) for d in f["delivered_per_round"])
        target(f"fan-out to {FANOUT_CLIENTS:,}: every client gets every broadcast (5)",
               f"{f['connected']} connected, delivered {delivered}", everyone)
        target("fan-out p99 < 100 ms (5)", f"{f['p99_ms']:.0f} ms", f["p99_ms"] < 100,
               f"kernel floor for one broadcast: {floor_ms:.0f} ms (5)")
        target("fan-out RSS per connection < 16 KB (5)", f"{f['rss_per_connection_bytes'] / 1024:.1f} KB",
               f["rss_per_connection_bytes"] < 16 * 1024)
        section = ("## 5. mcp-status fan-out\n\n"
            f"{FANOUT_CLIENTS:,} clients on one mcp-status, the load client on the same {os.cpu_count()} cores; each round is one status change "
            "(admin API), timed from the request to each client's receipt. CPU per delivered message is read from "
            "`/proc/PID/stat` (user / system) over the rounds, for the server and for the load client.\n\n" + table(
            ["clients", "connected", "delivered per round", "p50 ms", "p99 ms", "max ms", "RSS per connection", "targets"],
            [[f["clients"], f["connected"], delivered, f"{f['p50_ms']:.1f}",
              f"{f['p99_ms']:.1f}", f"{f['max_ms']:.1f}", f"{f['rss_per_connection_bytes'] / 1024:.1f} KB", "p99 < 100 ms, < 16 KB"]])
            + "\n\n" + table(
            ["CPU µs per delivery", "user", "system"],
            [["mcp-status", f"{cpu['server_user']:.1f}", f"{cpu['server_sys']:.1f}"],
             ["load client", f"{cpu['client_user']:.1f}", f"{cpu['client_sys']:.1f}"]])
            + f"\n\nOne broadcast costs {all_ms * os.cpu_count():.0f} ms of CPU in all, {all_ms:.0f} ms on {os.cpu_count()} cores "
            f"kept busy; the kernel's share alone (each message is one `sendto` by mcp-status, which on loopback also "
            f"runs the receiving TCP stack, and one read by the client) is **{floor_ms:.0f} ms** spread over "
            f"{os.cpu_count()} cores: the floor for the last delivery on this machine even if user space cost nothing"
            + (", so with one TCP message per client p99 < 100 ms is out of reach here." if floor_ms >= 100 else
               ", below the 100 ms target: the rest of p99 is user space and scheduling."))
    except (IndexError, ValueError, KeyError):
        section = "## 5. mcp-status fan-out\n\nThe load client failed:\n\n```\n" + out.stderr[-2000:] + "\n```"
    stop_all()
    return section


def main():
    for tool in ["wrk"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run `make bench` (it installs it)")
    traefik = ROOT / ".venv" / "bin" / "traefik"
    for b in [REL / "gatepass", REL / "mcp-status", REL / "limit_server", REL / "bench_setup", REL / "ws_fanout", traefik]:
        if not b.exists():
            sys.exit(f"{b} is missing: run `make bench`")
    started = time.time()
    subprocess.run([REL / "bench_setup", WORK], check=True)
    COMMANDS.append(f"{REL.relative_to(ROOT)}/bench_setup DIR  # keys, configs, 1000-token files per algorithm, 100k tokens")
    sections = []

    # 1. /validate directly, against the limit server.
    log("section 1: /validate direct")
    limit_port = free_port()
    limit = start("limit", [REL / "limit_server", f"127.0.0.1:{limit_port}"], ready_port=limit_port)
    # The limit gets the very request gatepass gets (parsing it is part of the job); the bare
    # row (a GET with no headers, the round-1 baseline) shows what the request itself costs.
    targets = [{"name": "limit (minimal hyper, 6 headers)", "url": f"http://127.0.0.1:{limit_port}/validate",
                "env": {"MODE": "validate", "TOKENS": str(WORK / "tokens-hs256.txt")}, "pid": limit.pid},
               {"name": "limit, bare GET (no request headers)", "url": f"http://127.0.0.1:{limit_port}/validate",
                "env": {"MODE": "none", "TOKENS": ""}, "pid": limit.pid}]
    for alg in ["hs256", "rs256", "es256", "eddsa"]:
        for kind, cfg in [("cache hit", f"gp-{alg}.toml"), ("signature path", f"gp-{alg}-nocache.toml")]:
            port, p = start_gatepass(f"gp-{alg}-{kind.split()[0]}", cfg)
            targets.append({"name": f"gatepass {alg.upper()} {kind}", "url": f"http://127.0.0.1:{port}/validate",
                            "env": {"MODE": "validate", "TOKENS": str(WORK / f"tokens-{alg}.txt")}, "pid": p.pid})
    COMMANDS.append(f"wrk -t2 -c{{16,64}} -d{DURATION} --latency -s bench/wrk/rotate.lua http://127.0.0.1:PORT/validate  # MODE=validate TOKENS=tokens-ALG.txt")
    rows, hits = [], []
    reps1 = max(REPS, 5)
    for conns in CONNS:
        med = round_robin(targets, conns, reps1)
        lim = med[targets[0]["name"]]
        for t in targets:
            m = med[t["name"]]
            ratio, cpu_ratio = round(m["rps"] / lim["rps"], 2), round(m["cpu_us"] / lim["cpu_us"], 2)
            rows.append([conns, t["name"], f"{m['rps']:.0f}", f"±{m['spread'] * 50:.0f}%", f"{m['p50']:.2f}", f"{m['p99']:.2f}",
                         f"{ratio:.2f}", f"{m['cpu_us']:.1f}", f"{cpu_ratio:.2f}", m["errors"]])
            if "cache hit" in t["name"]:
                hits.append((t["name"], conns, ratio, cpu_ratio))
    worst = min(hits, key=lambda h: h[2])
    costly = max(hits, key=lambda h: h[3])
    target("cache hit ≥ 0.90× the limit, every algorithm, 16 and 64 conns (1)",
           f"{min(h[2] for h in hits):.2f}–{max(h[2] for h in hits):.2f}× (lowest: {worst[0]}, {worst[1]} conns)",
           worst[2] >= 0.90, "run-to-run spread (the spread column) is as large as the gap; instructions in 1f")
    target("cache hit CPU ≤ 1.2× the limit's (1)",
           f"{min(h[3] for h in hits):.2f}–{costly[3]:.2f}× (highest: {costly[0]}, {costly[1]} conns)",
           costly[3] <= 1.2, "where the extra instructions go: 1f")
    sections.append("## 1. `/validate` called directly\n\nwrk (2 threads) on the same 2 cores as the server; 1,000 rotating "
                    "valid tokens per algorithm. *Cache hit*: the normal config. *Signature path*: `[cache] ttl = \"0ms\"`, "
                    "so every request verifies the signature. CPU µs/req is the server process's user+system time per request. "
                    f"This section takes the median of {reps1} runs; *spread* is half the range of req/s over them, as a "
                    "share of the median. The limit gets the same request as gatepass (the `X-Forwarded-*` headers and a "
                    "rotating bearer token); the bare row is the limit given a GET without headers, the baseline before "
                    "2026-12-01.\n\n"
                    + table(["conns", "target", "req/s", "spread", "p50 ms", "p99 ms", "× limit", "CPU µs/req", "CPU × limit", "errors"], rows))
    for p in PROCS[1:]:
        stop(p)
    del PROCS[1:]

    # 1b. Shared state: the cache-hit path with a per_user limit, in process and on Redis.
    sections.append(shared_state_section(limit_port, traefik))
    sections.append(revocation_section())
    sections.append(introspection_section())
    sections.append(assertion_section())
    sections.append(instructions_section())
    sections.append(session_section(traefik))
    sections.append(dpop_section())

    # 2. In-process verify cost (criterion).
    log("section 2: criterion")
    crit = subprocess.run(["cargo", "bench", "-q", "-p", "gatepass-bench", "--bench", "verify", "--", "--noplot"],
                          cwd=ROOT, capture_output=True, text=True)
    COMMANDS.append("cargo bench -p gatepass-bench --bench verify")
    times = {}
    for m in re.finditer(r"^(\w+)/(.+?)\s*\n?\s*time:\s+\[\S+ \S+ ([\d.]+) (\S+)", crit.stdout, re.M):
        value = float(m.group(3)) * {"ns": 0.001, "µs": 1, "us": 1, "ms": 1000}[m.group(4)]
        times[(m.group(1), m.group(2).strip())] = value
    rows = []
    for alg in ["HS256", "RS256", "ES256", "EdDSA"]:
        raw = times.get((alg, "jsonwebtoken::decode"))
        gp = times.get((alg, "gatepass verify (signature path)"))
        hit = times.get((alg, "gatepass verify (cache hit)"))
        if raw and gp:
            rows.append([alg, f"{raw:.2f}", f"{gp:.2f}", f"{(gp / raw - 1) * 100:+.0f}%", f"{hit:.3f}" if hit else "?"])
            if alg == "HS256":
                target("HS256 signature path ≤ +15% over raw `jsonwebtoken::decode` (2)", f"{(gp / raw - 1) * 100:+.0f}%",
                       gp / raw <= 1.15)
    sections.append("## 2. In-process verify cost (criterion, median)\n\nThe signature path includes issuer selection, header "
                    "checks, claims → identity and header encoding; the raw column is `jsonwebtoken::decode` of the same token "
                    "into a JSON map with an equivalent `Validation`.\n\n"
                    + table(["alg", "jsonwebtoken::decode µs", "gatepass signature path µs", "overhead", "gatepass cache hit µs"], rows))

    sections.append(traefik_section(limit, limit_port, traefik))

    # 4. Memory.
    log("section 4: memory")
    port, gp = start_gatepass("gp-mem", "gp-hs256.toml")
    time.sleep(1)
    idle = rss_kb(gp.pid)
    miss = "gatepass_token_cache_total{result=\"miss\"}"
    deadline = time.time() + 180
    while metric(f"http://127.0.0.1:{port}/metrics", miss) < 100_000 and time.time() < deadline:
        wrk(f"http://127.0.0.1:{port}/validate", 32, {"MODE": "validate", "TOKENS": str(WORK / "tokens-100k.txt")}, "5s")
    misses = metric(f"http://127.0.0.1:{port}/metrics", miss)
    entries = metric(f"http://127.0.0.1:{port}/metrics", "gatepass_token_cache_entries")
    full = rss_kb(gp.pid)
    target("gatepass RSS idle < 20 MB, after 100k tokens < 150 MB (4)", f"{idle / 1024:.1f} MB, {full / 1024:.1f} MB",
           idle < 20 * 1024 and full < 150 * 1024)
    sections.append("## 4. Memory (gatepass RSS)\n\n" + table(
        ["state", "RSS MB", "target"],
        [["idle, after start", f"{idle / 1024:.1f}", "< 20 MB"],
         [f"after {misses:.0f} distinct tokens verified ({entries:.0f} cached)", f"{full / 1024:.1f}", "< 150 MB"]]))
    stop_all()
    PROCS.clear()

    sections.append(fanout_section())

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    header = (f"# Benchmarks\n\nGenerated by `make bench` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} "
              f"in {time.time() - started:.0f} s.\n\nMachine: {os.cpu_count()} cores ({cpu}), "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, Linux {platform.release()}. "
              f"wrk and every server share these cores, so absolute numbers are low and noisy: read the ratios. "
              f"Each row is the median of {REPS} runs of {DURATION}, targets alternated round robin.\n\nCommands:\n\n```\n"
              + "\n".join(COMMANDS) + "\n```\n\n## Targets\n\nEach measured in this run; the number in brackets is the "
              "section with the figures (and, for a target not met, the profile that says why).\n\n"
              + table(["target", "measured", "", "why / where"], TARGETS) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(header + "\n" + "\n\n".join(sections) + "\n")
    print((ROOT / "BENCHMARKS.md").read_text())


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
        shutil.rmtree(WORK, ignore_errors=True)
