//! The dashboard in a real browser (Debian Chromium driven by playwright-core), through the
//! real Traefik stack: a token is supplied, the header counters come with the initial status,
//! "last check" follows the health checks, a status row changes when a demo MCP flips, an admin
//! disables and enables it, and refused tokens (garbage: 401, viewer: 403) get a clear message
//! and no retry loop, and a session revoked while connected is shown as such, without a retry
//! loop. See tests/browser/dashboard.mjs for the steps.

use std::process::Command;

use gatepass_e2e::*;

#[tokio::test]
async fn dashboard_shows_a_status_change_in_chromium() {
    let node_modules = require(
        root().join("tests/browser/node_modules/playwright-core"),
        "run `make test` (it runs npm ci in tests/browser)",
    );
    let chromium = require(
        "/usr/bin/chromium".into(),
        "run `make test` (it installs Debian's chromium)",
    );
    assert!(node_modules.exists());
    let stack = Stack::start().await;
    // The revocation step needs mcp-status on gatepass's feed.
    stack.wait_feed_up().await;
    let shot = stack.dir.path().join("dashboard.png");
    let out = tokio::task::spawn_blocking({
        let url = stack.url("/");
        let viewer = token("browser-viewer", "viewer");
        let token = token("browser", "admin");
        let admin = token.clone();
        // A separate user whose token (with a jti) the script revokes.
        let mut claims = gatepass_testkit::claims(ISS, "browser-revoked", "developer");
        claims["jti"] = "browser-revoked-jti".into();
        let revoked = gatepass_testkit::hs256(SECRET, &claims);
        let down = format!("{}/down", stack.demo_url);
        let up = format!("{}/up", stack.demo_url);
        let shot = shot.clone();
        move || {
            Command::new("node")
                .arg(root().join("tests/browser/dashboard.mjs"))
                .env("DASHBOARD_URL", url)
                .env("TOKEN", token)
                .env("VIEWER_TOKEN", viewer)
                .env("FLIP_DOWN_URL", down)
                .env("FLIP_UP_URL", up)
                .env("REVOKED_TOKEN", revoked)
                .env("REVOKED_JTI", "browser-revoked-jti")
                .env("ADMIN_TOKEN", admin)
                .env("CHROMIUM", chromium)
                .env("SCREENSHOT", shot)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The measured latency, for the test log.
    for line in stderr.lines().filter(|l| l.starts_with("revocation ->")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\n{}",
        stack.logs()
    );
    assert!(
        stdout.contains("ok: dashboard connected, row changed on flip, ticket path works, refusals shown, admin controls work, revocation shown"),
        "{stdout}"
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot"
    );
    if let Ok(dir) = std::env::var("E2E_ARTIFACTS") {
        let _ = std::fs::copy(&shot, std::path::Path::new(&dir).join("dashboard.png"));
    }
}
