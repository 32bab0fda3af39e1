//! The real `gatepass` binary: CLI, config errors, signals, and what reaches its logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatepass");

fn dir_with_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in key_files() {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn gatepass(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `gatepass serve`, its stderr collected line by line.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: String,
}

impl Proc {
    fn spawn(config: &Path, envs: &[(&str, &str)], extra: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env_remove("GATEPASS_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("gatepass listening") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("gatepass did not start");
        // Text: `... addr=127.0.0.1:PORT ...`; JSON: `"addr":"127.0.0.1:PORT"`.
        let at = line
            .find("127.0.0.1:")
            .expect("address in the listening line");
        let port: String = line[at + 10..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let addr = format!("127.0.0.1:{port}");
        Proc { child, lines, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait; returns the exit code.
    fn stop(mut self) -> (i32, String) {
        self.signal("-TERM");
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(50));
                return (status.code().unwrap_or(-1), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("gatepass did not exit on SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn fwd(p: &Proc, f: Fwd) -> Got {
    got(f.send_to(&p.url("/validate")).await).await
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_1() {
    let dir = dir_with_keys();
    let cases = [
        ("listen = 5\n[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['HS256']\nsecret_file='hs256.key'\n", "config error: listen (line 1): invalid type: integer `5`, expected a string"),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['none']\nsecret_file='hs256.key'\n", "config error: issuers[0].algorithms: `none` is never allowed"),
        // Issue 8 item 2: every key-file error names the key, not only the section.
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['RS256']\npublic_key_file='missing.pem'\n", "config error: issuers[0].public_key_file: cannot read"),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['RS256']\npublic_key_file='hs256.key'\n", "config error: issuers[0].public_key_file: "),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['HS256']\nsecret_env='GATEPASS_TEST_UNSET_VAR'\n", "config error: issuers[0].secret_env: environment variable GATEPASS_TEST_UNSET_VAR is not set or empty"),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['HS256']\nsecret_file='missing.key'\n", "config error: issuers[0].secret_file: cannot read"),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['RS256']\njwks_file='hs256.key'\n", "config error: issuers[0].jwks_file: "),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['RS256']\njwks_url='https://127.0.0.1:1/jwks'\nca_file='missing-ca.pem'\n", "config error: issuers[0].ca_file: cannot use"),
        ("[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['RS256']\njwks_url='https://127.0.0.1:1/jwks'\nca_file='hs256.key'\n", "config error: issuers[0].ca_file: cannot use"),
        ("[tls]\ncert='missing.pem'\nkey='missing-key.pem'\n[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['HS256']\nsecret_file='hs256.key'\n", "config error: tls.cert: "),
        ("[assertion]\nkey_file='missing.pem'\n[[issuers]]\nname='a'\nissuer='b'\nalgorithms=['HS256']\nsecret_file='hs256.key'\n", "config error: assertion.key_file: cannot read"),
        ("this is not toml", "config error: this is not toml (line 1): "),
        ("", "config error: issuers: at least one [[issuers]] is required"),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for sub in ["serve", "check-config"] {
            let (code, stdout, stderr) = gatepass(&[sub, "--config", path.to_str().unwrap()]);
            assert_eq!(code, 1, "{sub} {text:?}: {stderr}");
            assert_eq!(stdout, "");
            assert_eq!(stderr.lines().count(), 1, "{sub}: not one line: {stderr}");
            assert!(
                stderr.starts_with(&format!("gatepass: {expected}")),
                "{sub}: got {stderr:?}, want {expected:?}"
            );
            assert!(!stderr.contains("panicked"));
        }
    }
    let (code, _, stderr) = gatepass(&["serve", "--config", "/nonexistent/gatepass.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("gatepass: config error: /nonexistent/gatepass.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = dir_with_keys();
    let path = dir.path().join("gatepass.toml");
    std::fs::write(&path, base_config()).unwrap();
    let (code, stdout, stderr) = gatepass(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:9091\""), "{stdout}");
    assert!(stdout.contains("websocket_protocol = \"jwt-auth\""));
    assert!(stdout.contains("secret_file = \"hs256.key\""));
    assert!(!stdout.contains(HS_SECRET));
    // GATEPASS_CONFIG works in place of --config.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("GATEPASS_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn keygen_writes_a_private_pkcs8_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.pem");
    let (code, _, stderr) = gatepass(&["keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let pem = std::fs::read_to_string(&out).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(gatepass_identity::AssertionSigner::from_pkcs8_pem(pem.as_bytes()).is_ok());
    // Issue 8 item 3: standard tools read it (OpenSSL 3.0 refuses the PKCS#8 v2 form).
    let o = Command::new("openssl")
        .args(["pkey", "-in", out.to_str().unwrap(), "-noout", "-text"])
        .output()
        .expect("openssl is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ED25519 Private-Key:"));
    let (code, _, stderr) = gatepass(&["keygen", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot create"), "{stderr}");
}

#[tokio::test]
async fn mint_serve_reload_and_graceful_exit() {
    let dir = dir_with_keys();
    let cfg = dir.path().join("gatepass.toml");
    std::fs::write(&cfg, base_config()).unwrap();
    let (code, token, stderr) = gatepass(&[
        "mint",
        "--config",
        cfg.to_str().unwrap(),
        "--issuer",
        "local",
        "--sub",
        "u9",
        "--role",
        "admin",
        "--permissions",
        "mcp:read,mcp:write",
        "--ttl",
        "10m",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = token.trim().to_string();
    let p = Proc::spawn(&cfg, &[], &[]);
    let g = fwd(&p, Fwd::get("/api/v1/write").bearer(&token)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.h("x-user-permissions"), Some("mcp:read,mcp:write"));
    let exp: u64 = g.h("x-user-expires").unwrap().parse().unwrap();
    assert!((now() + 590..=now() + 600).contains(&exp));

    // SIGHUP with a good config: new rules apply without a restart.
    std::fs::write(
        &cfg,
        base_config() + "\n[default_rule]\npolicy = \"deny\"\n",
    )
    .unwrap();
    p.signal("-HUP");
    wait_for(Duration::from_secs(10), "reload", || async {
        fwd(&p, Fwd::get("/other").bearer(&token)).await.status == 403
    })
    .await;
    // SIGHUP with a broken config: logged, last good config stays.
    std::fs::write(&cfg, "[[issuers]]\nname = 1\n").unwrap();
    p.signal("-HUP");
    wait_for(Duration::from_secs(10), "reload failure log", || {
        let log = p.log();
        async move { log.contains("reload failed") }
    })
    .await;
    assert_eq!(fwd(&p, Fwd::get("/other").bearer(&token)).await.status, 403);
    assert_eq!(
        fwd(&p, Fwd::get("/ws/mcp-status").bearer(&token))
            .await
            .status,
        200
    );

    let (code, log) = p.stop();
    assert_eq!(code, 0);
    // Issue 9: stderr is a pipe, so plain text: no colour codes in log files.
    assert!(log.contains("gatepass listening"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape in a non-terminal log:\n{log:?}"
    );
}

#[tokio::test]
async fn json_logs_have_one_denial_line_with_context() {
    let dir = dir_with_keys();
    let cfg = dir.path().join("gatepass.toml");
    std::fs::write(&cfg, base_config()).unwrap();
    let p = Proc::spawn(&cfg, &[], &["--log-format", "json"]);
    let g = fwd(
        &p,
        Fwd::new("POST", "/api/v1/mcps?secret=1")
            .bearer(&hs(&claims("u5", "viewer")))
            .h("Origin", "http://127.0.0.1:8080"),
    )
    .await;
    assert_eq!(g.status, 403);
    let (_, log) = p.stop();
    let denials: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request denied")
        .collect();
    assert_eq!(denials.len(), 1, "{log}");
    let d = &denials[0];
    assert_eq!(d["reason"], "insufficient_role");
    assert_eq!(d["status"], 403);
    assert_eq!(d["client_ip"], "203.0.113.7");
    assert_eq!(d["method"], "POST");
    assert_eq!(d["path"], "/api/v1/mcps");
    assert_eq!(d["sub"], "u5");
    assert_eq!(d["origin"], "http://127.0.0.1:8080");
}

#[tokio::test]
async fn no_token_ticket_or_secret_reaches_the_logs() {
    let dir = dir_with_keys();
    let cfg = dir.path().join("gatepass.toml");
    let config = base_config().replace("secret_file = \"hs256.key\"", "secret_env = \"GATEPASS_TEST_SECRET\"")
        + "\n[tokens]\nsources = [\"bearer\", \"websocket_protocol\", \"cookie:access_token\", \"query:access_token\", \"ticket\"]\n";
    std::fs::write(&cfg, config).unwrap();
    let p = Proc::spawn(
        &cfg,
        &[
            ("GATEPASS_TEST_SECRET", HS_SECRET),
            ("GATEPASS_LOG", "trace"),
        ],
        &[],
    );
    let good = hs(&claims("u1", "admin"));
    let mut expired_claims = claims("u2", "admin");
    expired_claims["exp"] = (now() - 3600).into();
    let expired = hs(&expired_claims);
    let forged = format!("{}.{}", &good[..good.rfind('.').unwrap()], "Zm9yZ2Vk");
    let c = client();
    let ticket = got(c
        .post(p.url("/tickets"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap())
    .await
    .json()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    for f in [
        Fwd::get("/x").bearer(&good),
        Fwd::get("/x").bearer(&expired),
        Fwd::get("/x").bearer(&forged),
        Fwd::get("/x").h("Cookie", &format!("access_token={expired}")),
        Fwd::upgrade(&format!("/ws/mcp-status?access_token={expired}&x=1")),
        Fwd::upgrade("/ws/mcp-status").h("Sec-Websocket-Protocol", &format!("jwt-auth, {forged}")),
        Fwd::upgrade(&format!("/ws/mcp-status?ticket={ticket}")),
        Fwd::upgrade(&format!("/ws/mcp-status?ticket={ticket}")),
        Fwd::get(&format!("/x?ticket={ticket}")),
    ] {
        let status = fwd(&p, f).await.status;
        assert!(status == 200 || status == 401, "{status}");
    }
    let (code, log) = p.stop();
    assert_eq!(code, 0);
    assert!(
        log.contains("request denied"),
        "the test must see denial lines:\n{log}"
    );
    for (what, secret) in [
        ("valid token", good.as_str()),
        ("expired token", expired.as_str()),
        ("forged token", forged.as_str()),
        ("token signature", good.rsplit('.').next().unwrap()),
        ("token payload", good.split('.').nth(1).unwrap()),
        ("ticket", ticket.as_str()),
        ("secret", HS_SECRET),
    ] {
        assert!(!log.contains(secret), "{what} found in the logs");
    }
}

impl common::signin::Gatepass for Proc {
    fn url(&self, path: &str) -> String {
        Proc::url(self, path)
    }
}

/// Sign-in's secrets (SPEC §9): codes, cookies, state, nonce, the PKCE challenge, ID tokens and
/// the token endpoint's form (verifier, refresh token) never reach a log line, at trace level,
/// through a whole sign-in, refreshes and a sign-out.
#[tokio::test]
async fn no_sign_in_secret_reaches_the_logs() {
    use common::signin::*;
    use gatepass_testkit::browser::Browser;
    let op = provider(None, Some(4));
    let dir = dir_with_keys();
    files(dir.path());
    let cfg = dir.path().join("gatepass.toml");
    std::fs::write(&cfg, config(&op, "", "")).unwrap();
    let p = Proc::spawn(&cfg, &[("GATEPASS_LOG", "trace")], &[]);
    wait_for(Duration::from_secs(15), "ready", || async {
        client()
            .get(p.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let b = Browser::new();
    let start = validate_as(&p, &b, Kind::Navigation, "GET", "/secret-page", &[]).await;
    assert_eq!(start.status, 302);
    let (state, nonce, challenge) = (
        start.location_param("state").unwrap(),
        start.location_param("nonce").unwrap(),
        start.location_param("code_challenge").unwrap(),
    );
    let flow = b
        .cookies()
        .into_iter()
        .find(|c| c.name.contains("_flow_"))
        .unwrap()
        .value;
    let callback = at_provider(&b, &op, &start, "alice").await;
    let code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(callback_at(&p, &b, &callback).await.status, 303);
    let session = b.cookie(COOKIE).unwrap();
    // Used across at least one refresh (4 s tokens).
    wait_for(Duration::from_secs(15), "a refresh", || async {
        assert_eq!(
            validate_as(&p, &b, Kind::Fetch, "GET", "/x", &[])
                .await
                .status,
            200
        );
        op.grants().await["refresh_token"].as_u64().unwrap() >= 1
    })
    .await;
    let out = app_endpoint(
        &p,
        &b,
        reqwest::Method::GET,
        "/_gatepass/logout",
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(out.status, 302);
    let id_token = out.location_param("id_token_hint").unwrap();
    let (code_exit, log) = p.stop();
    assert_eq!(code_exit, 0);
    assert!(
        log.contains("signed in") && log.contains("signed out"),
        "the test must see sign-in lines:\n{log}"
    );
    for (what, secret) in [
        ("code", code.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code challenge", challenge.as_str()),
        ("flow cookie", flow.as_str()),
        ("session cookie", session.as_str()),
        ("ID token", id_token.as_str()),
        ("ID token signature", id_token.rsplit('.').next().unwrap()),
        (
            "client secret",
            gatepass_testkit::oidc::GATEPASS_CLIENT_SECRET,
        ),
        ("session key", SESSION_KEYS.trim()),
    ] {
        assert!(!log.contains(secret), "{what} found in the logs");
    }
    // What the token endpoint is sent (the verifier, refresh tokens) is never printed either.
    for field in [
        "code_verifier",
        "refresh_token=",
        "access_token=",
        "id_token=",
    ] {
        assert!(!log.contains(field), "{field} found in the logs");
    }
}

#[test]
fn shipped_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gatepass.toml");
    let cfg = dir.path().join("gatepass.toml");
    std::fs::copy(example, &cfg).unwrap();
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("secrets/hs256.key"), HS_SECRET).unwrap();
    std::fs::write(
        dir.path().join("keys/assertion-ed25519.pem"),
        &keys().assertion_key,
    )
    .unwrap();
    let (code, stdout, stderr) = gatepass(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("per_ip_failures"), "{stdout}");
}
