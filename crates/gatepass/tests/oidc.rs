//! gatepass against a real OpenID Provider (npm `oidc-provider`, started by the test): OIDC
//! discovery, exact issuer match, key rotation and retirement, `[state] dir` across an IdP
//! outage, opaque tokens by introspection, the rfc9068 profile, and back-channel logout with
//! the provider's own logout tokens (SPEC §6, §7).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatepass_testkit::oidc::{self, OidcProvider};
use gatepass_testkit::{metric, now};

const RESOURCES: &str =
    r#"["https://api.test/rs256", "https://api.test/es256", "https://api.test/eddsa"]"#;

/// An issuer `oidc` on `op` by discovery, rfc9068, plus `extra` (more tables).
fn config(op: &OidcProvider, issuer_extra: &str, extra: &str) -> String {
    format!(
        r#"[[issuers]]
name = "oidc"
issuer = "{iss}"
discovery = true
algorithms = ["RS256", "ES256", "EdDSA"]
audiences = {RESOURCES}
profile = "rfc9068"
leeway = "5s"
{issuer_extra}

[jwks]
refresh_interval = "1s"
min_refresh_interval = "1s"
fetch_timeout = "1s"
# Bounds the refresh whatever max-age the provider sends (at most stale_for / 2).
stale_for = "10s"

[claims]
user_id = ["sub", "client_id"]

{extra}
"#,
        iss = op.issuer()
    )
}

async fn ready(s: &Server) {
    wait_for(Duration::from_secs(10), "gatepass ready", || async {
        s.get("/readyz").await.status == 200
    })
    .await;
}

#[tokio::test]
async fn discovery_and_every_algorithm() {
    let op = OidcProvider::start();
    let s = start(&config(&op, "", "")).await;
    ready(&s).await;
    for resource in [
        oidc::RS256_RESOURCE,
        oidc::ES256_RESOURCE,
        oidc::EDDSA_RESOURCE,
    ] {
        let t = op.token(resource).await;
        let g = validate(&s, Fwd::get("/x").bearer(&t)).await;
        assert_eq!(g.status, 200, "{resource}: {}", g.body);
        assert_eq!(g.h("x-user-id"), Some(oidc::MCP_CLIENT_ID));
    }
    // A token for a resource that is not an audience here.
    let t = op.token(oidc::MCP_RESOURCE).await;
    validate(&s, Fwd::get("/x").bearer(&t))
        .await
        .assert_denied_with(401, "invalid_token", "token audience is not accepted");
}

#[tokio::test]
async fn the_discovery_issuer_must_match_exactly() {
    let op = OidcProvider::start();
    let (dir, path) = gatepass_testkit::config_dir(
        "gatepass.toml",
        &config(&op, "", "").replace(
            &format!("\"{}\"", op.issuer()),
            &format!("\"{}/\"", op.issuer()),
        ),
        &[],
        |_| {},
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatepass"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let want = format!(
        "discovery document names issuer `{iss}`, configured `{iss}/`: they must be equal",
        iss = op.issuer()
    );
    let found = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(&want))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !found.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    gatepass_testkit::kill(&mut child);
    let line = found.join().unwrap();
    assert!(line.is_some(), "no log line naming both issuers");
    drop(dir);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_retired_ones_dropped() {
    let op = OidcProvider::start();
    // No token cache: a verification from before the retirement would keep answering.
    let s = start(&config(&op, "", "[cache]\nttl = \"0ms\"\n")).await;
    ready(&s).await;
    let before = op.token(oidc::RS256_RESOURCE).await;
    let unused_old = op.token(oidc::RS256_RESOURCE).await;
    assert_status(&s, Fwd::get("/x").bearer(&before), 200).await;
    op.rotate().await;
    // A token with the new kid: an unknown kid makes gatepass refetch (at most once per
    // min_refresh_interval, 1s here).
    let rotated = op.token(oidc::RS256_RESOURCE).await;
    wait_for(Duration::from_secs(5), "the new key picked up", || async {
        status_of(&s, Fwd::get("/x").bearer(&rotated)).await == 200
    })
    .await;
    op.retire().await;
    // The old key is gone from the JWKS: a token signed with it (never cached) stops verifying.
    wait_for(
        Duration::from_secs(10),
        "the retired key dropped",
        || async { status_of(&s, Fwd::get("/x").bearer(&unused_old)).await == 401 },
    )
    .await;
    assert_status(&s, Fwd::get("/x").bearer(&rotated), 200).await;
}

