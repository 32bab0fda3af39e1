//! OAuth Protected Resource Metadata (RFC 9728) for MCP servers behind gatepass (SPEC §8): the
//! metadata document, the challenges under a resource's path, the audience rule and the
//! scope of a 403.

mod common;

use common::*;
use serde_json::json;

const RESOURCE: &str = "https://mcp.example.test/mcp";

fn config() -> String {
    format!(
        r#"{}
[[rules]]
path = "/mcp/admin"
permissions = ["mcp:read", "mcp:write"]

[[resources]]
resource = "{RESOURCE}"
path = "/mcp"
authorization_servers = ["https://auth.example.test"]
scopes_supported = ["mcp:read", "mcp:write"]
"#,
        base_config()
    )
}

fn for_resource(sub: &str, aud: serde_json::Value) -> String {
    let mut c = claims(sub, "admin");
    c["aud"] = aud;
    hs(&c)
}

const METADATA_URL: &str = "http://app.test:8080/.well-known/oauth-protected-resource/mcp";

#[tokio::test]
async fn the_metadata_document() {
    let s = start(&config()).await;
    let r = s.get("/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), Some("application/json"));
    assert_eq!(r.h("cache-control"), Some("public, max-age=300"));
    assert_eq!(
        r.json(),
        json!({
            "resource": RESOURCE,
            "authorization_servers": ["https://auth.example.test"],
            "scopes_supported": ["mcp:read", "mcp:write"],
            "bearer_methods_supported": ["header"],
        })
    );
    assert_eq!(
        s.get("/.well-known/oauth-protected-resource/other")
            .await
            .status,
        404
    );
    assert_eq!(
        s.get("/.well-known/oauth-protected-resource").await.status,
        404
    );
}

#[tokio::test]
async fn challenges_under_the_resource_name_its_metadata() {
    let s = start(&config()).await;
    let g = validate(&s, Fwd::get("/mcp")).await;
    g.assert_denied(401, "unauthorized");
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", scope="mcp:read mcp:write""#).as_str())
    );
    let g = validate(&s, Fwd::get("/mcp/tools?x=1").bearer("not.a.jwt")).await;
    g.assert_denied(401, "invalid_token");
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", error="invalid_token", error_description="token is malformed", scope="mcp:read mcp:write""#).as_str())
    );
    // https when Traefik says so; nothing about resources outside the path.
    let g = validate(
        &s,
        Fwd::get("/mcp")
            .without("X-Forwarded-Proto")
            .h("X-Forwarded-Proto", "https"),
    )
    .await;
    assert!(g
        .h("www-authenticate")
        .unwrap()
        .contains("resource_metadata=\"https://app.test:8080/"));
    let g = validate(&s, Fwd::get("/mcpx")).await;
    assert_eq!(g.h("www-authenticate"), Some(r#"Bearer realm="gatepass""#));
    // A host that can't go into a quoted parameter: no resource_metadata at all.
    let g = validate(
        &s,
        Fwd::get("/mcp")
            .without("X-Forwarded-Host")
            .h("X-Forwarded-Host", "evil\",x=\"y"),
    )
    .await;
    assert_eq!(g.h("www-authenticate"), Some(r#"Bearer realm="gatepass""#));
}

#[tokio::test]
async fn tokens_must_name_the_resource_in_aud() {
    let s = start(&config()).await;
    let good = for_resource("ann", json!(["https://other.test", RESOURCE]));
    assert_status(&s, Fwd::get("/mcp").bearer(&good), 200).await;
    let string_aud = for_resource("ann", json!(RESOURCE));
    assert_status(&s, Fwd::get("/mcp").bearer(&string_aud), 200).await;
    for bad in [
        for_resource("ann", json!("https://other.test")),
        user("ann", "admin"),
    ] {
        let g = validate(&s, Fwd::get("/mcp").bearer(&bad)).await;
        g.assert_denied_with(401, "invalid_token", "token audience is not accepted");
        assert!(g.h("www-authenticate").unwrap().contains(METADATA_URL));
        // The same token outside the resource is fine.
        assert_status(&s, Fwd::get("/x").bearer(&bad), 200).await;
    }
}

#[tokio::test]
async fn a_missing_permission_names_the_scope() {
    let s = start(&config()).await;
    let reader = {
        let mut c = claims("ben", "admin");
        c["aud"] = json!(RESOURCE);
        c["permissions"] = json!(["mcp:read"]);
        hs(&c)
    };
    let g = validate(&s, Fwd::new("POST", "/mcp/admin").bearer(&reader)).await;
    g.assert_denied(403, "insufficient_scope");
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", error="insufficient_scope", error_description="missing permissions for this route", scope="mcp:read mcp:write""#).as_str())
    );
}

#[test]
fn resource_config_errors_name_the_key() {
    let err = |extra: &str| {
        gatepass::Config::parse(&format!("{}\n[[resources]]\n{extra}\n", base_config()))
            .unwrap_err()
            .to_string()
    };
    let ok = "resource = \"https://m.test/mcp\"\npath = \"/mcp\"\nauthorization_servers = [\"https://a.test\"]";
    assert_eq!(
        err(&ok.replace("https://m.test/mcp", "mcp")),
        "config error: resources[0].resource: must be the resource's absolute http(s) URI, like https://mcp.example.com/mcp"
    );
    assert_eq!(
        err(&ok.replace("\"/mcp\"", "\"mcp\"")),
        "config error: resources[0].path: must be a path prefix like /mcp (not `/`, no query, no percent-encoding)"
    );
    assert_eq!(
        err(&ok.replace("[\"https://a.test\"]", "[]")),
        "config error: resources[0].authorization_servers: must list at least one issuer URL"
    );
    assert_eq!(
        err(&format!("{ok}\n[[resources]]\n{ok}")),
        "config error: resources[1].path: `/mcp` is listed twice"
    );
    assert_eq!(
        err(&format!("{ok}\nscopes_supported = [\"mcp:read\", \"offline_access\"]")),
        "config error: resources[0].scopes_supported: must not list offline_access (a scope of the authorization server, not of the resource)"
    );
    assert_eq!(
        err(&format!("{ok}\nallowed_origins = [\"app.test\"]")),
        "config error: resources[0].allowed_origins: `app.test` is not an origin like https://app.example.com"
    );
    let rule_err = |rule: &str| {
        gatepass::Config::parse(&format!("{}\n[[rules]]\n{rule}\n", base_config()))
            .and_then(|c| gatepass::App::new(c).map(|_| ()))
            .unwrap_err()
            .to_string()
    };
    let e = rule_err("path = \"/mcp\"\nmcp_methods = []");
    assert!(
        e.starts_with("config error: rules[")
            && e.ends_with(
                "].mcp_methods: must list values like tools/call or set_note (visible ASCII)"
            ),
        "{e}"
    );
    let e = rule_err("path = \"/mcp\"\nanonymous = true\nmcp_names = [\"whoami\"]");
    assert!(
        e.ends_with("].anonymous: an anonymous rule cannot match MCP operations (nothing would check the headers)"),
        "{e}"
    );
}

/// MCP authorization 2026-07-28 (SPEC §10): one tool needs `mcp:write` by a rule on the MCP
/// headers, the rest `mcp:read`; a 401 names the scope; a 403 lists every scope the operation
/// needs; old protocol versions can't skip the rule; tokens only in the header; origins.
fn mcp_config() -> String {
    format!(
        r#"{}
[[rules]]
path = "/mcp"
mcp_methods = ["tools/call"]
mcp_names = ["set_note"]
permissions = ["mcp:read", "mcp:write"]

[[rules]]
path = "/mcp"
permissions = ["mcp:read"]

[[resources]]
resource = "{RESOURCE}"
path = "/mcp"
authorization_servers = ["https://auth.example.test"]
scopes_supported = ["mcp:read", "mcp:write"]
allowed_origins = ["https://app.example.test"]
"#,
        base_config()
    )
}

/// A POST to /mcp as a 2026-07-28 client sends it.
fn mcp_call(method: &str, name: Option<&str>) -> Fwd {
    let f = Fwd::new("POST", "/mcp")
        .h("MCP-Protocol-Version", "2026-07-28")
        .h("Mcp-Method", method);
    match name {
        Some(n) => f.h("Mcp-Name", n),
        None => f,
    }
}

fn with_scope(scope: &[&str]) -> String {
    let mut c = claims("mo", "developer");
    c["aud"] = json!(RESOURCE);
    c["permissions"] = json!(scope);
    hs(&c)
}

#[tokio::test]
async fn one_tool_needs_more_scope_by_a_rule_on_the_mcp_headers() {
    let s = start(&mcp_config()).await;
    let reader = with_scope(&["mcp:read"]);
    let writer = with_scope(&["mcp:read", "mcp:write"]);
    assert_status(&s, mcp_call("tools/list", None).bearer(&reader), 200).await;
    assert_status(
        &s,
        mcp_call("tools/call", Some("whoami")).bearer(&reader),
        200,
    )
    .await;
    let g = validate(&s, mcp_call("tools/call", Some("set_note")).bearer(&reader)).await;
    g.assert_denied_with(
        403,
        "insufficient_scope",
        "missing permissions for this route",
    );
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", error="insufficient_scope", error_description="missing permissions for this route", scope="mcp:read mcp:write""#).as_str())
    );
    assert_status(
        &s,
        mcp_call("tools/call", Some("set_note")).bearer(&writer),
        200,
    )
    .await;
    // A 401 names the scope of the matched rule (the resource's for no rule's).
    let g = validate(&s, mcp_call("tools/call", Some("set_note"))).await;
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", scope="mcp:read mcp:write""#).as_str())
    );
    let g = validate(&s, mcp_call("tools/list", None)).await;
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            format!(
                r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", scope="mcp:read""#
            )
            .as_str()
        )
    );
    // An older or missing protocol version could leave Mcp-Name out: 400 under the path.
    for f in [
        Fwd::new("POST", "/mcp").bearer(&reader),
        mcp_call("tools/call", Some("set_note"))
            .without("MCP-Protocol-Version")
            .h("MCP-Protocol-Version", "2025-11-25")
            .bearer(&writer),
        mcp_call("tools/list", None)
            .without("MCP-Protocol-Version")
            .bearer(&reader),
        mcp_call("tools/list", None)
            .without("MCP-Protocol-Version")
            .h("MCP-Protocol-Version", "DRAFT-2026-v1")
            .bearer(&reader),
    ] {
        validate(&s, f).await.assert_denied_with(
            400,
            "invalid_request",
            "this resource needs MCP-Protocol-Version 2026-07-28 or later",
        );
    }
    // A later revision passes; outside the path nothing changes.
    let later = mcp_call("tools/list", None)
        .without("MCP-Protocol-Version")
        .h("MCP-Protocol-Version", "2027-01-15");
    assert_status(&s, later.bearer(&reader), 200).await;
    assert_status(&s, Fwd::get("/x").bearer(&user("u", "admin")), 200).await;
}

