//! The example clients in `examples/`, run against the real stack.

use std::process::Command;

use gatepass_e2e::*;

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_client_with_subprotocol_and_ticket() {
    let python = require(
        root().join(".venv/bin/python"),
        "run `make test` (it creates .venv)",
    );
    let script = root().join("examples/python/ws_client.py");
    let mut stack = Stack::start().await;
    let url = stack.ws_url("/ws/mcp-status");
    let admin = token("py", "admin");
    for extra in [&[][..], &["--ticket"][..]] {
        let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
            run(Command::new(&python)
                .arg(&script)
                .args(["--url", &url, "--token", &admin, "--count", "1"])
                .args(extra))
        });
        assert!(ok, "{extra:?}: {stderr}");
        assert!(stderr.contains("subprotocol=jwt-auth"), "{stderr}");
        let first: serde_json::Value =
            serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(first["type"], "initial_status");
    }
    let (ok, _, stderr) = tokio::task::block_in_place(|| {
        run(Command::new(&python).arg(&script).args([
            "--url",
            &url,
            "--token",
            &token("v", "viewer"),
            "--count",
            "1",
        ]))
    });
    assert!(!ok);
    assert!(stderr.contains("refused: HTTP 403"), "{stderr}");

    // Streaming until the server goes away: mcp-status's shutdown closes with 1001, which the
    // client prints, and exits non-zero (only 1000 or Ctrl-C is a clean end).
    let mut child = Command::new(&python)
        .arg(&script)
        .args(["--url", &url, "--token", &admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::task::block_in_place(|| std::io::BufRead::read_line(&mut reader, &mut first)).unwrap();
    assert!(first.contains("\"initial_status\""), "{first}");
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let mut err_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    stack.procs.get_mut("mcp-status").unwrap().stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client did not exit after the server closed");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let stderr = stderr.join().unwrap();
    assert!(
        stderr.contains("closed 1001 Server shutting down"),
        "{stderr}\n{}",
        stack.logs()
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_example() {
    let example = require(
        std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("debug/examples/ws_client"),
        "run `make test` (it builds all targets, examples included)",
    );
    let stack = Stack::start().await;
    let url = stack.ws_url("/ws/mcp-status");
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(Command::new(&example).args([&url, &token("rs", "dba"), "1"]))
    });
    assert!(ok, "{stderr}");
    assert!(stderr.contains("jwt-auth"), "{stderr}");
    assert!(stdout.contains("\"type\":\"initial_status\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_contract_script_passes_against_the_stack() {
    let stack = Stack::start().await;
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        run(Command::new("bash")
            .arg(root().join("tests/contract.sh"))
            .env("BASE", stack.url(""))
            .env("ADMIN_TOKEN", token("alice", "admin"))
            .env("VIEWER_TOKEN", token("bob", "viewer")))
    });
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or("")
            .ends_with(" passed, 0 failed"),
        "{stdout}"
    );
}
