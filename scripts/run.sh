#!/usr/bin/env bash
# `make run`: build, write dev keys/certs/configs into ./run (ignored by git) if absent, start
# an OpenID Provider (npm oidc-provider, tests/oidc/provider.mjs) with demo users to sign in as,
# Traefik + gatepass (with [signin]) + mcp-status + two demo MCPs (one flapping) + a demo MCP
# server (official MCP SDK, tests/mcp/server.mjs) behind gatepass at /mcp, print the URL to sign
# in at, the users' passwords, tokens and commands.
# `make run-cluster` (`run.sh cluster`): the same with a redis-server and two replicas each of
# gatepass and mcp-status sharing it (`[state] backend = "redis"`), Traefik balancing both pairs.
# Ctrl-C stops everything this script started; `make stop` does the same from elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=run
PIDS="$RUN/pids"
WEB_PORT="${WEB_PORT:-8080}"
GATEPASS_PORT="${GATEPASS_PORT:-9091}"
MCP_PORT="${MCP_STATUS_PORT:-9092}"
DEMO1_PORT="${DEMO1_PORT:-7001}"
DEMO2_PORT="${DEMO2_PORT:-7002}"
MCP_SERVER_PORT="${MCP_SERVER_PORT:-7003}"
OIDC_PORT="${OIDC_PORT:-8090}"
# Cluster mode only: the second replicas, Traefik's `auth` entry point and redis-server.
GATEPASS2_PORT="${GATEPASS2_PORT:-9093}"
MCP2_PORT="${MCP_STATUS2_PORT:-9094}"
AUTH_PORT="${AUTH_PORT:-8081}"
REDIS_PORT="${REDIS_PORT:-6390}"
# `make run-cluster SENTINEL=1`: Redis replicas on the next two ports, sentinels from this one.
SENTINEL="${SENTINEL:-}"
SENTINEL_PORT="${SENTINEL_PORT:-26390}"
WEB="127.0.0.1:$WEB_PORT"

# True while $1 still runs the program $2 that this script started: an interrupted start can
# leave run/pids behind, and by then the PID may belong to another process.
ours() {
  local argv0
  argv0=$({ tr '\0' '\n' < "/proc/$1/cmdline"; } 2>/dev/null | head -n 1) || return 1
  [ "$argv0" = "$2" ]
}

stop_all() {
  [ -f "$PIDS" ] || return 0
  local pid name exe signalled=()
  # TERM everything first, then wait: the services drain in parallel.
  while read -r pid name exe; do
    if ours "$pid" "$exe"; then
      kill -TERM "$pid" 2>/dev/null && signalled+=("$pid $name $exe")
    elif kill -0 "$pid" 2>/dev/null; then
      echo "not stopping $pid: it no longer runs $name ($exe)"
    fi
  done < "$PIDS"
  for entry in "${signalled[@]}"; do
    read -r pid name exe <<< "$entry"
    for _ in $(seq 1 100); do ours "$pid" "$exe" || break; sleep 0.05; done
    if ours "$pid" "$exe"; then
      kill -KILL "$pid" 2>/dev/null || true
      echo "killed $name ($pid): it did not stop within 5 s"
    else
      echo "stopped $name ($pid)"
    fi
  done
  rm -f "$PIDS"
}

CLUSTER=""
case "${1:-}" in
  "") ;;
  cluster) CLUSTER=1 ;;
  stop) stop_all; exit 0 ;;
  *) echo "usage: $0 [cluster|stop]" >&2; exit 2 ;;
esac
GATEPASS_PORTS=("$GATEPASS_PORT")
MCP_PORTS=("$MCP_PORT")
if [ -n "$CLUSTER" ]; then
  GATEPASS_PORTS+=("$GATEPASS2_PORT")
  MCP_PORTS+=("$MCP2_PORT")
  command -v redis-server > /dev/null || { echo "redis-server is missing: run 'make run-cluster' (it installs it)" >&2; exit 1; }
fi

if [ -f "$PIDS" ]; then
  echo "A stack is already running (see $PIDS); stopping it first."
  stop_all
fi

cargo build --release -p gatepass -p mcp-status
GP=target/release/gatepass
MS=target/release/mcp-status
TRAEFIK=.venv/bin/traefik
[ -x "$TRAEFIK" ] || { echo "Traefik is missing: run 'make run' (it installs .venv)" >&2; exit 1; }
command -v node > /dev/null && [ -d tests/mcp/node_modules/@modelcontextprotocol/server ] ||
  { echo "The demo MCP server needs node and tests/mcp/node_modules: run 'make run' (it runs npm ci in tests/mcp)" >&2; exit 1; }
