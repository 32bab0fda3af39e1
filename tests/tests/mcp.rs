//! SPEC §8 and §10: an MCP server behind gatepass, through the real Traefik. The demo server
//! (`tests/mcp/server.mjs`) and the client (`tests/mcp/client.mjs`) are both on the official
//! MCP TypeScript SDK v2 (`@modelcontextprotocol/server` / `client`), speaking revision
//! 2026-07-28 (each request names its operation in `MCP-Protocol-Version`, `Mcp-Method`,
//! `Mcp-Name`); the authorization server is a real OpenID Provider (npm `oidc-provider`). The
//! client knows only `http://<web>/mcp` and its client credentials: it finds the provider
//! from the 401's `resource_metadata`, gets a client_credentials token for the resource (RFC
//! 8707 `resource`), lists the tools and calls one. gatepass's rules: `mcp:read` under
//! `/mcp`, and `set_note` (by `Mcp-Method`/`Mcp-Name`) needs `mcp:write` too. Refused: a
//! token for another audience (401 with the challenge), a token without `mcp:read`
//! (gatepass's 403 with `scope`), a viewer calling the write tool (gatepass's 403
//! `insufficient_scope` listing `mcp:write`; the SDK re-authorizes once, then gives up), an
//! older protocol version under `/mcp` (400), and identity headers that reach the server
//! without gatepass's assertion (401).

use std::time::Duration;

use gatepass_e2e::*;
use gatepass_testkit::oidc::{
    MCP_CLIENT_ID, MCP_CLIENT_SECRET, MCP_VIEWER_ID, MCP_VIEWER_SECRET, RS256_RESOURCE,
};
use serde_json::{json, Value};

async fn mcp_stack() -> Stack {
    Stack::start_with(Options {
        mcp_server: true,
        ..Options::default()
    })
    .await
}

fn metadata_url(stack: &Stack) -> String {
    stack.url("/.well-known/oauth-protected-resource/mcp")
}

/// The challenge of a 401 under `/mcp` without a token: the metadata and the scope the
/// operation needs (`/mcp`'s rule: mcp:read).
fn missing_token_challenge(stack: &Stack) -> String {
    format!(
        r#"Bearer realm="gatepass", resource_metadata="{}", scope="mcp:read""#,
        metadata_url(stack)
    )
}

/// gatepass's 403 for `set_note` without `mcp:write`: every scope the operation needs.
fn write_challenge(stack: &Stack) -> String {
    format!(
        r#"Bearer realm="gatepass", resource_metadata="{}", error="insufficient_scope", error_description="missing permissions for this route", scope="mcp:read mcp:write""#,
        metadata_url(stack)
    )
}

/// The protocol revision whose requests name their operation in headers.
const REVISION: &str = "2026-07-28";

/// The discovery the SDK client reports: the provider from the resource's metadata.
fn expected_discovery(stack: &Stack) -> Value {
    json!({
        "authorization_server": stack.op().issuer(),
        "resource": stack.mcp_url(),
        "scopes_supported": MCP_SCOPES,
        "token_endpoint": stack.op().token_endpoint(),
    })
}

/// The exchanges every SDK client run starts with: the 401, the resource metadata, the
/// authorization server's metadata, the token, then the probe (`server/discover`) with the token.
fn expected_auth_flow(stack: &Stack) -> Vec<(String, String, u16)> {
    let x = |m: &str, u: String, s: u16| (m.to_owned(), u, s);
    vec![
        x("POST", stack.mcp_url(), 401),
        x("GET", metadata_url(stack), 200),
        x(
            "GET",
            stack.op().url("/.well-known/oauth-authorization-server"),
            200,
        ),
        x("POST", stack.op().token_endpoint(), 200),
        x("POST", stack.mcp_url(), 200),
    ]
}

/// The text content of a tool result, parsed as JSON.
fn tool_json(result: &Value) -> Value {
    let content = result["content"].as_array().expect("content");
    assert_eq!(content.len(), 1, "{result}");
    assert_eq!(content[0]["type"], "text", "{result}");
    serde_json::from_str(content[0]["text"].as_str().unwrap()).unwrap()
}

