#!/usr/bin/env python3
"""Lints deploy/ (it can't run here: no Docker engine, no cluster) against traefik/ and the
products themselves: YAML parses; compose services, labels, router and middleware names agree
with traefik/dynamic.yml; Kubernetes CRDs and probes are wired; both deployments run two
replicas of gatepass and mcp-status sharing one Redis of their own ([state]); every shipped
gatepass and mcp-status TOML config passes the binary's own `check-config`; every key they use
is in README.md's configuration tables. Needs the debug binaries (`cargo build` first)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve() / "debug"
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"not ok - {name} {detail}")


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# 1. Every YAML file parses (templates have quoted placeholders, so they parse too).
yamls = sorted(list((ROOT / "deploy").rglob("*.y*ml")) + list((ROOT / "traefik").glob("*.yml")))
for p in yamls:
    try:
        load_all(p)
        check(f"{p.relative_to(ROOT)} parses", True)
    except yaml.YAMLError as e:
        check(f"{p.relative_to(ROOT)} parses", False, str(e).splitlines()[0])

dynamic = load_all(ROOT / "traefik" / "dynamic.yml")[0]["http"]
signin_routers = load_all(ROOT / "traefik" / "signin.yml")[0]["http"]["routers"]
static = load_all(ROOT / "traefik" / "traefik.yml")[0]
fa = dynamic["middlewares"]["gatepass"]["forwardAuth"]
IDENTITY = {"X-User-Id", "X-User-Username", "X-User-Role", "X-User-Permissions", "X-User-Expires", "X-User-Assertion"}
REQUEST_HEADERS = fa.get("authRequestHeaders", [])
REGEX = fa.get("authResponseHeadersRegex", "")
# The deployments sign people in (SPEC §9): dynamic.yml's routers with signin.yml's, whose
# signed-in dashboard takes the place of the open one.
DEPLOYED = {n: r for n, r in dynamic["routers"].items() if n != "dashboard"} | signin_routers
ROUTERS = set(DEPLOYED)
PROTECTED = {n for n, r in DEPLOYED.items() if "gatepass" in r.get("middlewares", [])}
SIGNIN_HEADERS = {"cookie", "accept", "sec-fetch-mode", "sec-fetch-site", "x-requested-with", "origin"}
# SPEC §10: the DPoP proof and the MCP operation.
SENDER_HEADERS = {"dpop", "mcp-protocol-version", "mcp-method", "mcp-name"}

check("traefik/: authResponseHeadersRegex covers every identity header",
      bool(REGEX) and all(re.match(REGEX, h) for h in IDENTITY) and "authResponseHeaders" not in fa, REGEX)
check("traefik/: authRequestHeaders are what gatepass reads",
      {h.lower() for h in REQUEST_HEADERS} == {"authorization", "sec-websocket-key",
       "sec-websocket-version", "sec-websocket-protocol", "access-control-request-method", "traceparent",
       "tracestate"} | SIGNIN_HEADERS | SENDER_HEADERS | {h.lower() for h in IDENTITY}, REQUEST_HEADERS)
# Sign-in: <prefix>/* straight to gatepass (no forwardAuth) above every app router.
prefix_router = signin_routers.get("gatepass-signin", {})
check("traefik/signin.yml: the prefix router goes straight to gatepass",
      prefix_router.get("rule") == "PathPrefix(`/_gatepass`)" and prefix_router.get("service") == "gatepass"
      and not prefix_router.get("middlewares"), prefix_router)
check("traefik/signin.yml: the prefix router is above every other router",
      all(prefix_router.get("priority", 0) > r.get("priority", len(r["rule"])) for n, r in DEPLOYED.items() if n != "gatepass-signin"))
check("traefik/signin.yml: the dashboard needs a signed-in person",
      "gatepass" in signin_routers.get("dashboard-signed-in", {}).get("middlewares", [])
      and signin_routers["dashboard-signed-in"]["rule"] == dynamic["routers"]["dashboard"]["rule"])
check("traefik/: headerField X-User-Id", fa.get("headerField") == "X-User-Id")
check("traefik/: trustForwardHeader is false", fa.get("trustForwardHeader") is False)
check("traefik/: maxResponseBodySize is set", isinstance(fa.get("maxResponseBodySize"), int))
check("traefik/: forwardAuth over https to /validate", fa["address"].startswith("https://") and fa["address"].endswith("/validate"))
check("traefik/: aliasHeadersStrategy delete", static["entryPoints"]["web"]["http"]["aliasHeadersStrategy"] == "delete")
check("traefik/: access log drops query parameters", static["accessLog"]["fields"]["queryParameters"]["defaultMode"] == "drop")

# 2. docker-compose agrees with traefik/.
compose = load_all(ROOT / "deploy" / "docker-compose.yml")[0]
services = compose["services"]
# mcp-server: the demo MCP server behind gatepass at /mcp (SPEC §8).
check("compose: services", set(services) == {"traefik", "redis", "gatepass", "mcp-status", "mcp-server"}, list(services))


def is_redis(image):
    return str(image).split(":")[0].split("/")[-1] in ("redis", "valkey")


def no_persistence(argv):
    """redis-server arguments that turn snapshots off (`--save ''`)."""
    argv = argv.split() if isinstance(argv, str) else list(argv or [])
    return any(a == "--save" and i + 1 < len(argv) and argv[i + 1] in ("", "''", '""') for i, a in enumerate(argv))


redis_svc = services.get("redis", {})
check("compose: redis is a Redis or Valkey image", is_redis(redis_svc.get("image", "")), redis_svc.get("image"))
check("compose: redis runs with --save ''", no_persistence(redis_svc.get("command")), redis_svc.get("command"))
for name in ("gatepass", "mcp-status"):
    replicas = services.get(name, {}).get("deploy", {}).get("replicas")
    check(f"compose: {name} runs 2 replicas", replicas == 2, replicas)
    check(f"compose: {name} starts after redis", "redis" in services.get(name, {}).get("depends_on", []))
# The config each product's container mounts, by the path it reads it from.
COMPOSE_CONFIGS = {}
for name in ("gatepass", "mcp-status"):
    for volume in services.get(name, {}).get("volumes", []):
        src, _, dest = volume.partition(":")
        if dest.split(":")[0] == f"/etc/{name}/{name}.toml":
            COMPOSE_CONFIGS[name] = (ROOT / "deploy" / src).resolve()
check("compose: both products mount a shipped config", set(COMPOSE_CONFIGS) == {"gatepass", "mcp-status"}
      and all(p.is_file() for p in COMPOSE_CONFIGS.values()), COMPOSE_CONFIGS)
labels = {}
for svc in compose["services"].values():
    for label in svc.get("labels", []):
        k, _, v = label.partition("=")
        labels[k] = v
cmd = " ".join(compose["services"]["traefik"]["command"])
check("compose: aliasHeadersStrategy delete", "--entryPoints.web.http.aliasHeadersStrategy=delete" in cmd)
check("compose: access log drops query parameters", "--accessLog.fields.queryParameters.defaultMode=drop" in cmd)
mw = "traefik.http.middlewares.gatepass.forwardAuth."
check("compose: middleware named gatepass", any(k.startswith(mw) for k in labels))
check("compose: authRequestHeaders match traefik/", labels.get(mw + "authRequestHeaders", "").split(",") == REQUEST_HEADERS)
check("compose: authResponseHeadersRegex matches traefik/", labels.get(mw + "authResponseHeadersRegex") == REGEX)
check("compose: headerField matches traefik/", labels.get(mw + "headerField") == fa.get("headerField"))
check("compose: trustForwardHeader false", labels.get(mw + "trustForwardHeader") == "false")
check("compose: maxResponseBodySize set", labels.get(mw + "maxResponseBodySize", "").isdigit())
check("compose: forwardAuth to /validate over https", labels.get(mw + "address", "").startswith("https://") and labels.get(mw + "address", "").endswith("/validate"))
routers = {k.split(".")[3] for k in labels if k.startswith("traefik.http.routers.")}
check("compose: router names match traefik/", routers == ROUTERS, f"{sorted(routers)} vs {sorted(ROUTERS)}")
for name in ROUTERS:
    want = DEPLOYED[name]["rule"]
    check(f"compose: router {name} rule matches", labels.get(f"traefik.http.routers.{name}.rule") == want)
    if "priority" in DEPLOYED[name]:
        check(f"compose: router {name} priority matches",
              labels.get(f"traefik.http.routers.{name}.priority") == str(DEPLOYED[name]["priority"]))
    protected = "gatepass@docker" in labels.get(f"traefik.http.routers.{name}.middlewares", "")
    check(f"compose: router {name} protection matches", protected == (name in PROTECTED))

# 3. Kubernetes: Traefik CRDs and probes.
docs = [d for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) for d in load_all(p)]
middlewares = [d for d in docs if d["kind"] == "Middleware"]
names = sorted(m["metadata"]["name"] for m in middlewares)
check("k8s: Middlewares gatepass and retry-unreached", names == ["gatepass", "retry-unreached"], names)
kfa = next((m["spec"]["forwardAuth"] for m in middlewares if m["metadata"]["name"] == "gatepass"), {})
# A replica that dies: the retry of traefik/dynamic.yml, and readiness every second.
retry = dynamic["middlewares"]["retry-unreached"]["retry"]
kretry = next((m["spec"].get("retry") for m in middlewares if m["metadata"]["name"] == "retry-unreached"), None)
check("k8s: retry-unreached matches traefik/", kretry == retry, kretry)
for svc in ("gatepass", "mcp-status"):
    lb = dynamic["services"][svc]["loadBalancer"]
    # Active only: Traefik 3.7 never re-adds a server its passive check took out (README).
    check(f"traefik/: {svc} pool has an active health check on /readyz and no passive one",
          lb.get("healthCheck", {}).get("path") == "/readyz" and "passiveHealthCheck" not in lb, lb)
    prefix = f"traefik.http.services.{svc}.loadBalancer."
    check(f"compose: {svc} health checks match traefik/",
          labels.get(prefix + "healthCheck.path") == lb["healthCheck"]["path"]
          and labels.get(prefix + "healthCheck.interval") == lb["healthCheck"]["interval"]
          and not any(k.startswith(prefix + "passiveHealthCheck") for k in labels))
check("compose: retry-unreached matches traefik/",
      labels.get("traefik.http.middlewares.retry-unreached.retry.attempts") == str(retry["attempts"]))
check("k8s: authRequestHeaders match traefik/", kfa.get("authRequestHeaders") == REQUEST_HEADERS)
check("k8s: authResponseHeadersRegex matches traefik/", kfa.get("authResponseHeadersRegex") == REGEX)
check("k8s: headerField matches traefik/", kfa.get("headerField") == fa.get("headerField"))
check("k8s: trustForwardHeader false", kfa.get("trustForwardHeader") is False)
check("k8s: forwardAuth to /validate over https", str(kfa.get("address", "")).startswith("https://") and str(kfa.get("address", "")).endswith("/validate"))
routes = [r for d in docs if d["kind"] == "IngressRoute" for r in d["spec"]["routes"]]
for name, router in DEPLOYED.items():
    rule = router["rule"]
    matching = [r for r in routes if rule in r["match"]]
    check(f"k8s: IngressRoute covers {name}", bool(matching), rule)
    if matching:
        protected = any(m["name"] == "gatepass" for m in matching[0].get("middlewares", []))
        check(f"k8s: {name} protection matches", protected == (name in PROTECTED))
        if "priority" in router:
            check(f"k8s: {name} priority matches", matching[0].get("priority") == router["priority"])
deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
gp = deployments["gatepass"]["spec"]["template"]["spec"]["containers"][0]
check("k8s: gatepass readiness on /readyz", gp["readinessProbe"]["httpGet"]["path"] == "/readyz")
check("k8s: gatepass liveness on /healthz", gp["livenessProbe"]["httpGet"]["path"] == "/healthz")
ms = deployments["mcp-status"]["spec"]["template"]["spec"]["containers"][0]
check("k8s: mcp-status liveness on /healthz", ms["livenessProbe"]["httpGet"]["path"] == "/healthz")
check("k8s: mcp-status readiness on /readyz", ms["readinessProbe"]["httpGet"]["path"] == "/readyz")
for name, c in (("gatepass", gp), ("mcp-status", ms)):
    check(f"k8s: {name} readiness every second", c["readinessProbe"].get("periodSeconds") == 1)
for name in ("gatepass", "mcp-status"):
    replicas = deployments[name]["spec"].get("replicas", 1)
    check(f"k8s: {name} runs at least 2 replicas", replicas >= 2, replicas)
# Services in front of a Redis Deployment, by every name a pod of the namespace may use.
redis_apps = {
    d["spec"]["template"]["metadata"]["labels"].get("app")
    for d in deployments.values()
    if any(is_redis(c["image"]) for c in d["spec"]["template"]["spec"]["containers"])
}
K8S_REDIS_HOSTS = set()
for d in docs:
    if d["kind"] == "Service" and d["spec"].get("selector", {}).get("app") in redis_apps:
        n, ns = d["metadata"]["name"], d["metadata"].get("namespace", "default")
        K8S_REDIS_HOSTS |= {n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"}
check("k8s: a Redis Deployment behind a Service", bool(K8S_REDIS_HOSTS))
redis_deployments = [d for d in deployments.values() if d["spec"]["template"]["metadata"]["labels"].get("app") in redis_apps]
check("k8s: Redis runs with --save ''", all(
    no_persistence(c.get("args", []) + c.get("command", []))
    for d in redis_deployments for c in d["spec"]["template"]["spec"]["containers"]))
# The config each Deployment mounts from a ConfigMap: created from deploy/config/<subPath>.
K8S_CONFIGS = {}
for name in ("gatepass", "mcp-status"):
    pod = deployments[name]["spec"]["template"]["spec"]
    from_configmap = {v["name"] for v in pod["volumes"] if "configMap" in v}
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["name"] in from_configmap and mount.get("subPath", "").endswith(".toml"):
            K8S_CONFIGS[name] = ROOT / "deploy" / "config" / mount["subPath"]
check("k8s: both products mount a shipped config", set(K8S_CONFIGS) == {"gatepass", "mcp-status"}
      and all(p.is_file() for p in K8S_CONFIGS.values()), K8S_CONFIGS)

# 4. Every shipped config passes its binary's own `check-config`, and every key it uses is
# documented in README.md's configuration tables.
CONFIGS = sorted(
    p
    for d in (ROOT / "deploy" / "config", ROOT / "examples")
    for p in d.glob("*.toml")
    if p.name.startswith(("gatepass", "mcp-status"))
)
check("shipped configs found", len(CONFIGS) >= 4, [str(p.relative_to(ROOT)) for p in CONFIGS])


def keys(table):
    for k, v in table.items():
        yield k
        if isinstance(v, dict):
            yield from keys(v)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                yield from keys(item)


def file_refs(data):
    """(config key, relative path) of every file a config names."""
    for k in ("cert", "key"):
        if k in data.get("tls", {}):
            yield f"tls.{k}", data["tls"][k]
    if "key_file" in data.get("assertion", {}):
        yield "assertion.key_file", data["assertion"]["key_file"]
    for i, iss in enumerate(data.get("issuers", [])):
        for k in ("secret_file", "public_key_file", "jwks_file", "ca_file", "signing_key_file", "introspection_secret_file"):
            if k in iss:
                yield f"issuers[{i}].{k}", iss[k]
    if "assertion_public_key_file" in data.get("auth", {}):
        yield "auth.assertion_public_key_file", data["auth"]["assertion_public_key_file"]
    for k in ("feed_secret_file", "ca_file"):
        if k in data.get("revocation", {}):
            yield f"revocation.{k}", data["revocation"][k]
    for k in ("key_file", "client_secret_file"):
        if k in data.get("signin", {}):
            yield f"signin.{k}", data["signin"][k]


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60, **kw)


def make_file(key, dest, tmp):
    """Creates a stand-in for a file the repository doesn't ship (generated at deploy time)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if key.endswith("secret_file"):
        dest.write_text(os.urandom(48).hex())
    elif key == "signin.key_file":
        import base64
        dest.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    elif key == "assertion.key_file":
        r = run(BIN / "gatepass", "keygen", "--out", dest)
        if r.returncode != 0:
            return r.stderr.strip()
    elif key == "auth.assertion_public_key_file":
        priv = tmp / "assertion-for-pub.pem"
        if not priv.exists():
            run(BIN / "gatepass", "keygen", "--out", priv)
        r = run("openssl", "pkey", "-in", priv, "-pubout", "-out", dest)
        if r.returncode != 0:
            return r.stderr.strip()
    elif key in ("tls.cert", "tls.key", "revocation.ca_file"):
        cert, keyf = tmp / "tls-cert.pem", tmp / "tls-key.pem"
        if not cert.exists():
            r = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=gatepass", "-keyout", keyf, "-out", cert)
            if r.returncode != 0:
                return r.stderr.strip()
        shutil.copy(keyf if key == "tls.key" else cert, dest)
    else:
        return f"no stand-in known for {key}"
    return None