#[tokio::test]
async fn tokens_for_a_resource_go_in_the_authorization_header() {
    let s = start(&mcp_config()).await;
    let reader = with_scope(&["mcp:read"]);
    for f in [
        mcp_call("tools/list", None).h("Cookie", &format!("access_token={reader}")),
        Fwd::upgrade("/mcp/ws")
            .h("MCP-Protocol-Version", "2026-07-28")
            .h("Sec-WebSocket-Protocol", &format!("jwt-auth, {reader}")),
        Fwd::upgrade("/mcp/ws?ticket=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
            .h("MCP-Protocol-Version", "2026-07-28"),
    ] {
        let g = validate(&s, f).await;
        g.assert_denied_with(
            401,
            "invalid_request",
            "tokens for this resource go in the Authorization header",
        );
        assert!(g.h("www-authenticate").unwrap().contains(METADATA_URL));
    }
    // The same cookie elsewhere is a token as before.
    assert_status(
        &s,
        Fwd::get("/x").h("Cookie", &format!("access_token={}", user("u", "admin"))),
        200,
    )
    .await;
}

#[tokio::test]
async fn origins_under_a_resource_are_its_own() {
    let s = start(&mcp_config()).await;
    let reader = with_scope(&["mcp:read"]);
    let g = validate(
        &s,
        mcp_call("tools/list", None)
            .bearer(&reader)
            .h("Origin", "https://evil.test"),
    )
    .await;
    g.assert_denied_with(403, "access_denied", "origin not allowed for this resource");
    let ok = mcp_call("tools/list", None)
        .bearer(&reader)
        .h("Origin", "https://app.example.test");
    assert_status(&s, ok, 200).await;
    // No Origin (a non-browser client) passes.
    assert_status(&s, mcp_call("tools/list", None).bearer(&reader), 200).await;
}

/// With DPoP on for the authorization server, the metadata says so (SPEC §10).
#[tokio::test]
async fn the_metadata_names_the_dpop_algorithms() {
    let cfg = format!(
        "{}\n[[resources]]\nresource = \"{RESOURCE}\"\npath = \"/mcp\"\nauthorization_servers = [\"https://auth.example.test\"]\n",
        base_config().replace("leeway = \"5s\"", "leeway = \"5s\"\ndpop = \"required\"\ndpop_algorithms = [\"ES256\", \"EdDSA\"]")
    );
    let s = start(&cfg).await;
    let r = s.get("/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(
        r.json(),
        json!({
            "resource": RESOURCE,
            "authorization_servers": ["https://auth.example.test"],
            "scopes_supported": [],
            "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
            "dpop_bound_access_tokens_required": true,
        })
    );
}
