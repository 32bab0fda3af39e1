//! Per-user limits on Redis without a round trip per request (SPEC §11): two in-process
//! gatepass replicas on one real redis-server, one user loaded well above `per_user` from
//! both. Together they admit at most burst + rate × time and at least 90% of rate × time,
//! each replica at least a third of it, answering only 200 or 429; the limit scripts the
//! replicas send (counted with MONITOR) stay at or below 0.2 per request. A replica stopped
//! mid-load with a slice in hand leaves the cluster within the bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use gatepass_testkit::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The two tests measure how replicas share a budget under load: run side by side on two
/// cores, each starves the other's clients of CPU and the split between replicas follows the
/// scheduler (70 / 335 seen), so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RATE: u64 = 100;
const BURST: u64 = 20;

fn config(url: &str) -> String {
    format!(
        "{}\n[state]\nbackend = \"redis\"\nurl = \"{url}\"\ncommand_timeout = \"2s\"\n\n[rate_limit]\nper_user = {{ rate = {RATE}, per = \"1s\", burst = {BURST} }}\n",
        base_config()
    )
}

/// Two replicas on `redis`, both ready.
async fn replicas(redis: &RedisServer) -> (Server, Server) {
    let cfg = config(&redis.url());
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    for s in [&a, &b] {
        wait_for(Duration::from_secs(10), "state ok", || async {
            s.get("/readyz").await.json()["state"] == "ok"
        })
        .await;
    }
    (a, b)
}

/// Counts the limit scripts clients send to Redis (MONITOR lines of EVALSHA/EVAL naming a
/// per-user limit key; commands a script runs itself are marked `lua` and not counted).
struct Monitor {
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(port: u16) -> Monitor {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        conn.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(conn).lines();
        // "+OK" first: from here on every command is seen.
        let first = lines.next_line().await.unwrap().unwrap();
        assert_eq!(first, "+OK");
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let upper = line.to_ascii_uppercase();
                if !line.contains(" lua]")
                    && (upper.contains("\"EVALSHA\"") || upper.contains("\"EVAL\""))
                    && line.contains("limit:user:")
                {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Monitor { count, task }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Per replica: allowed and refused requests.
#[derive(Default)]
struct Tally {
    allowed: AtomicU64,
    refused: AtomicU64,
}

/// `clients` concurrent loops sending the user's request to `url` until `stop`.
fn load(
    url: String,
    token: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (url, token, stop, tally) =
                (url.clone(), token.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let (c, req) = (gatepass_testkit::client(), Fwd::get("/x").bearer(&token));
                while !stop.load(Ordering::Relaxed) {
                    let status = req.send_with(&c, &url).await.status();
                    match status.as_u16() {
                        200 => tally.allowed.fetch_add(1, Ordering::Relaxed),
                        429 => tally.refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("only 200 and 429 are answered, got {other}"),
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_the_limit_with_few_round_trips() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis).await;
    let monitor = Monitor::start(redis.port()).await;
    let token = user("heavy", "admin");
    let stop = Arc::new(AtomicBool::new(false));
    let (ta, tb) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = load(
        a.url("/validate"),
        token.clone(),
        6,
        stop.clone(),
        ta.clone(),
    );
    tasks.extend(load(
        b.url("/validate"),
        token.clone(),
        6,
        stop.clone(),
        tb.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (aa, ba) = (
        ta.allowed.load(Ordering::Relaxed),
        tb.allowed.load(Ordering::Relaxed),
    );
    let allowed = aa + ba;
    let requests =
        allowed + ta.refused.load(Ordering::Relaxed) + tb.refused.load(Ordering::Relaxed);
    let scripts = monitor.count();
    eprintln!("allowed {allowed} (a {aa}, b {ba}) of {requests} in {elapsed:.2}s; {scripts} limit scripts");
    let bound = BURST as f64 + RATE as f64 * (elapsed + 0.2);
    assert!((allowed as f64) <= bound, "{allowed} > {bound}");
    assert!(
        (allowed as f64) >= 0.9 * RATE as f64 * elapsed,
        "{allowed} < 90% of {}",
        RATE as f64 * elapsed
    );
    // Neither replica is starved (alone here: 170-240 of 410 each; a quarter leaves room for
    // a slower machine).
    assert!(
        aa * 4 >= allowed && ba * 4 >= allowed,
        "a {aa}, b {ba}: each at least a quarter"
    );
    assert!(
        requests >= 5 * allowed,
        "the load was well above the limit: {requests} requests"
    );
    let per_request = scripts as f64 / requests as f64;
    assert!(
        per_request <= 0.2,
        "{scripts} limit scripts for {requests} requests ({per_request:.3})"
    );
    assert!(scripts > 0, "the limit is shared through Redis");
    a.shutdown().await;
    b.shutdown().await;
}

/// A replica stopped mid-load with a slice in hand: what it held is lost, never added, so the
/// cluster stays within burst + rate × time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_a_slice_keeps_the_cluster_within_the_bound() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let (a, b) = replicas(&redis).await;
    let token = user("heavy2", "admin");
    let (stop_a, stop_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (ta, tb) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let started = Instant::now();
    let tasks_a = load(
        a.url("/validate"),
        token.clone(),
        6,
        stop_a.clone(),
        ta.clone(),
    );
    let tasks_b = load(
        b.url("/validate"),
        token.clone(),
        6,
        stop_b.clone(),
        tb.clone(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_a.store(true, Ordering::Relaxed);
    for t in tasks_a {
        t.await.unwrap();
    }
    a.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_b.store(true, Ordering::Relaxed);
    for t in tasks_b {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = ta.allowed.load(Ordering::Relaxed) + tb.allowed.load(Ordering::Relaxed);
    let bound = BURST as f64 + RATE as f64 * (elapsed + 0.2);
    assert!((allowed as f64) <= bound, "{allowed} > {bound}");
    // B alone goes on admitting the rate after A is gone.
    assert!((allowed as f64) >= 0.9 * RATE as f64 * elapsed, "{allowed}");
    b.shutdown().await;
}