EFFECTIVE = {}  # config path -> the effective config check-config printed
for cfg in CONFIGS:
    name = cfg.relative_to(ROOT)
    product = "gatepass" if cfg.name.startswith("gatepass") else "mcp-status"
    binary = BIN / product
    if not binary.exists():
        check(f"{name}: {product} check-config", False, f"{binary} not built")
        continue
    data = tomllib.loads(cfg.read_text())
    # Check a copy: files the repository ships next to the config are copied, the rest (keys,
    # secrets, certificates generated at deploy time) are generated into the temp dir.
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "config"
        work.mkdir()
        problems = []
        for key, rel in file_refs(data):
            src, dest = cfg.parent / rel, work / rel
            if src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest)
            elif not dest.exists():
                err = make_file(key, dest, tmp)
                if err:
                    problems.append(f"{key}: {err}")
        check(f"{name}: stand-ins for its files", not problems, problems)
        copy = work / cfg.name
        shutil.copy(cfg, copy)
        r = run(binary, "check-config", "--config", copy)
        check(f"{name}: {product} check-config exits 0", r.returncode == 0, r.stderr.strip())
        try:
            effective = tomllib.loads(r.stdout)
        except tomllib.TOMLDecodeError as e:
            effective = None
            check(f"{name}: check-config prints the effective config", False, str(e))
        if effective is not None:
            missing = sorted(k for k in data if k not in effective)
            check(f"{name}: check-config prints the effective config", bool(effective) and not missing, missing)
            EFFECTIVE[cfg.resolve()] = effective

