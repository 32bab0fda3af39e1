//! The real `mcp-status` binary: config errors, `check-config`, SIGTERM and the demo MCP.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-status");

/// `mcp-status serve --config PATH --listen 127.0.0.1:0`.
fn serve(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"]);
    cmd
}

/// Exit 1 and one line on stderr that starts with `expected`.
fn assert_one_line_error(out: &std::process::Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(expected),
        "got {stderr:?}, want {expected:?}"
    );
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[limits]\nsend_queue = 0\n",
            "mcp-status: config error: limits.send_queue: must be greater than 0",
        ),
        (
            "[[mcps]]\nname = \"x\"\nhealth_url = \"ftp://x\"\n",
            "mcp-status: config error: mcps[0].health_url: must be an http:// or https:// URL",
        ),
        (
            "[auth]\nassertion_public_key_file = \"nope.pem\"\n",
            "mcp-status: config error: auth.assertion_public_key_file: cannot read",
        ),
        (
            "[revocation]\nfeed_url = \"http://127.0.0.1:9091/revocations\"\n",
            "mcp-status: config error: revocation.feed_secret_file: is required with feed_url",
        ),
        (
            "[revocation]\nfeed_url = \"ws://127.0.0.1:9091/revocations\"\nfeed_secret_file = \"feed.key\"\n",
            "mcp-status: config error: revocation.feed_url: must be an http:// or https:// URL",
        ),
        (
            "[revocation]\nfeed_url = \"http://127.0.0.1:9091/revocations\"\nfeed_secret_file = \"nope.key\"\n",
            "mcp-status: config error: revocation.feed_secret_file: cannot read",
        ),
        (
            "[revocation]\nca_file = \"ca.pem\"\n",
            "mcp-status: config error: revocation.ca_file: only applies with feed_url",
        ),
        (
            "listen = [1]\n",
            "mcp-status: config error: listen (line 1): invalid type: sequence, expected a string",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = serve(&path).output().unwrap();
        assert_one_line_error(&out, expected);
    }
}

#[test]
fn demo_mcp_flips_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["demo-mcp", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/health"),
        "{line}"
    );
    let base = url.trim_end_matches("/health");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
        assert_eq!(
            c.post(format!("{base}/down"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
        c.post(format!("{base}/toggle")).send().await.unwrap();
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    });
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    for _ in 0..250 {
        if let Some(s) = child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("demo-mcp did not exit on SIGTERM");
}

#[test]
fn check_config_prints_the_effective_config_or_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(dir.path().join("feed.key"), "feed-secret-do-not-print\n").unwrap();
    std::fs::write(
        &path,
        "[auth]\nassertion_jwks_url = \"https://ops:hunter2@gatepass.test/.well-known/jwks.json\"\n\n\
         [revocation]\nfeed_url = \"https://feed:pa55word@gatepass.test/auth/revocations?key=k3y\"\n\
         feed_secret_file = \"feed.key\"\n\n\
         [[mcps]]\nname = \"oracle_mcp\"\nhealth_url = \"http://mcp.test:7001/health?token=s3cret\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The effective config: defaults filled in, secrets redacted, and valid TOML for `serve`.
    for want in [
        "listen = \"127.0.0.1:9092\"",
        "[limits]",
        "max_message_bytes = 1048576",
        "idle_timeout = \"5m\"",
        "assertion_jwks_url = \"https://<redacted>@gatepass.test/.well-known/jwks.json\"",
        "health_url = \"http://mcp.test:7001/health?<redacted>\"",
        "[revocation]",
        "feed_url = \"https://<redacted>@gatepass.test/auth/revocations?<redacted>\"",
        "feed_secret_file = \"feed.key\"",
        "[[mcps]]",
        "failure_threshold = 3",
    ] {
        assert!(stdout.contains(want), "{want:?} not in\n{stdout}");
    }
    for secret in [
        "hunter2",
        "s3cret",
        "pa55word",
        "k3y",
        "feed-secret-do-not-print",
    ] {
        assert!(!stdout.contains(secret), "{secret} in\n{stdout}");
    }
    let effective = dir.path().join("effective.toml");
    std::fs::write(&effective, stdout.as_bytes()).unwrap();
    mcp_status::Config::load(&effective).unwrap();

    for (text, expected) in [
        (
            "[limits]\nmax_message_bytes = 0\n",
            "mcp-status: config error: limits.max_message_bytes: must be greater than 0",
        ),
        (
            "[auth]\nassertion_public_key_file = \"missing.pem\"\n",
            "mcp-status: config error: auth.assertion_public_key_file: cannot read",
        ),
        (
            "[revocation]\nfeed_url = \"http://127.0.0.1:9091/revocations\"\nfeed_secret_file = \"missing.key\"\n",
            "mcp-status: config error: revocation.feed_secret_file: cannot read",
        ),
        (
            "[limits]\nmax_mesage_bytes = 1\n",
            "mcp-status: config error: max_mesage_bytes (line 2): unknown field `max_mesage_bytes`",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_one_line_error(&out, expected);
    }
}

/// `serve` with no socket open exits 0 within a second of SIGTERM (it used to wait out the
/// whole 10 s drain).
#[test]
fn serve_exits_0_within_a_second_of_sigterm_with_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "").unwrap();
    let mut child = serve(&path)
        .env("MCP_STATUS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once it logs that it listens; keep draining stderr afterwards.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("mcp-status listening") => {
                // Issue 9: stderr is a pipe here, so no colour codes (they litter log files).
                assert!(
                    !l.contains('\x1b'),
                    "ANSI escape in a non-terminal log: {l:?}"
                );
                break;
            }
            Some(Ok(_)) => continue,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listening line: {other:?}");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Some(s) = child.try_wait().unwrap() {
            let took = start.elapsed();
            assert_eq!(s.code(), Some(0));
            assert!(
                took < Duration::from_secs(1),
                "exited {took:?} after SIGTERM"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not exit within 5 s of SIGTERM");
}