[ -d tests/oidc/node_modules/oidc-provider ] ||
  { echo "The OpenID Provider needs tests/oidc/node_modules: run 'make run' (it runs npm ci in tests/oidc)" >&2; exit 1; }
.venv/bin/python -c 'import websockets' 2>/dev/null || .venv/bin/pip install --quiet --disable-pip-version-check websockets

# Renders a config template: each {{NAME}} becomes the environment variable NAME (which must
# be set: a forgotten block is an error, not an empty line).
render_config() {
  python3 - "$1" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
def value(m):
    if m.group(1) not in os.environ:
        sys.exit(f"render_config: {sys.argv[1]} needs {m.group(1)}")
    return os.environ[m.group(1)]
sys.stdout.write(re.sub(r"\{\{([A-Z_]+)\}\}", value, text))
PY
}

mkdir -p "$RUN/secrets" "$RUN/keys" "$RUN/certs" "$RUN/dynamic" "$RUN/logs"
chmod 700 "$RUN/secrets"
if [ ! -s "$RUN/secrets/hs256.key" ]; then
  head -c 48 /dev/urandom | base64 | tr -d '\n=' > "$RUN/secrets/hs256.key"
  chmod 600 "$RUN/secrets/hs256.key"
fi
if [ ! -s "$RUN/secrets/feed.key" ]; then
  head -c 32 /dev/urandom | base64 | tr -d '\n=' > "$RUN/secrets/feed.key"
  chmod 600 "$RUN/secrets/feed.key"
fi
[ -s "$RUN/keys/assertion-ed25519.pem" ] || "$GP" keygen --out "$RUN/keys/assertion-ed25519.pem"
# Sign-in: the session key, gatepass's client secret at the provider, and the demo users'
# passwords (made once, kept in run/secrets, printed in the banner).
[ -s "$RUN/secrets/session.keys" ] || { head -c 32 /dev/urandom | base64 > "$RUN/secrets/session.keys"; chmod 600 "$RUN/secrets/session.keys"; }
[ -s "$RUN/secrets/oidc-client.key" ] || { head -c 32 /dev/urandom | base64 | tr -d '\n=/+' > "$RUN/secrets/oidc-client.key"; chmod 600 "$RUN/secrets/oidc-client.key"; }
if [ ! -s "$RUN/secrets/users.json" ]; then
  pw() { head -c 12 /dev/urandom | base64 | tr -d '\n=/+'; }
  printf '[{"username":"alice","password":"%s","role":"admin"},{"username":"bob","password":"%s","role":"viewer"},{"username":"carol","password":"%s","role":"developer"}]\n' \
    "$(pw)" "$(pw)" "$(pw)" > "$RUN/secrets/users.json"
  chmod 600 "$RUN/secrets/users.json"
fi

# A private CA and a certificate for gatepass: Traefik talks to gatepass over TLS + HTTP/2.
if [ ! -s "$RUN/certs/gatepass.pem" ]; then
  (
    cd "$RUN/certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
      -keyout ca-key.pem -out ca.pem -subj "/CN=gatepass local CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout gatepass-key.pem -out gatepass.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in gatepass.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
      -out gatepass.pem -extfile ext.cnf 2>/dev/null
    rm -f gatepass.csr ext.cnf
    chmod 600 ca-key.pem gatepass-key.pem
  )
fi

