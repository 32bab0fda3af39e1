//! Highly available Redis topologies from Debian's `redis-server`, on free local ports:
//! Sentinel (a master, two replicas, three sentinels) and Cluster (three primaries with one
//! replica each). Every process is stopped by its PID on drop; nodes can be SIGKILLed and
//! restarted on their port to stage failovers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, kill, signal, wait_redis};

/// One `redis-server` process (data node or sentinel) with fixed arguments, so a restart is
/// the same node on the same port.
pub struct Node {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn start(port: u16, args: Vec<String>) -> Node {
        let mut n = Node {
            port,
            args,
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs Debian's redis-server)");
        self.child = Some(child);
        wait_redis(&self.addr());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no last write, as a crashed host.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                signal(c.id(), "-CONT");
            }
            kill(&mut c);
        }
    }

    /// Starts it again on its port with its original arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// One command through `redis-cli`; its reply as text (trimmed).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// `ROLE`'s first word: `master`, `slave` or `sentinel` ("" when unreachable).
    pub fn role(&self) -> String {
        self.cli(&["ROLE"]).lines().next().unwrap_or("").to_owned()
    }

    /// Keys in database 0.
    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).parse().unwrap_or(0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p PORT args…`, its output trimmed; "" when it fails.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn data_args(port: u16, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.push(dir.display().to_string());
    a
}

/// Waits (blocking) up to `timeout` for `cond`, polling every 50 ms; panics naming `what`.
fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The master's name the sentinels watch.
pub const MASTER_NAME: &str = "mymaster";

/// A master, two replicas and three sentinels with `down-after-milliseconds` 1000 and a
/// 500 ms ping period (Redis 7.0's sentinels otherwise sometimes fail over twice).
pub struct Sentinel {
    /// Data nodes; `nodes[0]` is the first master.
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let master_port = free_port();
        let sub = |name: &str| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let mut nodes = vec![Node::start(master_port, data_args(master_port, &sub("n0")))];
        for i in 1..3 {
            let port = free_port();
            let mut args = data_args(port, &sub(&format!("n{i}")));
            args.extend([
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]);
            nodes.push(Node::start(port, args));
        }
        wait_until(Duration::from_secs(20), "replicas in sync", || {
            nodes[1..].iter().all(|n| {
                n.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            })
        });
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 2\n",
                    sub(&format!("s{i}")).display()
                ),
            )
            .unwrap();
            let args = vec![conf.display().to_string(), "--sentinel".into()];
            let s = Node::start(port, args);
            s.cli(&["SENTINEL", "DEBUG", "PING-PERIOD", "500"]);
            sentinels.push(s);
        }
        let t = Sentinel {
            nodes,
            sentinels,
            _dir: dir,
        };
        // Ready once every sentinel knows both replicas and the other sentinels.
        wait_until(Duration::from_secs(30), "sentinels ready", || {
            t.sentinels.iter().all(|s| {
                let info = s.cli(&["SENTINEL", "MASTER", MASTER_NAME]);
                let field = |name: &str| {
                    let mut it = info.lines();
                    while let Some(l) = it.next() {
                        if l == name {
                            return it.next().unwrap_or("").to_owned();
                        }
                    }
                    String::new()
                };
                field("num-slaves") == "2" && field("num-other-sentinels") == "2"
            })
        });
        t
    }

    /// `redis+sentinel://…/mymaster/0`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(Node::addr).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}/0", hosts.join(","))
    }

    /// What each running sentinel names as the master (`127.0.0.1:PORT`).
    pub fn named_masters(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| {
                s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                    .lines()
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .collect()
    }

    /// The master every sentinel names, once they agree.
    pub fn master_addr(&self) -> Option<String> {
        let named = self.named_masters();
        let first = named.first()?.clone();
        (!first.is_empty() && named.iter().all(|n| *n == first)).then_some(first)
    }

    /// The index in `nodes` of the master the sentinels name.
    pub fn master_index(&self) -> usize {
        let addr = self.master_addr().expect("the sentinels agree on a master");
        self.nodes
            .iter()
            .position(|n| n.addr() == addr)
            .expect("the master is one of the nodes")
    }

    /// SIGKILLs the master; returns its index.
    pub fn kill_master(&mut self) -> usize {
        let i = self.master_index();
        self.nodes[i].kill();
        i
    }

    /// Waits (blocking) until every sentinel names a master other than `old`; returns when.
    pub fn wait_new_master(&self, old: &str, timeout: Duration) -> Instant {
        wait_until(timeout, "the sentinels to name a new master", || {
            self.master_addr().is_some_and(|m| m != old)
        });
        Instant::now()
    }
}

/// Three primaries and three replicas (one each), `cluster-node-timeout` 1000 ms.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = free_port();
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut args = data_args(port, &d);
            // The bus port is free too (the default, port + 10000, may not be); a replica
            // always stands in for its primary, however long since it last heard from it.
            let bus = free_port().to_string();
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .map(str::to_owned),
            );
            nodes.push(Node::start(port, args));
        }
        let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes, _dir: dir };
        c.wait_ok(Duration::from_secs(30));
        wait_until(Duration::from_secs(30), "replicas in sync", || {
            c.nodes.iter().all(|n| {
                let info = n.cli(&["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        });
        c
    }

    /// Waits (blocking) until every running node says `cluster_state:ok` and sees three
    /// primaries serving all slots.
    pub fn wait_ok(&self, timeout: Duration) {
        wait_until(timeout, "cluster_state:ok on every node", || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        });
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().take(3).map(Node::addr).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Indices of the running nodes whose role is `master`.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running() && self.nodes[i].role() == "master")
            .collect()
    }

    /// SIGKILLs primary `i` and waits (blocking) until its replica took over and the cluster
    /// serves every slot again; returns when.
    pub fn kill_primary(&mut self, i: usize, timeout: Duration) -> Instant {
        let before = self.primaries().len();
        self.nodes[i].kill();
        let deadline = Instant::now() + timeout;
        while self.primaries().len() != before {
            if Instant::now() >= deadline {
                let survivor = self.nodes.iter().find(|n| n.is_running());
                let nodes = survivor.map(|n| n.cli(&["CLUSTER", "NODES"]));
                panic!("no replica promoted within {timeout:?}; CLUSTER NODES:\n{nodes:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok(timeout);
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster helper really builds a cluster, and a replica takes over a killed primary.
    #[test]
    fn cluster_promotes_a_replica_of_a_killed_primary() {
        let mut c = Cluster::start();
        assert_eq!(c.primaries().len(), 3);
        let p = c.primaries()[0];
        c.kill_primary(p, Duration::from_secs(30));
        assert_eq!(c.primaries().len(), 3);
        assert!(!c.primaries().contains(&p));
    }
}
