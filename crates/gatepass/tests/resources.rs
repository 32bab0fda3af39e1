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
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}""#).as_str())
    );
    let g = validate(&s, Fwd::get("/mcp/tools?x=1").bearer("not.a.jwt")).await;
    g.assert_denied(401, "invalid_token");
    assert_eq!(
        g.h("www-authenticate"),
        Some(format!(r#"Bearer realm="gatepass", resource_metadata="{METADATA_URL}", error="invalid_token", error_description="token is malformed""#).as_str())
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
}
