#!/usr/bin/env python3
"""Lints deploy/ (it can't run here: no Docker engine, no cluster) against traefik/ and SPEC:
YAML parses; compose services, labels, router and middleware names agree with
traefik/dynamic.yml; Kubernetes CRDs and probes are wired; every config key exists in SPEC."""
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = Path(os.environ.get("SPEC", ROOT.parent / "shared" / "SPEC.md"))
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
static = load_all(ROOT / "traefik" / "traefik.yml")[0]
fa = dynamic["middlewares"]["gatepass"]["forwardAuth"]
HEADERS = fa["authResponseHeaders"]
ROUTERS = set(dynamic["routers"])
PROTECTED = {n for n, r in dynamic["routers"].items() if "gatepass" in r.get("middlewares", [])}

check("traefik/: every identity header is listed",
      set(HEADERS) == {"X-User-Id", "X-User-Username", "X-User-Role", "X-User-Permissions", "X-User-Expires", "X-User-Assertion"}, HEADERS)
check("traefik/: trustForwardHeader is false", fa.get("trustForwardHeader") is False)
check("traefik/: maxResponseBodySize is set", isinstance(fa.get("maxResponseBodySize"), int))
check("traefik/: forwardAuth over https to /validate", fa["address"].startswith("https://") and fa["address"].endswith("/validate"))
check("traefik/: aliasHeadersStrategy delete", static["entryPoints"]["web"]["http"]["aliasHeadersStrategy"] == "delete")
check("traefik/: access log drops query parameters", static["accessLog"]["fields"]["queryParameters"]["defaultMode"] == "drop")

# 2. docker-compose agrees with traefik/.
compose = load_all(ROOT / "deploy" / "docker-compose.yml")[0]
check("compose: services", set(compose["services"]) == {"traefik", "gatepass", "mcp-status"}, list(compose["services"]))
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
check("compose: authResponseHeaders match traefik/", labels.get(mw + "authResponseHeaders", "").split(",") == HEADERS)
check("compose: trustForwardHeader false", labels.get(mw + "trustForwardHeader") == "false")
check("compose: maxResponseBodySize set", labels.get(mw + "maxResponseBodySize", "").isdigit())
check("compose: forwardAuth to /validate over https", labels.get(mw + "address", "").startswith("https://") and labels.get(mw + "address", "").endswith("/validate"))
routers = {k.split(".")[3] for k in labels if k.startswith("traefik.http.routers.")}
check("compose: router names match traefik/", routers == ROUTERS, f"{sorted(routers)} vs {sorted(ROUTERS)}")
for name in ROUTERS:
    want = dynamic["routers"][name]["rule"]
    check(f"compose: router {name} rule matches", labels.get(f"traefik.http.routers.{name}.rule") == want)
    protected = "gatepass@docker" in labels.get(f"traefik.http.routers.{name}.middlewares", "")
    check(f"compose: router {name} protection matches", protected == (name in PROTECTED))

# 3. Kubernetes: Traefik CRDs and probes.
docs = [d for p in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) for d in load_all(p)]
middlewares = [d for d in docs if d["kind"] == "Middleware"]
check("k8s: one Middleware named gatepass", [m["metadata"]["name"] for m in middlewares] == ["gatepass"])
kfa = middlewares[0]["spec"]["forwardAuth"] if middlewares else {}
check("k8s: authResponseHeaders match traefik/", kfa.get("authResponseHeaders") == HEADERS)
check("k8s: trustForwardHeader false", kfa.get("trustForwardHeader") is False)
check("k8s: forwardAuth to /validate over https", str(kfa.get("address", "")).startswith("https://") and str(kfa.get("address", "")).endswith("/validate"))
routes = [r for d in docs if d["kind"] == "IngressRoute" for r in d["spec"]["routes"]]
for name, router in dynamic["routers"].items():
    rule = router["rule"]
    matching = [r for r in routes if rule in r["match"]]
    check(f"k8s: IngressRoute covers {name}", bool(matching), rule)
    if matching:
        protected = any(m["name"] == "gatepass" for m in matching[0].get("middlewares", []))
        check(f"k8s: {name} protection matches", protected == (name in PROTECTED))
deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
gp = deployments["gatepass"]["spec"]["template"]["spec"]["containers"][0]
check("k8s: gatepass readiness on /readyz", gp["readinessProbe"]["httpGet"]["path"] == "/readyz")
check("k8s: gatepass liveness on /healthz", gp["livenessProbe"]["httpGet"]["path"] == "/healthz")
ms = deployments["mcp-status"]["spec"]["template"]["spec"]["containers"][0]
check("k8s: mcp-status probes on /healthz", ms["livenessProbe"]["httpGet"]["path"] == "/healthz")

# 4. Every key in the shipped container configs exists in SPEC.
spec_text = SPEC.read_text() if SPEC.exists() else ""
check("SPEC.md found", bool(spec_text), str(SPEC))


def keys(table, prefix=""):
    for k, v in table.items():
        yield k
        if isinstance(v, dict):
            yield from keys(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                yield from keys(item, f"{prefix}{k}.")


for cfg in sorted((ROOT / "deploy" / "config").glob("*.toml")):
    data = tomllib.loads(cfg.read_text())
    unknown = sorted({k for k in keys(data) if not re.search(rf"(^|[\s\[{{,]){re.escape(k)}(\s*=|\]|\s*\])", spec_text, re.M)})
    check(f"{cfg.relative_to(ROOT)}: every key is in SPEC", not unknown, unknown)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
