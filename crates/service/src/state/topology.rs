//! Which Redis a `[state] url` names (one server, a master watched by Sentinel, or a Cluster),
//! and the one connection type every caller uses for all three.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};

/// What `state.url` must look like; the config error quotes it (never the URL itself).
pub const URL_HELP: &str = "must be a URL like redis://127.0.0.1:6379/0, \
     redis+sentinel://h1:26379,h2:26379/mymaster/0 or redis+cluster://h1:6379,h2:6379 \
     (rediss… for TLS)";

/// The deployment a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `redis+sentinel://`: the master the sentinels name for `master`, database `db`.
    Sentinel { master: String, db: i64 },
    /// `redis+cluster://`: seed nodes of a Redis Cluster.
    Cluster,
}

/// A `redis+sentinel://` or `redis+cluster://` URL, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct HaUrl {
    pub kind: Kind,
    pub tls: bool,
    /// Sentinels, or cluster seed nodes.
    pub nodes: Vec<(String, u16)>,
    /// Credentials for the data nodes (never for the sentinels: `sentinel_password_env`).
    pub username: Option<String>,
    pub password: Option<String>,
}

// Hand-written Debug: the URL's password must never be printed.
impl std::fmt::Debug for HaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaUrl")
            .field("kind", &self.kind)
            .field("tls", &self.tls)
            .field("nodes", &self.nodes)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HaUrl {
    /// `Ok(None)` for a URL of another scheme (`redis://`, parsed by redis-rs); `Err` for a
    /// Sentinel or Cluster URL that is malformed.
    pub fn parse(url: &str) -> Result<Option<HaUrl>, ()> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(None);
        };
        let (tls, sentinel) = match scheme {
            "redis+sentinel" => (false, true),
            "rediss+sentinel" => (true, true),
            "redis+cluster" => (false, false),
            "rediss+cluster" => (true, false),
            _ => return Ok(None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let decode = |s: &str| -> Result<Option<String>, ()> {
                    let s = percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map_err(|_| ())?;
                    Ok((!s.is_empty()).then(|| s.into_owned()))
                };
                (decode(user)?, decode(pass)?)
            }
        };
        let default_port = if sentinel { 26379 } else { 6379 };
        let nodes = hosts
            .split(',')
            .map(|h| node(h, default_port))
            .collect::<Result<Vec<_>, ()>>()?;
        // "/m/0" → ["m", "0"]; an empty segment ("//m", "/m/") is malformed.
        let mut segments = path.split('/');
        if segments.clone().any(str::is_empty) && !path.is_empty() {
            return Err(());
        }
        let mut segments = segments.by_ref().filter(|s| !s.is_empty());
        let kind = if sentinel {
            let master = segments.next().ok_or(())?;
            let db = match segments.next() {
                Some(d) => d.parse::<i64>().map_err(|_| ())?,
                None => 0,
            };
            let valid = master
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'#' | b'?'))
                && db >= 0;
            if !valid {
                return Err(());
            }
            Kind::Sentinel {
                master: master.to_owned(),
                db,
            }
        } else {
            // A cluster has database 0 only.
            if !matches!(segments.next(), None | Some("0")) {
                return Err(());
            }
            Kind::Cluster
        };
        if segments.next().is_some() {
            return Err(());
        }
        Ok(Some(HaUrl {
            kind,
            tls,
            nodes,
            username,
            password,
        }))
    }

    /// The redis-rs address of node `i`.
    pub fn addrs(&self) -> Vec<ConnectionAddr> {
        self.nodes
            .iter()
            .map(|(host, port)| {
                if self.tls {
                    ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host.clone(), *port)
                }
            })
            .collect()
    }
}

/// `host[:port]` or `[v6]:port`.
fn node(text: &str, default_port: u16) -> Result<(String, u16), ()> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(())?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(()),
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| ())?
        }
        Some(_) => return Err(()),
        None => default_port,
    };
    let host_ok = host.bytes().any(|b| b.is_ascii_alphanumeric())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok || port == 0 {
        return Err(());
    }
    Ok((host.to_owned(), port))
}

/// The connection every call gets: one multiplexed connection to a server (plain or the
/// master Sentinel names), or a cluster connection that routes by key and follows MOVED/ASK.
/// Cheap to clone (handles on shared connections).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_and_cluster_urls() {
        let u = HaUrl::parse("redis+sentinel://:p%40ss@s1:26379,s2,[::1]:5/mymaster/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            u.kind,
            Kind::Sentinel {
                master: "mymaster".into(),
                db: 2
            }
        );
        assert!(!u.tls);
        assert_eq!(
            u.nodes,
            vec![
                ("s1".into(), 26379),
                ("s2".into(), 26379),
                ("::1".into(), 5)
            ]
        );
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.username, None);
        assert!(!format!("{u:?}").contains("p@ss"));
        let u = HaUrl::parse("rediss+cluster://user:pw@n1:7000,n2:7001")
            .unwrap()
            .unwrap();
        assert_eq!(u.kind, Kind::Cluster);
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("user"));
        assert_eq!(u.nodes.len(), 2);
        assert_eq!(HaUrl::parse("redis://h:1/0"), Ok(None));
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1:26379/m/x",
            "redis+sentinel://s1:26379/m/0/extra",
            "redis+sentinel://s1:0/m",
            "redis+sentinel://s1:99999/m",
            "redis+sentinel://,s2/m",
            "redis+sentinel:///m",
            "redis+cluster://n1:6379/1",
            "redis+cluster://n1:x",
            "redis+cluster://n 1:6379",
            "redis+cluster://n1:+6379",
            "redis+sentinel://s1//m",
            "redis+sentinel://s1/m/",
            "redis+sentinel://s1/m%2F",
            "redis+sentinel://s1/m?x",
            "redis+sentinel://-/m",
        ] {
            assert_eq!(HaUrl::parse(bad), Err(()), "{bad}");
        }
    }
}