# The services' configs: the templates the end-to-end tests render too (traefik/*.toml), with
# what the demo adds: the MCP server behind gatepass at /mcp and the demo MCPs.
ORIGINS="\"http://$WEB\", \"http://localhost:$WEB_PORT\""
OIDC="http://127.0.0.1:$OIDC_PORT"
GATEPASS_LISTEN="127.0.0.1:$GATEPASS_PORT" ORIGINS="$ORIGINS" WEB_ADDR="$WEB" \
ISSUERS=$(cat <<TOML

# The demo's OpenID Provider (tests/oidc/provider.mjs): people sign in there; its access
# tokens (aud = this stack) are verified like any bearer token; its logout tokens end sessions.
[[issuers]]
name = "demo-idp"
issuer = "$OIDC"
discovery = true
algorithms = ["RS256"]
audiences = ["http://$WEB"]
backchannel_logout_audience = "gatepass"
TOML
) \
RULES=$(cat <<TOML
# The demo MCP server (MCP 2026-07-28, SPEC §10): its write tool set_note needs mcp:write by a
# rule on the Mcp-Method / Mcp-Name headers (the server checks them against the body); every
# other call needs mcp:read. Requests under /mcp must name protocol 2026-07-28 or later.
[[rules]]
path = "/mcp"
mcp_methods = ["tools/call"]
mcp_names = ["set_note"]
permissions = ["mcp:read", "mcp:write"]

[[rules]]
path = "/mcp"
permissions = ["mcp:read"]

# SPEC §8 (RFC 9728): 401s under /mcp name the metadata, and tokens need aud = resource.
[[resources]]
resource = "http://$WEB/mcp"
path = "/mcp"
authorization_servers = ["https://auth.example.test"]
scopes_supported = ["mcp:read", "mcp:write"]
TOML
) RATE_LIMIT=$(cat <<'TOML'
per_user = { rate = 100, per = "1s", burst = 200 }
# Sized so that `make contract` (about 10 deliberate failures a run) can run back to back
# from this machine's one address; production budgets are tighter (see README).
per_ip_failures = { rate = 60, per = "1m", burst = 60 }
upgrades_per_user = { rate = 20, per = "1m", burst = 20 }
TOML
) EXTRA=$(cat <<TOML

# Browser sign-in (SPEC §9): the session cookie first, then bearer tokens for scripts.
[tokens]
sources = ["session", "bearer", "websocket_protocol", "cookie:access_token", "ticket"]

[signin]
issuer = "demo-idp"
client_id = "gatepass"
client_secret_file = "secrets/oidc-client.key"
hosts = ["$WEB", "localhost:$WEB_PORT"]
key_file = "secrets/session.keys"
TOML
) render_config traefik/gatepass.toml > "$RUN/gatepass.toml"

MCP_STATUS_LISTEN="127.0.0.1:$MCP_PORT" ORIGINS="$ORIGINS" WEB_ADDR="$WEB" EXTRA="" \
MCPS=$(cat <<TOML

[[mcps]]
name = "oracle_mcp"
health_url = "http://127.0.0.1:$DEMO1_PORT/health"
interval = "5s"

[[mcps]]
name = "flaky_mcp"
health_url = "http://127.0.0.1:$DEMO2_PORT/health"
interval = "2s"
failure_threshold = 2
recovery_timeout = "10s"
disable_after_cycles = 3

# The demo MCP server behind gatepass at http://$WEB/mcp.
[[mcps]]
name = "demo_mcp_server"
health_url = "http://127.0.0.1:$MCP_SERVER_PORT/health"
interval = "5s"
TOML
) render_config traefik/mcp-status.toml > "$RUN/mcp-status.toml"

# Cluster mode: both products share tickets, rate limits and connection counts on one Redis
# (the same url and key_prefix), and Traefik's `auth` entry point load-balances the gatepass
# replicas for forwardAuth (it takes one URL; the entry point trusts the X-Forwarded-* that
# Traefik itself set), as the e2e harness (tests/src/lib.rs) does.
CLUSTER_SED=()
STATE_URL="redis://127.0.0.1:$REDIS_PORT/0"
SENTINEL_PORTS=()
if [ -n "$SENTINEL" ]; then
  SENTINEL_PORTS=("$SENTINEL_PORT" "$((SENTINEL_PORT + 1))" "$((SENTINEL_PORT + 2))")
  STATE_URL="redis+sentinel://$(printf '127.0.0.1:%s,' "${SENTINEL_PORTS[@]}" | sed 's/,$//')/mymaster/0"
fi
if [ -n "$CLUSTER" ]; then
  for f in gatepass mcp-status; do
    printf '\n[state]\nbackend = "redis"\nurl = "%s"\nkey_prefix = "gatepass:"\n' \
      "$STATE_URL" >> "$RUN/$f.toml"
  done
  CLUSTER_SED=(
    -e "s|^entryPoints:\$|&\n  auth:\n    address: \"127.0.0.1:$AUTH_PORT\"\n    forwardedHeaders:\n      trustedIPs: [\"127.0.0.1/32\"]|"
    -e "s|\"https://{{GATEPASS_ADDR}}/validate\"|\"http://127.0.0.1:$AUTH_PORT/validate\"|"
    -e "s|^\( *- url: \"https://\){{GATEPASS_ADDR}}\"\$|&\n\1127.0.0.1:$GATEPASS2_PORT\"|"
    -e "s|^\( *- url: \"http://\){{MCP_STATUS_ADDR}}\"\$|&\n\1127.0.0.1:$MCP2_PORT\"|"
  )
  cp traefik/pool.yml "$RUN/dynamic/pool.yml"
