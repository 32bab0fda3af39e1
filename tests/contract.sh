#!/usr/bin/env bash
# curl-only contract tests against a running stack (Traefik in front of gatepass and
# mcp-status). `make contract` runs them against `make run`'s stack; `make test` runs them
# against a stack of its own.
#   BASE=http://127.0.0.1:8080 ADMIN_TOKEN=... VIEWER_TOKEN=... tests/contract.sh
set -uo pipefail
: "${BASE:?BASE is required}" "${ADMIN_TOKEN:?ADMIN_TOKEN is required}" "${VIEWER_TOKEN:?VIEWER_TOKEN is required}"
BASE="${BASE%/}"
WS_KEY="dGhlIHNhbXBsZSBub25jZQ=="
pass=0
fail=0

check() { # name expected actual
  if [ "$2" = "$3" ]; then pass=$((pass + 1)); echo "ok - $1"
  else fail=$((fail + 1)); echo "not ok - $1: expected [$2], got [$3]"; fi
}
contains() { # name needle haystack (case-insensitive: Go canonicalizes header names)
  case "${3,,}" in *"${2,,}"*) pass=$((pass + 1)); echo "ok - $1" ;;
  *) fail=$((fail + 1)); echo "not ok - $1: [$2] not in [$3]" ;; esac
}
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
# The status of a WebSocket handshake (101 or the refusal); never waits for frames.
upgrade() {
  curl -s -o /dev/null -w '%{http_code}' --http1.1 --max-time 3 \
    -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Version: 13" \
    -H "Sec-WebSocket-Key: $WS_KEY" "$@" 2>/dev/null
}

# With sign-in (gatepass's <prefix>/session answers, 401 without a session), the page is behind
# gatepass: a browser's navigation is sent to sign in, a script gets the JSON 401. Without it
# (404), the page is served openly and takes a token in its fragment.
NAV=(-H "Accept: text/html,application/xhtml+xml" -H "Sec-Fetch-Mode: navigate" -H "Sec-Fetch-Site: none")
if [ "$(status "$BASE/_gatepass/session")" = 401 ]; then
  hdrs=$(curl -s -D - -o /dev/null --max-time 5 "${NAV[@]}" "$BASE/" | tr -d '\r')
  check "sign-in: a navigation is sent to the provider" 302 "$(echo "$hdrs" | head -1 | cut -d' ' -f2)"
  location=$(echo "$hdrs" | grep -i '^location:' | cut -d' ' -f2-)
  for param in response_type=code code_challenge_method=S256 code_challenge= "&state=" "&nonce=" client_id= redirect_uri=; do
    contains "sign-in: the redirect carries $param" "$param" "$location"
  done
  contains "sign-in: a flow cookie of its own" "Set-Cookie: gatepass_session_flow_" "$hdrs"
  contains "sign-in: the flow cookie is HttpOnly, SameSite=Lax" "HttpOnly; SameSite=Lax; Max-Age=600" "$hdrs"
  check "sign-in: a script's request gets 401, not a login page" 401 "$(status "$BASE/" -H "X-Requested-With: XMLHttpRequest" -H "Accept: text/html")"
  contains "sign-in: that 401 is JSON" '"error":"unauthorized"' "$(curl -s --max-time 5 "$BASE/" -H "Sec-Fetch-Mode: cors")"
  body=$(curl -s --max-time 5 "$BASE/_gatepass/session")
  contains "sign-in: <prefix>/session without a cookie is the JSON 401" '"error":"unauthorized"' "$body"
  check "sign-in: an unknown session cookie is 401 for a script" 401 "$(status "$BASE/api/v1/mcps" -H "Cookie: gatepass_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")"
  check "sign-in: the dashboard page needs a session" 401 "$(status "$BASE/")"
else
  check "dashboard is served" 200 "$(status "$BASE/")"
  contains "dashboard is HTML" "text/html" "$(curl -sI --max-time 5 "$BASE/" | tr -d '\r' | grep -i '^content-type')"
