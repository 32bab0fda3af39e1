#!/usr/bin/env bash
# `make run`: build, write dev keys and config into ./run (ignored by git), start gatepass,
# print tokens and ready-to-paste commands. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${GATEPASS_PORT:-9091}"
RUN=run
BIN=target/release/gatepass

cargo build --release -p gatepass
mkdir -p "$RUN/secrets" "$RUN/keys"
chmod 700 "$RUN/secrets"
if [ ! -s "$RUN/secrets/hs256.key" ]; then
  head -c 48 /dev/urandom | base64 | tr -d '\n=' > "$RUN/secrets/hs256.key"
  chmod 600 "$RUN/secrets/hs256.key"
fi
[ -s "$RUN/keys/assertion-ed25519.pem" ] || "$BIN" keygen --out "$RUN/keys/assertion-ed25519.pem"
if [ ! -s "$RUN/gatepass.toml" ]; then
  sed -e "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" examples/gatepass.toml > "$RUN/gatepass.toml"
fi

"$BIN" check-config --config "$RUN/gatepass.toml" > /dev/null
"$BIN" serve --config "$RUN/gatepass.toml" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { echo "gatepass exited" >&2; exit 1; }
  sleep 0.1
done

ADMIN=$("$BIN" mint --config "$RUN/gatepass.toml" --issuer local --sub alice --username alice --role admin --permissions mcp:read,mcp:write --ttl 8h)
VIEWER=$("$BIN" mint --config "$RUN/gatepass.toml" --issuer local --sub bob --username bob --role viewer --permissions mcp:read --ttl 8h)

cat <<MSG

gatepass is listening on http://127.0.0.1:$PORT   (config: $RUN/gatepass.toml)

Admin token:
  $ADMIN

Viewer token:
  $VIEWER

Ask gatepass what Traefik would ask it:
  curl -i http://127.0.0.1:$PORT/validate -H 'X-Forwarded-Method: POST' -H 'X-Forwarded-Uri: /api/v1/mcps' -H 'X-Forwarded-Host: 127.0.0.1:8080' -H 'X-Forwarded-For: 127.0.0.1' -H "Authorization: Bearer $ADMIN"
  curl -i http://127.0.0.1:$PORT/validate -H 'X-Forwarded-Method: POST' -H 'X-Forwarded-Uri: /api/v1/mcps' -H 'X-Forwarded-Host: 127.0.0.1:8080' -H 'X-Forwarded-For: 127.0.0.1' -H "Authorization: Bearer $VIEWER"
  curl -s -X POST http://127.0.0.1:$PORT/tickets -H "Authorization: Bearer $ADMIN"
  curl -s http://127.0.0.1:$PORT/metrics | grep gatepass_requests_total

Ctrl-C stops gatepass.
MSG
wait $PID