else
  rm -f "$RUN/dynamic/pool.yml" "$RUN/dynamic/gatepass-pool.yml"
fi

render() {
  sed "${CLUSTER_SED[@]}" \
      -e "s|{{WEB_ADDR}}|$WEB|g" \
      -e "s|{{DYNAMIC_DIR}}|$PWD/$RUN/dynamic|g" \
      -e "s|{{ACCESS_LOG}}|$PWD/$RUN/logs/access.log|g" \
      -e "s|{{GATEPASS_ADDR}}|127.0.0.1:$GATEPASS_PORT|g" \
      -e "s|{{MCP_STATUS_ADDR}}|127.0.0.1:$MCP_PORT|g" \
      -e "s|{{MCP_SERVER_ADDR}}|127.0.0.1:$MCP_SERVER_PORT|g" \
      -e "s|{{CA_FILE}}|$PWD/$RUN/certs/ca.pem|g" "$1"
}
render traefik/traefik.yml > "$RUN/traefik.yml"
render traefik/dynamic.yml > "$RUN/dynamic/dynamic.yml"
render traefik/signin.yml > "$RUN/dynamic/signin.yml"

"$GP" check-config --config "$RUN/gatepass.toml" > /dev/null

: > "$PIDS"
start() {
  local name=$1; shift
  "$@" > "$RUN/logs/$name.log" 2>&1 &
  echo "$! $name $1" >> "$PIDS"
}
trap 'echo; stop_all; exit 0' INT TERM
if [ -n "$CLUSTER" ]; then
  # In memory only; --set-proc-title no keeps its argv, which `make stop` checks.
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$RUN" --set-proc-title no
fi
if [ -n "$SENTINEL" ]; then
  # Two replicas of it, and three sentinels that fail over after 1 s without an answer.
  for i in 1 2; do
    mkdir -p "$RUN/redis-$i"
    start "redis-$i" redis-server --bind 127.0.0.1 --port "$((REDIS_PORT + i))" --save '' \
      --appendonly no --dir "$RUN/redis-$i" --set-proc-title no \
      --replicaof 127.0.0.1 "$REDIS_PORT"
  done
  for p in "${SENTINEL_PORTS[@]}"; do
    mkdir -p "$RUN/sentinel-$p"
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %s 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n' \
      "$p" "$PWD/$RUN/sentinel-$p" "$REDIS_PORT" > "$RUN/sentinel-$p.conf"
    start "sentinel-$p" redis-server "$PWD/$RUN/sentinel-$p.conf" --sentinel --set-proc-title no
  done
fi
# The OpenID Provider first: gatepass reads its discovery document at start.
PORT="$OIDC_PORT" OIDC_KEYS="$RUN/keys/oidc-keys.json" USERS_FILE="$RUN/secrets/users.json" \
  GATEPASS_SECRET="$(cat "$RUN/secrets/oidc-client.key")" SIGNIN_RESOURCE="http://$WEB" \
  REDIRECT_URIS="http://$WEB/_gatepass/callback http://localhost:$WEB_PORT/_gatepass/callback" \
  POST_LOGOUT_REDIRECT_URIS="http://$WEB/ http://localhost:$WEB_PORT/" \
  BACKCHANNEL_LOGOUT_URI="http://$WEB/auth/backchannel-logout" \
  start oidc-provider node tests/oidc/provider.mjs
for _ in $(seq 1 300); do
  curl -fsS "$OIDC/.well-known/openid-configuration" > /dev/null 2>&1 && break
  sleep 0.1
done
start demo-oracle "$MS" demo-mcp --listen "127.0.0.1:$DEMO1_PORT"
start demo-flaky "$MS" demo-mcp --listen "127.0.0.1:$DEMO2_PORT" --flap 20s
# It reads gatepass's assertion keys through Traefik, as mcp-status does.
PORT="$MCP_SERVER_PORT" GATEPASS_JWKS_URL="http://$WEB/.well-known/jwks.json" \
  start mcp-server node tests/mcp/server.mjs
