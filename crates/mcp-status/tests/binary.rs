//! The real `mcp-status` binary: config errors and the demo MCP subcommand.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-status");

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
            "listen = [1]\n",
            "mcp-status: config error: listen (line 1): invalid type: sequence, expected a string",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args([
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(expected),
            "got {stderr:?}, want {expected:?}"
        );
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