#[tokio::test]
async fn a_saved_state_dir_survives_a_restart_during_an_idp_outage() {
    let mut op = OidcProvider::start();
    let state = tempfile::tempdir().unwrap();
    let extra = format!("[state]\ndir = \"{}\"\n", state.path().display());
    let s = start(&config(&op, "", &extra)).await;
    ready(&s).await;
    let t = op.token(oidc::ES256_RESOURCE).await;
    assert_status(&s, Fwd::get("/x").bearer(&t), 200).await;
    let saved = state.path().join("oidc.json");
    wait_for(Duration::from_secs(5), "the state saved", || async {
        saved.exists()
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    s.shutdown().await;
    op.stop();

    // The IdP down, gatepass restarted: the saved copy verifies, and says so.
    let again = start(&config(&op, "", &extra)).await;
    ready(&again).await;
    let r = again.get("/readyz").await;
    assert_eq!(
        r.json()["keys_from_saved_state"],
        serde_json::json!(["oidc"])
    );
    assert_status(&again, Fwd::get("/x").bearer(&t), 200).await;
    let m = again.get("/metrics").await.body;
    assert_eq!(
        metric(&m, r#"gatepass_jwks_from_saved_state{issuer="oidc"}"#),
        1.0
    );

    // No saved state and the IdP down: not ready, requests 503.
    let fresh = start(&config(&op, "", "")).await;
    wait_for(Duration::from_secs(5), "a fetch attempt", || async {
        metric(
            &fresh.get("/metrics").await.body,
            r#"gatepass_jwks_fetches_total{issuer="oidc",result="error"}"#,
        ) >= 1.0
    })
    .await;
    let r = fresh.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["issuers_without_keys"],
        serde_json::json!(["oidc"])
    );
    validate(&fresh, Fwd::get("/x").bearer(&t))
        .await
        .assert_denied(503, "temporarily_unavailable");

    // The IdP back: live keys, no longer from the saved state.
    op.restart();
    wait_for(Duration::from_secs(10), "live keys again", || async {
        again
            .get("/readyz")
            .await
            .json()
            .get("keys_from_saved_state")
            .is_none()
    })
    .await;
}

fn introspecting(op: &OidcProvider) -> String {
    let (id, _) = op.introspection_client();
    format!("introspection_client_id = \"{id}\"\nintrospection_secret_file = \"introspection.key\"")
}

async fn introspection_server(op: &OidcProvider, extra: &str) -> Server {
    let (_, secret) = op.introspection_client();
    let s = start_with(&config(op, &introspecting(op), extra), |d| {
        std::fs::write(d.join("introspection.key"), format!("{secret}\n")).unwrap()
    })
    .await;
    ready(&s).await;
    s
}

#[tokio::test]
async fn opaque_tokens_by_introspection() {
    let mut op = OidcProvider::start();
    let s = introspection_server(&op, "[cache]\nttl = \"1s\"\nnegative_ttl = \"30s\"\n").await;
    let t = op.token(oidc::OPAQUE_RESOURCE).await;
    assert!(!t.contains('.'), "an opaque token");
    let g = validate(&s, Fwd::get("/x").bearer(&t)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.h("x-user-id"), Some(oidc::MCP_CLIENT_ID));
    let calls = |m: &str| metric(m, r#"gatepass_introspections_total{result="active"}"#);
    // Repeated and concurrent: one call (cached).
    let many: Vec<_> = (0..10)
        .map(|_| Fwd::get("/x").bearer(&t).spawn_status(&s))
        .collect();
    for h in many {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(calls(&s.get("/metrics").await.body), 1.0);

    // Revoked at the IdP: refused once the positive answer (ttl 1s) has expired.
    op.revoke(&t).await;
    wait_for(Duration::from_secs(5), "the revocation seen", || async {
        status_of(&s, Fwd::get("/x").bearer(&t)).await == 401
    })
    .await;
    validate(&s, Fwd::get("/x").bearer(&t))
        .await
        .assert_denied_with(401, "invalid_token", "token is not active");
    // The inactive answer is cached (negative_ttl): no new call.
    let inactive = |m: &str| metric(m, r#"gatepass_introspections_total{result="inactive"}"#);
    let n = inactive(&s.get("/metrics").await.body);
    assert_status(&s, Fwd::get("/x").bearer(&t), 401).await;
    assert_eq!(inactive(&s.get("/metrics").await.body), n);

    // The endpoint down: 503, fast, for a token never seen.
    let unseen = op.token(oidc::OPAQUE_RESOURCE).await;
    op.stop();
    let started = Instant::now();
    validate(&s, Fwd::get("/x").bearer(&unseen))
        .await
        .assert_denied_with(
            503,
            "temporarily_unavailable",
            "token introspection is unavailable",
        );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // JWTs still verify with the keys already fetched.
    let _ = now();
}

#[tokio::test]
async fn backchannel_logout_with_the_providers_logout_token() {
    let op = OidcProvider::start();
    let issuer_extra = "backchannel_logout_audience = \"mcp-client\"";
    let s = start(&config(&op, issuer_extra, "")).await;
    ready(&s).await;
    let t = op.token(oidc::RS256_RESOURCE).await;
    assert_status(&s, Fwd::get("/x").bearer(&t), 200).await;
    // The logout token's iat must be after the access token's.
    let issued = now();
    wait_for(Duration::from_secs(3), "the next second", || async {
        now() > issued
    })
    .await;
    let lt = op
        .logout_token(Some(oidc::MCP_CLIENT_ID), None, oidc::MCP_CLIENT_ID)
        .await;
    let r = client()
        .post(s.url("/backchannel-logout"))
        .form(&[("logout_token", lt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    validate(&s, Fwd::get("/x").bearer(&t))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    let replay = client()
        .post(s.url("/backchannel-logout"))
        .form(&[("logout_token", lt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    // A logout token for another client (aud) is refused.
    let other = op.logout_token(Some("x"), Some("s"), "someone-else").await;
    let r = client()
        .post(s.url("/backchannel-logout"))
        .form(&[("logout_token", other.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