/// A JSON-RPC request to `/mcp` through Traefik with `bearer`, as a 2026-07-28 client sends
/// it: the `_meta` envelope in the body, `MCP-Protocol-Version`, `Mcp-Method` and (for
/// `tools/call`) `Mcp-Name`. Status, WWW-Authenticate, body.
async fn post_mcp(stack: &Stack, bearer: &str, mut body: Value) -> (u16, Option<String>, Value) {
    let method = body["method"].as_str().unwrap().to_owned();
    let name = body["params"]["name"].as_str().map(str::to_owned);
    body["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut req = client()
        .post(stack.mcp_url())
        .bearer_auth(bearer)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", REVISION)
        .header("mcp-method", &method);
    if let Some(n) = &name {
        req = req.header("mcp-name", n);
    }
    let r = req.json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = r.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn call_tool(name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

#[tokio::test]
async fn the_resource_metadata_is_public_through_traefik() {
    let stack = mcp_stack().await;
    let r = client().get(metadata_url(&stack)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({
            "resource": stack.mcp_url(),
            "authorization_servers": [stack.op().issuer()],
            "scopes_supported": MCP_SCOPES,
            "bearer_methods_supported": ["header"],
        })
    );
    // Routed to gatepass, not to the forwardAuth middleware: an unknown resource is gatepass's
    // own 404, without any token.
    let r = client()
        .get(stack.url("/.well-known/oauth-protected-resource/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "not_found", "error_description": "no [[resources]] with this path"})
    );
    // The MCP endpoint itself is protected: no token, the challenge names the metadata.
    let r = client()
        .post(stack.mcp_url())
        .header("mcp-protocol-version", REVISION)
        .header("mcp-method", "tools/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap(),
        missing_token_challenge(&stack)
    );
    // A rule under /mcp reads the MCP headers: a request without a revision that checks
    // them against the body (none, or older) is refused before anything else.
    for version in [None, Some("2025-11-25")] {
        let mut req = client()
            .post(stack.mcp_url())
            .header("mcp-method", "tools/list");
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{version:?}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"error": "invalid_request",
                   "error_description": "this resource needs MCP-Protocol-Version 2026-07-28 or later"})
        );
    }
}

#[tokio::test]
async fn an_sdk_client_discovers_the_authorization_server_from_the_401_and_calls_tools() {
    let stack = mcp_stack().await;
    let before = now();
    let run = stack
        .mcp_client(
            MCP_CLIENT_ID,
            MCP_CLIENT_SECRET,
            None,
            Some(("whoami", json!({}))),
        )
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);

    // Discovery from the 401: the challenge, the metadata, the provider, the token.
    let exchanges = run.exchanges();
    let flow = expected_auth_flow(&stack);
    assert_eq!(exchanges[..flow.len()], flow[..], "{}", run.stdout);
    assert_eq!(
        run.one("http")["www_authenticate"],
        missing_token_challenge(&stack)
    );
    assert_eq!(run.one("discovery"), &expected_discovery(&stack));
    // Then, with the token: `tools/list` and `tools/call` (2026-07-28 has no `initialize`,
    // no `notifications/initialized` and no GET stream; the retried probe was the 200 above).
    let rest = exchanges[flow.len()..].to_vec();
    let x = |m: &str, s: u16| (m.to_owned(), stack.mcp_url(), s);
    assert_eq!(rest, [x("POST", 200), x("POST", 200)], "{}", run.stdout);
    assert_eq!(run.all("discovery").len(), 1, "one token request");

    assert_eq!(run.one("tools"), &json!(["whoami", "set_note"]));
    assert_eq!(run.one("call"), "whoami");
    let me = tool_json(run.one("result"));
    // gatepass's identity for the client-credentials token (sub = client_id = mcp-client; the
    // token's scope as permissions), verified by the server against X-User-Assertion.
    let expires = me["expires"].as_u64().unwrap();
    assert!(
        (before..=now() + 600).contains(&expires),
        "X-User-Expires {expires}"
    );
    assert_eq!(
        me,
        json!({
            "id": "mcp-client",
            "username": "mcp-client",
            "role": "developer",
            "permissions": ["mcp:read"],
            "expires": expires,
        })
    );
    // The client asked for the scope the 401 named (mcp:read), not everything it may have.

    // mcp-client has mcp:write: the write tool works for it.
    let run = stack
        .mcp_client(
            MCP_CLIENT_ID,
            MCP_CLIENT_SECRET,
            None,
            Some(("set_note", json!({"text": "hello from the SDK"}))),
        )
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        tool_json(run.one("result")),
        json!({"saved": true, "id": "mcp-client", "note": "hello from the SDK"})
    );
    // Step-up: gatepass's 403 listed every scope set_note needs, the client got a token with
    // them and called again.
    let refusals: Vec<&Value> = run
        .all("http")
        .into_iter()
        .filter(|h| h["status"] == 403)
        .collect();
    assert_eq!(refusals.len(), 1, "{}", run.stdout);
    assert_eq!(refusals[0]["www_authenticate"], write_challenge(&stack));
    let tokens = run
        .exchanges()
        .into_iter()
        .filter(|(m, u, s)| m == "POST" && *u == stack.op().token_endpoint() && *s == 200)
        .count();
    assert_eq!(tokens, 2, "{}", run.stdout);

    // mcp-status polls the MCP server's /health as `demo_mcp_server`.
    let admin = token("mcp-admin", "admin");
    wait_for(
        Duration::from_secs(10),
        "demo_mcp_server healthy in mcp-status",
        || async {
            let r = client()
                .get(stack.url("/api/v1/mcps"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["mcps"].as_array().unwrap().iter().any(|m| {
                m["name"] == "demo_mcp_server"
                    && m["health_status"] == "healthy"
                    && m["status"] == "active"
            })
        },
    )
    .await;
}

#[tokio::test]
async fn wrong_audience_missing_scope_and_a_viewer_writing_are_refused() {
    let stack = mcp_stack().await;
    let op = stack.op();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});

    // A valid token of the same provider, for another resource: 401 under /mcp (the
    // resource's aud rule), with the metadata in the challenge.
    let other = op.token(RS256_RESOURCE).await;
    let (status, challenge, body) = post_mcp(&stack, &other, list.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        challenge.unwrap(),
        format!(
            r#"Bearer realm="gatepass", resource_metadata="{}", error="invalid_token", error_description="token audience is not accepted", scope="mcp:read""#,
            metadata_url(&stack)
        )
    );
    assert_eq!(
        body,
        json!({"error": "invalid_token", "error_description": "token audience is not accepted"})
    );
    // The same token is fine outside the resource (the issuer accepts that audience).
    let r = client()
        .get(stack.url("/echo/x"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A token for the resource but without any scope: gatepass's rule for /mcp needs
    // mcp:read, and its 403 says so.
    let bare = op.token_response(&stack.mcp_url(), None).await;
    assert!(bare.get("scope").is_none(), "{bare}");
    let (status, challenge, body) =
        post_mcp(&stack, bare["access_token"].as_str().unwrap(), list.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge.unwrap(),
        format!(
            r#"Bearer realm="gatepass", resource_metadata="{}", error="insufficient_scope", error_description="missing permissions for this route", scope="mcp:read""#,
            metadata_url(&stack)
        )
    );

    // The viewer (mcp:read only) through the SDK client: reading works, set_note is gatepass's
    // 403 insufficient_scope (its rule on Mcp-Name); the SDK asks for a token once more (for
    // the scopes the challenge lists), is refused that scope by the provider or gets the same
    // 403, then gives up.
    let run = stack
        .mcp_client(
            MCP_VIEWER_ID,
            MCP_VIEWER_SECRET,
            Some("mcp:read"),
            Some(("set_note", json!({"text": "not allowed"}))),
        )
        .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.one("tools"), &json!(["whoami", "set_note"]));
    assert_eq!(
        run.one("error"),
        &json!({"name": "SdkHttpError", "code": "CLIENT_HTTP_FORBIDDEN",
                "message": "Server returned 403 insufficient_scope after step-up re-authorization (retry limit 1 reached)"})
    );
    let refusals: Vec<&Value> = run
        .all("http")
        .into_iter()
        .filter(|h| h["status"] == 403)
        .collect();
    assert_eq!(refusals.len(), 2, "{}", run.stdout);
    for r in refusals {
        assert_eq!(r["url"], stack.mcp_url());
        assert_eq!(r["www_authenticate"], write_challenge(&stack));
    }
    let tokens = run
        .exchanges()
        .into_iter()
        .filter(|(m, u, s)| m == "POST" && *u == op.token_endpoint() && *s == 200)
        .count();
    assert_eq!(tokens, 2, "the first token and the upscoping attempt");
    assert!(run.all("result").is_empty(), "{}", run.stdout);

    // The same refusal by hand, with its body; whoami is fine for the viewer.
    let viewer = op.viewer_token(&stack.mcp_url()).await;
    let (status, challenge, body) =
        post_mcp(&stack, &viewer, call_tool("set_note", json!({"text": "x"}))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(challenge.unwrap(), write_challenge(&stack));
    assert_eq!(
        body,
        json!({"error": "insufficient_scope", "error_description": "missing permissions for this route"})
    );
    // Leaving Mcp-Name out to skip gatepass's rule gets the write nowhere either.
    let viewer_call = call_tool("set_note", json!({"text": "sneaky"}));
    let r = client()
        .post(stack.mcp_url())
        .bearer_auth(&viewer)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", REVISION)
        .header("mcp-method", "tools/call")
        .json(&{
            let mut b = viewer_call;
            b["params"]["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": REVISION,
                "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {},
            });
            b
        })
        .send()
        .await
        .unwrap();
    // gatepass's rule did not match (no Mcp-Name), so the server's own check on the body
    // refuses it.
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "insufficient_scope", "error_description": "set_note needs the mcp:write permission"})
    );
    let (status, _, body) = post_mcp(&stack, &viewer, call_tool("whoami", json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let me = tool_json(&body["result"]);
    assert_eq!(me["id"], "mcp-viewer");
    assert_eq!(me["permissions"], json!(["mcp:read"]));
}

#[tokio::test]
async fn identity_headers_without_gatepass_assertion_are_refused_by_the_server() {
    let stack = mcp_stack().await;
    let direct = format!("http://{}/mcp", stack.mcp_server_addr.as_ref().unwrap());
    // The headers gatepass set for a real token, as the echo backend saw them.
    let t = stack.op().token(&stack.mcp_url()).await;
    let r = client()
        .get(stack.url("/echo/identity"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    let header = |name: &str| values(&echoed, name).pop().unwrap_or_default();
    let identity: Vec<(&str, String)> = [
        "x-user-id",
        "x-user-username",
        "x-user-role",
        "x-user-permissions",
        "x-user-expires",
        "x-user-assertion",
    ]
    .into_iter()
    .map(|n| (n, header(n)))
    .collect();
    assert_eq!(identity[0].1, "mcp-client");
    assert!(!identity[5].1.is_empty(), "gatepass signed an assertion");

    // Straight to the server (not through Traefik), as the Host gatepass signed for.
    let send = |headers: Vec<(&'static str, String)>| {
        let mut req = client()
            .post(&direct)
            .header("host", &stack.web)
            .header("accept", "application/json, text/event-stream")
            .json(&call_tool("whoami", json!({})));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, challenge, r.json::<Value>().await.unwrap())
        }
    };
    let refused = |description: &str| {
        (
            401,
            Some(format!(
                r#"Bearer error="invalid_token", error_description="{description}""#
            )),
            json!({"error": "unauthorized", "error_description": description}),
        )
    };

    // The exact headers gatepass set: accepted (the control for the refusals below).
    let (status, _, body) = send(identity.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tool_json(&body["result"])["id"], "mcp-client");
    // Identity headers alone, no assertion.
    assert_eq!(
        send(identity[..5].to_vec()).await,
        refused("identity assertion missing")
    );
    // A forged user id next to the real assertion.
    let mut forged = identity.clone();
    forged[0].1 = "admin".into();
    assert_eq!(
        send(forged).await,
        refused("identity headers do not match the assertion")
    );
    // A forged permission.
    let mut forged = identity.clone();
    forged[3].1 = "mcp:read,mcp:write,mcp:admin".into();
    assert_eq!(
        send(forged).await,
        refused("identity headers do not match the assertion")
    );
    // A tampered signature.
    let mut forged = identity.clone();
    // (A character inside the signature, not its last one, whose low bits are padding.)
    let a = &mut forged[5].1;
    let at = a.len() - 10;
    let swapped = if &a[at..=at] == "A" { "B" } else { "A" };
    a.replace_range(at..=at, swapped);
    assert_eq!(
        send(forged).await,
        refused("identity assertion invalid (ERR_JWS_SIGNATURE_VERIFICATION_FAILED)")
    );
    // The assertion of another host (the server's own address as Host).
    let r = client()
        .post(&direct)
        .header("accept", "application/json, text/event-stream")
        .headers(
            identity
                .iter()
                .map(|(k, v)| {
                    (
                        http::HeaderName::from_static(k),
                        http::HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
        )
        .json(&call_tool("whoami", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized",
               "error_description": "identity assertion invalid (ERR_JWT_CLAIM_VALIDATION_FAILED)"})
    );
    // Its /health is public (mcp-status polls it).
    assert_eq!(
        gatepass_testkit::get_status(&format!(
            "http://{}/health",
            stack.mcp_server_addr.as_ref().unwrap()
        ))
        .await,
        200
    );
}
