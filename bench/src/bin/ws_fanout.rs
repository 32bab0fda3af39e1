//! mcp-status fan-out load client: opens N WebSocket clients straight to mcp-status (identity
//! headers set as gatepass would), triggers status changes through the admin API, and reports
//! delivery latency per client, how many got it, and the server's RSS per connection (JSON).
//!   ws_fanout --addr 127.0.0.1:PORT --mcp NAME --pid PID [--clients 10000] [--rounds 3]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn rss_kb(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// User and system CPU time of a process so far, in µs (`/proc/PID/stat`, clock ticks).
fn cpu_us(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may itself hold spaces: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (field(14) * 10_000.0, field(15) * 10_000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn identity(req: &mut http::Request<()>, user: &str) {
    let exp = (jsonwebtoken::get_current_timestamp() + 7200).to_string();
    let h = req.headers_mut();
    h.insert("x-user-id", user.parse().unwrap());
    h.insert("x-user-username", user.parse().unwrap());
    h.insert("x-user-role", "admin".parse().unwrap());
    h.insert("x-user-permissions", "".parse().unwrap());
    h.insert("x-user-expires", exp.parse().unwrap());
}

#[tokio::main]
async fn main() {
    let addr = arg("--addr").expect("--addr");
    let mcp = arg("--mcp").expect("--mcp");
    let pid = arg("--pid").expect("--pid");
    let clients: usize = arg("--clients")
        .map(|c| c.parse().unwrap())
        .unwrap_or(10_000);
    let rounds: usize = arg("--rounds").map(|c| c.parse().unwrap()).unwrap_or(3);
    let rss_before = rss_kb(&pid);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..clients {
        let (tx, ready, failed, gate, addr) = (
            tx.clone(),
            ready.clone(),
            failed.clone(),
            gate.clone(),
            addr.clone(),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut req = format!("ws://{addr}/ws/mcp-status")
                .into_client_request()
                .unwrap();
            identity(&mut req, &format!("fan-{i}"));
            // A 4 KiB read buffer, as mcp-status's own: tungstenite's default (128 KiB) is zeroed
            // on every read, which made this client, not the server, the cost of a broadcast.
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
            let Ok((mut ws, _)) =
                tokio_tungstenite::connect_async_with_config(req, Some(config), false).await
            else {
                failed.fetch_add(1, Ordering::SeqCst);
                return;
            };
            // initial_status first.
            match ws.next().await {
                Some(Ok(Message::Text(_))) => {}
                _ => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            drop(permit);
            ready.fetch_add(1, Ordering::SeqCst);
            let mut round = 0;
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if t.as_str().contains("\"mcp_status_change\"") {
                        let _ = tx.send((round, Instant::now()));
                        round += 1;
                    }
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    while ready.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < clients {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "clients did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb(&pid);
    let connected = ready.load(Ordering::SeqCst);

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut latencies = Vec::new();
    let mut delivered_per_round = Vec::new();
    let me = std::process::id().to_string();
    let (server_user0, server_sys0) = cpu_us(&pid);
    let (client_user0, client_sys0) = cpu_us(&me);
    for r in 0..rounds {
        let action = if r % 2 == 0 { "disable" } else { "enable" };
        let t0 = Instant::now();
        let resp = http
            .post(format!("http://{addr}/api/v1/mcps/{mcp}/{action}"))
            .header("x-user-id", "bench-admin")
            .header("x-user-username", "bench-admin")
            .header("x-user-role", "admin")
            .header("x-user-permissions", "")
            .header(
                "x-user-expires",
                (jsonwebtoken::get_current_timestamp() + 7200).to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "trigger failed: {}",
            resp.status()
        );
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < connected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((round, at))) if round == r => {
                    latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                    got += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        delivered_per_round.push(got);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // CPU spent over the rounds (the 300 ms pauses are idle), per message delivered.
    let (server_user, server_sys) = cpu_us(&pid);
    let (client_user, client_sys) = cpu_us(&me);
    let delivered: usize = delivered_per_round.iter().sum();
    let per = |a: f64, b: f64| {
        if delivered > 0 {
            (a - b) / delivered as f64
        } else {
            f64::NAN
        }
    };
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let out = serde_json::json!({
        "clients": clients,
        "connected": connected,
        "connect_failed": failed.load(Ordering::SeqCst),
        "connect_seconds": connect_secs,
        "rounds": rounds,
        "delivered_per_round": delivered_per_round,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
        "server_user_us_per_delivery": per(server_user, server_user0),
        "server_sys_us_per_delivery": per(server_sys, server_sys0),
        "client_user_us_per_delivery": per(client_user, client_user0),
        "client_sys_us_per_delivery": per(client_sys, client_sys0),
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_per_connection_bytes": if connected > 0 { (rss_after.saturating_sub(rss_before) * 1024) as f64 / connected as f64 } else { f64::NAN },
    });
    println!("{out}");
}
