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
    let stack = Stack::start().await;
    // The revocation step needs mcp-status on gatepass's feed.
    stack.wait_feed_up().await;
    let shot = stack.dir.path().join("dashboard.png");
    let admin = token("browser", "admin");
    // A separate user whose token (with a jti) the script revokes.
    let mut claims = gatepass_testkit::claims(ISS, "browser-revoked", "developer");
    claims["jti"] = "browser-revoked-jti".into();
    let env = vec![
        ("DASHBOARD_URL", stack.url("/")),
        ("TOKEN", admin.clone()),
        ("VIEWER_TOKEN", token("browser-viewer", "viewer")),
        ("FLIP_DOWN_URL", format!("{}/down", stack.demo_url)),
        ("FLIP_UP_URL", format!("{}/up", stack.demo_url)),
        ("REVOKED_TOKEN", gatepass_testkit::hs256(SECRET, &claims)),
        ("REVOKED_JTI", "browser-revoked-jti".into()),
        ("ADMIN_TOKEN", admin),
        ("SCREENSHOT", shot.display().to_string()),
    ];
    run_script(
        &stack,
        "tests/browser/dashboard.mjs",
        env,
        "revocation ->",
        "ok: dashboard connected, row changed on flip, ticket path works, refusals shown, admin controls work, revocation shown",
    )
    .await;
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

/// Signed in end to end (SPEC §9) in Chromium: the provider's login page, the live dashboard
/// naming alice, sign-out through the provider, bob refused in words, and a back-channel logout
/// shown as "signed out" within 2 s. See tests/browser/signin.mjs; screenshots of every step in
/// the stack's folder (and `E2E_ARTIFACTS` when set).
#[tokio::test]
async fn signing_in_to_the_dashboard_in_chromium() {
    let stack = Stack::start_with(Options {
        signin: true,
        ..Options::default()
    })
    .await;
    stack.wait_feed_up().await;
    let shots = stack.dir.path().join("signin-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let users: serde_json::Map<String, serde_json::Value> = gatepass_testkit::oidc::USERS
        .iter()
        .map(|(u, p, _)| (u.to_string(), (*p).into()))
        .collect();
    let env = vec![
        ("DASHBOARD_URL", stack.url("/")),
        ("OIDC_ISSUER", stack.op().issuer()),
        ("FLIP_DOWN_URL", format!("{}/down", stack.demo_url)),
        ("FLIP_UP_URL", format!("{}/up", stack.demo_url)),
        ("USERS", serde_json::Value::Object(users).to_string()),
        ("SCREENSHOTS", shots.display().to_string()),
    ];
    run_script(
        &stack,
        "tests/browser/signin.mjs",
        env,
        "back-channel logout ->",
        "ok: signed in, live dashboard, signed out, viewer refused in words, back-channel logout shown",
    )
    .await;
    let taken: Vec<_> = std::fs::read_dir(&shots).unwrap().flatten().collect();
    assert!(taken.len() >= 6, "{} screenshots", taken.len());
    if let Ok(dir) = std::env::var("E2E_ARTIFACTS") {
        for f in taken {
            let _ = std::fs::copy(f.path(), std::path::Path::new(&dir).join(f.file_name()));
        }
    }
}

/// Runs a Playwright script with `env` (plus `CHROMIUM`) and asserts it succeeded and printed
/// `done`; echoes its measured-latency lines (those starting with `measured`) to the test log.
async fn run_script(
    stack: &Stack,
    script: &str,
    env: Vec<(&'static str, String)>,
    measured: &'static str,
    done: &str,
) {
    require(
        root().join("tests/browser/node_modules/playwright-core"),
        "run `make test` (it runs npm ci in tests/browser)",
    );
    let chromium = require(
        "/usr/bin/chromium".into(),
        "run `make test` (it installs Debian's chromium)",
    );
    let script = root().join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .envs(env)
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.starts_with(measured)) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\n{}",
        stack.logs()
    );
    assert!(stdout.contains(done), "{stdout}");
}
