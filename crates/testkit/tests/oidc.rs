//! The OpenID Provider wrapper against the real `oidc-provider` (installed by `make test`).

use gatepass_testkit::oidc::{
    OidcProvider, EDDSA_RESOURCE, ES256_RESOURCE, GATEPASS_CLIENT_ID, MCP_CLIENT_ID,
    MCP_CLIENT_SECRET, MCP_RESOURCE, MCP_VIEWER_ID, MCP_VIEWER_SECRET, OPAQUE_RESOURCE,
    RS256_RESOURCE, SCOPES, VIEWER_SCOPES,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Verifies `token` against the provider's current JWKS (by `kid`) for `aud`; its claims.
async fn verify(idp: &OidcProvider, token: &str, alg: Algorithm, aud: &str) -> Value {
    let jwks: JwkSet = serde_json::from_value(idp.jwks().await).unwrap();
    let kid = decode_header(token).unwrap().kid.expect("kid");
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("{kid} in the JWKS"));
    let mut v = Validation::new(alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[idp.issuer()]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap_or_else(|e| panic!("{token} verifies: {e}"))
        .claims
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn discovery_names_the_issuer_exactly_and_the_endpoints() {
    let idp = OidcProvider::start();
    let d = idp.discovery().await;
    assert_eq!(d["issuer"], idp.issuer());
    assert!(!idp.issuer().ends_with('/'));
    assert_eq!(d["jwks_uri"], idp.jwks_uri());
    assert_eq!(d["token_endpoint"], idp.token_endpoint());
    assert_eq!(d["introspection_endpoint"], idp.introspection_endpoint());
    assert_eq!(d["revocation_endpoint"], idp.revocation_endpoint());
    assert_eq!(d["backchannel_logout_supported"], true);
    let grants = d["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&"client_credentials".into()), "{grants:?}");
    assert_eq!(
        idp.introspection_client().0,
        GATEPASS_CLIENT_ID,
        "gatepass introspects"
    );
}

#[tokio::test]
async fn jwt_access_tokens_are_at_jwt_per_alg_and_verify_against_the_jwks() {
    let idp = OidcProvider::start();
    for (resource, alg) in [
        (RS256_RESOURCE, Algorithm::RS256),
        (ES256_RESOURCE, Algorithm::ES256),
        (EDDSA_RESOURCE, Algorithm::EdDSA),
        (MCP_RESOURCE, Algorithm::RS256),
    ] {
        let token = idp.token(resource).await;
        let h = decode_header(&token).unwrap();
        assert_eq!(h.typ.as_deref(), Some("at+jwt"), "{resource}");
        assert_eq!(h.alg, alg, "{resource}");
        let c = verify(&idp, &token, alg, resource).await;
        assert_eq!(c["aud"], resource);
        assert_eq!(c["client_id"], MCP_CLIENT_ID);
        assert_eq!(c["sub"], MCP_CLIENT_ID);
        assert_eq!(c["scope"], SCOPES);
        assert!(c["jti"].is_string());
    }
    // A scope subset is honoured; an unknown resource is refused (invalid_target).
    let r = idp.token_response(MCP_RESOURCE, Some("mcp:read")).await;
    assert_eq!(r["scope"], "mcp:read");
    let resp = gatepass_testkit::client()
        .post(idp.token_endpoint())
        .basic_auth(
            MCP_CLIENT_ID,
            Some(gatepass_testkit::oidc::MCP_CLIENT_SECRET),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://unknown.test"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_target");
}

#[tokio::test]
async fn extra_resources_and_the_read_only_viewer_client() {
    let extra = "http://127.0.0.1:1/mcp";
    let idp = OidcProvider::start_with_resources(&[extra]);
    // An extra resource: RS256 at+jwt with aud = the URI, like MCP_RESOURCE.
    let token = idp.token(extra).await;
    let h = decode_header(&token).unwrap();
    assert_eq!(h.typ.as_deref(), Some("at+jwt"));
    assert_eq!(h.alg, Algorithm::RS256);
    let c = verify(&idp, &token, Algorithm::RS256, extra).await;
    assert_eq!(c["aud"], extra);
    assert_eq!(c["scope"], SCOPES);
    assert_eq!(c["sub"], MCP_CLIENT_ID);
    // The fixed ones still work; a provider without the extra one refuses it.
    idp.token(MCP_RESOURCE).await;
    let plain = OidcProvider::start();
    let (status, body) = plain
        .client_token_request(MCP_CLIENT_ID, MCP_CLIENT_SECRET, extra, Some(SCOPES))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target"))
    );

    // mcp-viewer: mcp:read only; asking for mcp:write is refused.
    let viewer = idp.viewer_token(extra).await;
    let c = verify(&idp, &viewer, Algorithm::RS256, extra).await;
    assert_eq!(c["scope"], VIEWER_SCOPES);
    assert_eq!(c["client_id"], MCP_VIEWER_ID);
    assert_eq!(c["sub"], MCP_VIEWER_ID);
    let (status, body) = idp
        .client_token_request(MCP_VIEWER_ID, MCP_VIEWER_SECRET, extra, Some(SCOPES))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    let (status, body) = idp
        .client_token_request(MCP_VIEWER_ID, "wrong", extra, Some(VIEWER_SCOPES))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

#[tokio::test]
async fn an_opaque_token_introspects_active_then_inactive_after_revocation() {
    let idp = OidcProvider::start();
    let token = idp.token(OPAQUE_RESOURCE).await;
    assert!(decode_header(&token).is_err(), "opaque, not a JWT: {token}");
    let i = idp.introspect(&token).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["aud"], OPAQUE_RESOURCE);
    assert_eq!(i["client_id"], MCP_CLIENT_ID);
    assert_eq!(i["iss"], idp.issuer());
    assert_eq!(i["scope"], SCOPES);
    assert_eq!(i["token_type"], "Bearer");
    idp.revoke(&token).await;
    assert_eq!(idp.introspect(&token).await["active"], false);
    assert_eq!(idp.introspect("not-a-token").await["active"], false);
    // Introspection needs the client's secret.
    let resp = gatepass_testkit::client()
        .post(idp.introspection_endpoint())
        .basic_auth(GATEPASS_CLIENT_ID, Some("wrong"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn rotate_adds_a_first_rs256_key_and_retire_drops_the_old_ones() {
    let idp = OidcProvider::start();
    let before = idp.kids().await;
    let algs: Vec<&str> = before.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(algs, ["RS256", "ES256", "EdDSA"]);
    let old_token = idp.token(RS256_RESOURCE).await;
    let old_opaque = idp.token(OPAQUE_RESOURCE).await;

    let rotated = idp.rotate().await;
    assert_eq!(rotated.len(), 4);
    assert_eq!(rotated[0].1, "RS256");
    assert!(!before.contains(&rotated[0]), "a new kid");
    assert_eq!(rotated[1..], before[..]);
    assert_eq!(idp.kids().await, rotated);
    let published: Vec<String> = idp.jwks().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published.len(), 4);
    assert!(published.contains(&rotated[0].0));
    let new_token = idp.token(RS256_RESOURCE).await;
    assert_eq!(
        decode_header(&new_token).unwrap().kid,
        Some(rotated[0].0.clone())
    );
    verify(&idp, &old_token, Algorithm::RS256, RS256_RESOURCE).await;
    verify(&idp, &new_token, Algorithm::RS256, RS256_RESOURCE).await;
    assert_eq!(idp.introspect(&old_opaque).await["active"], true, "kept");

    let retired = idp.retire().await;
    assert_eq!(
        retired,
        [rotated[0].clone(), before[1].clone(), before[2].clone()]
    );
    let jwks = idp.jwks().await.to_string();
    assert!(!jwks.contains(&before[0].0), "old RS256 key gone");
    verify(&idp, &new_token, Algorithm::RS256, RS256_RESOURCE).await;
}

#[tokio::test]
async fn logout_tokens_carry_the_back_channel_logout_claims() {
    let idp = OidcProvider::start();
    let t = idp
        .logout_token(Some("alice"), Some("sid-1"), GATEPASS_CLIENT_ID)
        .await;
    let h = decode_header(&t).unwrap();
    assert_eq!(h.typ.as_deref(), Some("logout+jwt"));
    assert_eq!(h.alg, Algorithm::RS256);
    assert_eq!(h.kid.as_deref(), Some(idp.kids().await[0].0.as_str()));
    let c = verify(&idp, &t, Algorithm::RS256, GATEPASS_CLIENT_ID).await;
    assert_eq!(c["iss"], idp.issuer());
    assert_eq!(c["aud"], GATEPASS_CLIENT_ID);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["sid"], "sid-1");
    assert!(c["jti"].is_string() && c["iat"].is_u64());
    assert!(c.get("nonce").is_none());
    assert_eq!(
        c["events"],
        serde_json::json!({ "http://schemas.openid.net/event/backchannel-logout": {} })
    );
    let only_sid = idp.logout_token(None, Some("sid-2"), "rp").await;
    let c = verify(&idp, &only_sid, Algorithm::RS256, "rp").await;
    assert!(c.get("sub").is_none());
    assert_eq!(c["sid"], "sid-2");
    let only_sub = idp.logout_token(Some("bob"), None, "rp").await;
    let c = verify(&idp, &only_sub, Algorithm::RS256, "rp").await;
    assert!(c.get("sid").is_none());
    assert_eq!(c["sub"], "bob");
    assert_ne!(decode_header(&only_sid).unwrap().kid, None, "names its key");
}

#[tokio::test]
async fn stop_closes_the_port_and_restart_serves_the_same_keys_on_it() {
    let mut idp = OidcProvider::start();
    let issuer = idp.issuer();
    idp.rotate().await;
    let kids = idp.kids().await;
    let jwks = idp.jwks().await;
    let token = idp.token(MCP_RESOURCE).await;

    let status = idp.stop().expect("exits on SIGTERM");
    assert!(status.success(), "clean exit: {status}\n{}", idp.log());
    assert!(!port_open(idp.port()), "port closed");
    assert!(idp.stop().is_none(), "stop twice is harmless");

    idp.restart();
    assert_eq!(idp.issuer(), issuer);
    assert_eq!(idp.kids().await, kids);
    assert_eq!(idp.jwks().await, jwks);
    verify(&idp, &token, Algorithm::RS256, MCP_RESOURCE).await;
    let again = idp.token(MCP_RESOURCE).await;
    assert_eq!(decode_header(&again).unwrap().kid, Some(kids[0].0.clone()));
    assert_eq!(idp.discovery().await["issuer"], issuer);

    let port = idp.port();
    drop(idp);
    assert!(!port_open(port), "drop stops it");
}