start gatepass "$GP" serve --config "$RUN/gatepass.toml"
start mcp-status "$MS" serve --config "$RUN/mcp-status.toml"
if [ -n "$CLUSTER" ]; then
  start gatepass-2 "$GP" serve --config "$RUN/gatepass.toml" --listen "127.0.0.1:$GATEPASS2_PORT"
  start mcp-status-2 "$MS" serve --config "$RUN/mcp-status.toml" --listen "127.0.0.1:$MCP2_PORT"
fi
start traefik "$TRAEFIK" "--configFile=$PWD/$RUN/traefik.yml"

# "Up" means every part is ready, not just listening: gatepass has its keys, mcp-status has
# the assertion keys (fetched through Traefik), Redis answers (cluster), and Traefik routes to both.
ready_now() {
  local p
  for p in "${GATEPASS_PORTS[@]}"; do
    curl -fsS --cacert "$RUN/certs/ca.pem" "https://127.0.0.1:$p/readyz" > /dev/null 2>&1 || return 1
  done
  for p in "${MCP_PORTS[@]}"; do
    curl -fsS "http://127.0.0.1:$p/readyz" > /dev/null 2>&1 || return 1
  done
  [ -z "$CLUSTER" ] || redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping > /dev/null 2>&1 || return 1
  for p in "${SENTINEL_PORTS[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" sentinel get-master-addr-by-name mymaster 2> /dev/null |
      grep -q . || return 1
  done
  curl -fsS "http://127.0.0.1:$MCP_SERVER_PORT/health" > /dev/null 2>&1 || return 1
  curl -fsS "$OIDC/.well-known/openid-configuration" > /dev/null 2>&1 || return 1
  # The page is behind sign-in: a script gets gatepass's 401 through Traefik.
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$WEB/")" = 401 ] &&
    curl -fsS "http://$WEB/.well-known/jwks.json" > /dev/null 2>&1 &&
    curl -fsS "http://$WEB/.well-known/oauth-protected-resource/mcp" > /dev/null 2>&1
}
ready=""
for _ in $(seq 1 300); do
  if ready_now; then ready=1; break; fi
  for p in $(cut -d' ' -f1 "$PIDS"); do
    kill -0 "$p" 2>/dev/null || { echo "A process exited during start ($(grep "^$p " "$PIDS"))" >&2; break 2; }
  done
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "The stack did not come up; logs are in $RUN/logs/" >&2
  tail -n 5 "$RUN"/logs/*.log >&2
  stop_all
  exit 1
fi

ADMIN=$("$GP" mint --config "$RUN/gatepass.toml" --issuer local --sub alice --username alice --role admin --permissions mcp:read,mcp:write --ttl 8h)
VIEWER=$("$GP" mint --config "$RUN/gatepass.toml" --issuer local --sub bob --username bob --role viewer --permissions mcp:read --ttl 8h)
# Tokens for the MCP resource (aud = its URI; the two above have no aud and get 401 there).
MCP_WRITER=$("$GP" mint --config "$RUN/gatepass.toml" --issuer local --sub alice --username alice --role admin --permissions mcp:read,mcp:write --aud "http://$WEB/mcp" --ttl 8h)
MCP_READER=$("$GP" mint --config "$RUN/gatepass.toml" --issuer local --sub bob --username bob --role viewer --permissions mcp:read --aud "http://$WEB/mcp" --ttl 8h)
# MCP 2026-07-28: the operation in headers, the protocol envelope in the body's _meta.
MCP_HEADERS="-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call'"
MCP_META='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"curl","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}'
MCP_WHOAMI='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},'"$MCP_META"'}}'
MCP_SET_NOTE='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"set_note","arguments":{"text":"hi"},'"$MCP_META"'}}'
# Replica lists for the message (one address each without `cluster`).
GATEPASS_URLS=$(printf 'https://127.0.0.1:%s, ' "${GATEPASS_PORTS[@]}")
MCP_URLS=$(printf 'http://127.0.0.1:%s, ' "${MCP_PORTS[@]}")
CLUSTER_INFO=""
if [ -n "$CLUSTER" ]; then
  CLUSTER_INFO=$'\n'"  Redis        $STATE_URL  (shared [state] of both pairs, in memory only)"
  [ -z "$SENTINEL" ] || CLUSTER_INFO+=$'\n'"               master 127.0.0.1:$REDIS_PORT, replicas :$((REDIS_PORT + 1)) :$((REDIS_PORT + 2)); try: kill -9 the master"
  CLUSTER_INFO+=$'\n'"  forwardAuth  http://127.0.0.1:$AUTH_PORT  (Traefik's auth entry point, balancing the gatepass replicas)"
fi

# The demo users, as the banner lists them: `alice / <password> (admin)`.
USERS=$(python3 - "$RUN/secrets/users.json" <<'PY'
import json, sys
for u in json.load(open(sys.argv[1])):
    print(f"  {u['username']} / {u['password']} ({u['role']})")
PY
)

cat <<MSG

The stack is up and ready (logs in $RUN/logs/, configs in $RUN/).

Open http://$WEB/ and sign in as one of:
$USERS
(alice sees everything and may enable/disable; carol sees a redacted view; bob may not view.)

  Traefik      http://$WEB   (routes /, /ws/mcp-status, /api/v1, /mcp, /_gatepass, /auth/tickets,
               /.well-known/jwks.json, /.well-known/oauth-protected-resource)
  sign-in      $OIDC  (the OpenID Provider: npm oidc-provider, tests/oidc/provider.mjs)
  gatepass     ${GATEPASS_URLS%, }  (TLS, HTTP/2; CA $RUN/certs/ca.pem)
  mcp-status   ${MCP_URLS%, }  (/readyz, /metrics)
  demo MCPs    http://127.0.0.1:$DEMO1_PORT/health (steady), http://127.0.0.1:$DEMO2_PORT/health (flaps every 20s)
  MCP server   http://$WEB/mcp behind gatepass (tools whoami, set_note; direct: http://127.0.0.1:$MCP_SERVER_PORT/health)$CLUSTER_INFO

For scripts, bearer tokens (issuer "local", valid 8 h):
Admin token (alice, role admin: the stream, the full view, enable/disable):
  $ADMIN

Viewer token (bob, role viewer: refused by the stream and the API, 403):
  $VIEWER

curl:
  curl -s http://$WEB/api/v1/mcps -H "Authorization: Bearer $ADMIN"
  curl -s -X POST http://$WEB/api/v1/mcps/oracle_mcp/disable -H "Authorization: Bearer $ADMIN"
  curl -s -X POST http://$WEB/api/v1/mcps/oracle_mcp/enable -H "Authorization: Bearer $ADMIN"
  curl -si http://$WEB/api/v1/mcps -H "Authorization: Bearer $VIEWER" -X POST   # 403
  curl -s -X POST http://$WEB/auth/tickets -H "Authorization: Bearer $ADMIN"
  curl -s -X POST http://$WEB/auth/revocations -H "Authorization: Bearer $ADMIN" -d '{"sub": "bob"}'   # bob's tokens and sockets end now
  curl -s -X POST http://127.0.0.1:$DEMO1_PORT/down      # flip oracle_mcp unhealthy (/up to restore)

MCP server (SPEC §8): the metadata, the 401 challenge naming it, a call, a write without mcp:write:
  curl -s http://$WEB/.well-known/oauth-protected-resource/mcp
  curl -si -X POST http://$WEB/mcp -H 'MCP-Protocol-Version: 2026-07-28'   # 401, WWW-Authenticate: Bearer realm="gatepass", resource_metadata="...", scope="mcp:read"
  curl -s http://$WEB/mcp -H "Authorization: Bearer $MCP_WRITER" $MCP_HEADERS -H 'Mcp-Name: whoami' -d '$MCP_WHOAMI'
  curl -si http://$WEB/mcp -H "Authorization: Bearer $MCP_READER" $MCP_HEADERS -H 'Mcp-Name: set_note' -d '$MCP_SET_NOTE'   # 403 insufficient_scope, scope="mcp:read mcp:write" (gatepass's rule on Mcp-Name)
  curl -si -X POST http://$WEB/mcp -H 'MCP-Protocol-Version: 2025-11-25'   # 400: an older client could leave Mcp-Name out

Python (websockets):
  .venv/bin/python examples/python/ws_client.py --url ws://$WEB/ws/mcp-status --token $ADMIN
  .venv/bin/python examples/python/ws_client.py --url ws://$WEB/ws/mcp-status --token $ADMIN --ticket

Contract checks against this stack: make contract
Ctrl-C stops everything (or 'make stop' from another terminal).
MSG
wait