# 5. Both deployments share state on their own Redis: every config they ship names it, and
# gatepass and mcp-status agree on url and key_prefix (defaults as check-config fills them in).
COMPOSE_REDIS_HOSTS = {name for name, svc in services.items() if is_redis(svc.get("image", ""))}
for deployment, configs, hosts in (("compose", COMPOSE_CONFIGS, COMPOSE_REDIS_HOSTS), ("k8s", K8S_CONFIGS, K8S_REDIS_HOSTS)):
    states = {}
    for product, cfg in configs.items():
        state = EFFECTIVE.get(cfg.resolve(), {}).get("state", {})
        states[product] = state
        where = f"{deployment}: {cfg.relative_to(ROOT)}"
        check(f"{where}: [state] backend is redis", state.get("backend") == "redis", state.get("backend"))
        url = urlsplit(state.get("url", ""))
        check(f"{where}: [state] url is the Redis service", url.scheme in ("redis", "rediss") and url.hostname in hosts,
              f"{state.get('url')} vs {sorted(hosts)}")
    for key in ("url", "key_prefix"):
        values = {product: state.get(key) for product, state in states.items()}
        check(f"{deployment}: gatepass and mcp-status share [state] {key}",
              len(values) == 2 and len(set(values.values())) == 1 and None not in values.values(), values)
    # Sockets of a revoked token close: mcp-status follows gatepass's revocation feed.
    rev = {p: EFFECTIVE.get(c.resolve(), {}).get("revocation", {}) for p, c in configs.items()}
    check(f"{deployment}: mcp-status follows gatepass's revocation feed",
          bool(rev.get("gatepass", {}).get("feed_secret_file"))
          and str(rev.get("mcp-status", {}).get("feed_url", "")).endswith("/revocations")
          and bool(rev.get("mcp-status", {}).get("feed_secret_file")), rev)

README = (ROOT / "README.md").read_text()
# Every identifier inside backticks in a table row of README.md: `listen`, `[tls]`,
# `[[issuers]]`, `{ rate, per, burst }` ...
documented = {
    word
    for line in README.splitlines()
    if line.lstrip().startswith("|")
    for span in re.findall(r"`([^`]*)`", line)
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)
}
for cfg in CONFIGS:
    data = tomllib.loads(cfg.read_text())
    undocumented = sorted({k for k in keys(data) if k not in documented})
    check(f"{cfg.relative_to(ROOT)}: every key is in README.md's configuration tables", not undocumented, undocumented)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