fi
check "mcp-status /metrics is not routed" 404 "$(status "$BASE/metrics")"

check "API without a token: 401" 401 "$(status "$BASE/api/v1/mcps")"
hdrs=$(curl -s -D - -o /dev/null --max-time 5 "$BASE/api/v1/mcps" | tr -d '\r')
contains "401 carries the Bearer challenge" 'WWW-Authenticate: Bearer realm="gatepass"' "$hdrs"
contains "401 is JSON" "Content-Type: application/json" "$hdrs"
contains "401 is not cached" "Cache-Control: no-store" "$hdrs"
body=$(curl -s --max-time 5 "$BASE/api/v1/mcps" -H "Authorization: Bearer not.a.jwt")
contains "malformed token: invalid_token" '"error":"invalid_token"' "$body"
check "two Authorization headers: 400" 400 "$(status "$BASE/api/v1/mcps" -H "Authorization: Bearer a.b.c" -H "Authorization: Bearer d.e.f")"
check "Basic scheme: 401" 401 "$(status "$BASE/api/v1/mcps" -H "Authorization: Basic YWRtaW46YWRtaW4=")"

check "API with a token: 200" 200 "$(status "$BASE/api/v1/mcps" -H "Authorization: Bearer $ADMIN_TOKEN")"
contains "API lists MCPs" '"mcps":[' "$(curl -s --max-time 5 "$BASE/api/v1/mcps" -H "Authorization: Bearer $ADMIN_TOKEN")"
check "viewer may not disable: 403" 403 "$(status -X POST "$BASE/api/v1/mcps/none/disable" -H "Authorization: Bearer $VIEWER_TOKEN")"
check "admin reaches mcp-status: unknown MCP is 404" 404 "$(status -X POST "$BASE/api/v1/mcps/none/disable" -H "Authorization: Bearer $ADMIN_TOKEN")"

check "upgrade without a token: 401" 401 "$(upgrade "$BASE/ws/mcp-status")"
check "upgrade with a viewer token: 403" 403 "$(upgrade "$BASE/ws/mcp-status" -H "Sec-WebSocket-Protocol: jwt-auth, $VIEWER_TOKEN")"
check "upgrade from a foreign origin: 403" 403 "$(upgrade "$BASE/ws/mcp-status" -H "Origin: https://evil.example" -H "Sec-WebSocket-Protocol: jwt-auth, $ADMIN_TOKEN")"
check "upgrade with a token: 101" 101 "$(upgrade "$BASE/ws/mcp-status" -H "Sec-WebSocket-Protocol: jwt-auth, $ADMIN_TOKEN")"
proto=$(curl -s -D - -o /dev/null --http1.1 --max-time 2 -H "Connection: Upgrade" -H "Upgrade: websocket" \
  -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: $WS_KEY" -H "Sec-WebSocket-Protocol: jwt-auth, $ADMIN_TOKEN" \
  "$BASE/ws/mcp-status" 2>/dev/null | tr -d '\r' | grep -i '^sec-websocket-protocol:' | cut -d' ' -f2)
check "only the jwt-auth marker is selected" "jwt-auth" "$proto"

ticket=$(curl -s --max-time 5 -X POST "$BASE/auth/tickets" -H "Authorization: Bearer $ADMIN_TOKEN" | sed -n 's/.*"ticket":"\([A-Za-z0-9_-]*\)".*/\1/p')
check "ticket has 43 base64url characters" 43 "${#ticket}"
check "ticket on a plain GET: 401 (not consumed)" 401 "$(status "$BASE/ws/mcp-status?ticket=$ticket")"
check "ticket upgrade: 101" 101 "$(upgrade "$BASE/ws/mcp-status?ticket=$ticket")"
check "ticket second use: 401" 401 "$(upgrade "$BASE/ws/mcp-status?ticket=$ticket")"
check "ticket without a token: 401" 401 "$(status -X POST "$BASE/auth/tickets")"

contains "assertion JWKS is published" '"kty":"OKP"' "$(curl -s --max-time 5 "$BASE/.well-known/jwks.json")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
