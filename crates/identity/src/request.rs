//! Reading the forwarded request the way gatepass does: the WebSocket subprotocol marker, the
//! Origin allow-list and the client address behind proxies.

use std::net::IpAddr;

use http::header::{HeaderName, SEC_WEBSOCKET_PROTOCOL};
use http::HeaderMap;
use ipnet::IpNet;

/// The WebSocket subprotocol a browser offers next to its token
/// (`Sec-WebSocket-Protocol: jwt-auth, <token>`); gatepass's default marker. A downstream
/// selects it when offered and never echoes the token entry.
pub const WEBSOCKET_PROTOCOL_MARKER: &str = "jwt-auth";

/// Prebuilt: a lookup by `&str` would parse and validate the name on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The offered subprotocols, trimmed, over every `Sec-WebSocket-Protocol` line in order.
/// Lines that are not visible ASCII are skipped.
pub fn subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// True when `protocol` is among the offered subprotocols (exact, case-sensitive).
pub fn offers_subprotocol(headers: &HeaderMap, protocol: &str) -> bool {
    subprotocols(headers).any(|p| p == protocol)
}

/// Origin allow-list: an exact (ASCII case-insensitive) match, or `*` in `allowed`.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// The client address from `X-Forwarded-For`: the rightmost entry (over every header line)
/// that is not inside `trusted` proxies. If every entry is trusted, the leftmost one read;
/// reading stops at the first entry that is not an IP address (what is left of it was written
/// by the client). `None` without a usable entry.
pub fn client_ip(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut hop = None;
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in line.to_str().ok()?.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return hop;
            };
            if !trusted.iter().any(|net| net.contains(&ip)) {
                return Some(ip);
            }
            hop = Some(ip);
        }
    }
    hop
}

/// The current Unix time in seconds (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    since_epoch().as_secs()
}

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    since_epoch().as_millis() as u64
}

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn lines(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn subprotocols_over_every_line() {
        let h = lines("sec-websocket-protocol", &["chat, jwt-auth", " x.y "]);
        assert_eq!(
            subprotocols(&h).collect::<Vec<_>>(),
            ["chat", "jwt-auth", "x.y"]
        );
        assert!(offers_subprotocol(&h, WEBSOCKET_PROTOCOL_MARKER));
        assert!(!offers_subprotocol(&h, "JWT-AUTH"));
        assert!(!offers_subprotocol(&HeaderMap::new(), "jwt-auth"));
    }

    #[test]
    fn origins() {
        let list = vec!["https://App.test".to_string()];
        assert!(origin_allowed(&list, "https://app.test"));
        assert!(!origin_allowed(&list, "https://evil.test"));
        assert!(origin_allowed(&["*".to_string()], "https://evil.test"));
        assert!(!origin_allowed(&[], "https://app.test"));
    }

    /// The rightmost entry outside `trusted`, over every header line.
    #[test]
    fn client_ip_is_the_rightmost_untrusted_entry() {
        let xff = |v: &[&str]| lines("x-forwarded-for", v);
        let cdn: Vec<IpNet> = vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert_eq!(client_ip(&xff(&["1.1.1.1, 2.2.2.2"]), &[]), ip("2.2.2.2"));
        assert_eq!(
            client_ip(&xff(&["1.1.1.1", "2.2.2.2 , 3.3.3.3"]), &[]),
            ip("3.3.3.3")
        );
        assert_eq!(
            client_ip(&xff(&["6.6.6.6, 2.2.2.2, 198.51.100.9"]), &cdn),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(&xff(&["2.2.2.2, 198.51.100.9", "198.51.100.1"]), &cdn),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(&xff(&["garbage, 198.51.100.9"]), &cdn),
            ip("198.51.100.9")
        );
        assert_eq!(client_ip(&xff(&["garbage"]), &[]), None);
        assert_eq!(client_ip(&HeaderMap::new(), &[]), None);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_secs() > 1_577_836_800);
    }
}
