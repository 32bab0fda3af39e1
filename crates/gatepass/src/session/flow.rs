//! One sign-in in progress (SPEC §9): the flow cookie (sealed: `state`, `nonce`, PKCE
//! verifier, return path), one per flow so parallel tabs don't clash; the sign-in counter that
//! stops redirect loops; where a browser may be sent back to; and which requests are
//! navigations (the only ones sent to sign in).

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::is_local_path;
use crate::session::seal::SealKeys;
use crate::verify::verified::now_secs;

/// How long a sign-in may take (the flow cookie's `Max-Age`).
pub const FLOW_TTL: u64 = 600;
/// More sign-ins than this within [`SIGNIN_WINDOW`] seconds get a 429 page (no loops).
pub const MAX_SIGNINS: u32 = 3;
pub const SIGNIN_WINDOW: u64 = 60;

/// A sign-in in progress: what the callback needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The path (and query) to come back to, on `host`.
    pub return_to: String,
    pub host: String,
    /// When it started (Unix seconds).
    pub started: u64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flow { .. }")
    }
}

impl Flow {
    /// The cookie this flow lives in: `<cookie_name>_flow_<8 hex of SHA-256(state)>`, so the
    /// callback finds its own flow among several tabs'.
    pub fn cookie_name(cookie: &str, state: &str) -> String {
        let d = gatepass_service::digest::sha256(state.as_bytes());
        format!(
            "{cookie}_flow_{:02x}{:02x}{:02x}{:02x}",
            d[0], d[1], d[2], d[3]
        )
    }

    /// Sealed for its cookie.
    pub fn seal(&self, keys: &SealKeys, cookie_name: &str) -> String {
        // Serializing strings and a number can't fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        keys.seal(cookie_name.as_bytes(), &json)
    }

    /// The flow sealed in `value` of cookie `cookie_name`, while it is younger than
    /// [`FLOW_TTL`]; `None` for anything else.
    pub fn open(keys: &SealKeys, cookie_name: &str, value: &str) -> Option<Flow> {
        let json = keys.open(cookie_name.as_bytes(), value)?;
        let flow: Flow = serde_json::from_slice(&json).ok()?;
        let age = now_secs().checked_sub(flow.started)?;
        (age < FLOW_TTL).then_some(flow)
    }
}

/// Where a browser may be sent back to on this host: `p` when it is a same-host path (not
/// `//host` or `/\host`, which browsers read as another host), else `/`.
pub fn return_path(p: &str) -> &str {
    if is_local_path(p) && !p.contains('\\') {
        p
    } else {
        "/"
    }
}

/// The browser's sign-in counter (`<cookie_name>_signins`: `count.window_start`). Unsealed:
/// it only stops honest browsers from looping; a client that drops it gains nothing.
pub fn signins(value: Option<&str>, now: u64) -> (u32, u64) {
    let parsed = value.and_then(|v| {
        let (n, t) = v.split_once('.')?;
        Some((n.parse::<u32>().ok()?, t.parse::<u64>().ok()?))
    });
    match parsed {
        Some((n, start)) if now.saturating_sub(start) < SIGNIN_WINDOW && start <= now => (n, start),
        _ => (0, now),
    }
}

/// A `Set-Cookie` value with the attributes every gatepass cookie has: `HttpOnly`,
/// `SameSite=Lax`, and `Secure` when the browser talks https.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

pub use crate::verify::token::cookies;

/// A navigation (SPEC §9): GET or HEAD, not an upgrade, on a sign-in host, with
/// `Sec-Fetch-Mode: navigate` (or, without `Sec-Fetch-Mode`, an `Accept` listing `text/html`),
/// and no `X-Requested-With`. Only these are sent to sign in or shown pages.
pub fn is_navigation(
    h: &HeaderMap,
    method: &str,
    upgrade: bool,
    host: &str,
    hosts: &[String],
) -> bool {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
        || upgrade
        || h.contains_key("x-requested-with")
        || !hosts.iter().any(|x| x.eq_ignore_ascii_case(host))
    {
        return false;
    }
    match text("sec-fetch-mode") {
        Some(mode) => mode.trim().eq_ignore_ascii_case("navigate"),
        None => text("accept").is_some_and(|a| {
            a.split(',').any(|m| {
                m.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> SealKeys {
        use base64::Engine;
        SealKeys::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn flow_cookies_are_sealed_named_by_state_and_expire() {
        let k = keys();
        let flow = Flow {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            return_to: "/x?y=1".into(),
            host: "app.test".into(),
            started: now_secs(),
        };
        let name = Flow::cookie_name("gp", "st");
        assert!(name.starts_with("gp_flow_") && name.len() == "gp_flow_".len() + 8);
        assert_ne!(name, Flow::cookie_name("gp", "other"));
        let sealed = flow.seal(&k, &name);
        assert!(!sealed.contains("/x?y=1"));
        assert_eq!(Flow::open(&k, &name, &sealed), Some(flow.clone()));
        // Another cookie's name (another tab's flow) doesn't open it.
        assert_eq!(
            Flow::open(&k, &Flow::cookie_name("gp", "other"), &sealed),
            None
        );
        let old = Flow {
            started: now_secs() - FLOW_TTL,
            ..flow
        };
        assert_eq!(Flow::open(&k, &name, &old.seal(&k, &name)), None);
        assert_eq!(Flow::open(&k, &name, "garbage"), None);
    }

    #[test]
    fn return_paths_stay_on_the_host() {
        for ok in ["/", "/x", "/a/b?c=d&e=%2F%2F", "/%2F%2Fevil"] {
            assert_eq!(return_path(ok), ok);
        }
        for bad in [
            "//evil",
            "/\\evil",
            "https://evil",
            "evil",
            "",
            "/a\\b",
            "/\tx",
            "http:/evil",
        ] {
            assert_eq!(return_path(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn the_signin_counter_counts_within_a_window() {
        assert_eq!(signins(None, 1000), (0, 1000));
        assert_eq!(signins(Some("2.990"), 1000), (2, 990));
        assert_eq!(signins(Some("9.900"), 1000), (0, 1000), "window over");
        assert_eq!(signins(Some("9.2000"), 1000), (0, 1000), "from the future");
        assert_eq!(signins(Some("x"), 1000), (0, 1000));
    }

    #[test]
    fn navigations() {
        let hosts = vec!["app.test:8080".to_string()];
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let nav = h(&[("sec-fetch-mode", "navigate")]);
        assert!(is_navigation(&nav, "GET", false, "app.test:8080", &hosts));
        assert!(is_navigation(&nav, "HEAD", false, "APP.test:8080", &hosts));
        assert!(!is_navigation(&nav, "POST", false, "app.test:8080", &hosts));
        assert!(!is_navigation(&nav, "GET", true, "app.test:8080", &hosts));
        assert!(!is_navigation(&nav, "GET", false, "other.test", &hosts));
        assert!(!is_navigation(
            &h(&[("sec-fetch-mode", "cors")]),
            "GET",
            false,
            "app.test:8080",
            &hosts
        ));
        let html = h(&[("accept", "text/html,application/xhtml+xml;q=0.9")]);
        assert!(is_navigation(&html, "GET", false, "app.test:8080", &hosts));
        assert!(!is_navigation(
            &h(&[("accept", "application/json")]),
            "GET",
            false,
            "app.test:8080",
            &hosts
        ));
        assert!(!is_navigation(
            &HeaderMap::new(),
            "GET",
            false,
            "app.test:8080",
            &hosts
        ));
        let xhr = h(&[
            ("sec-fetch-mode", "navigate"),
            ("x-requested-with", "XMLHttpRequest"),
        ]);
        assert!(!is_navigation(&xhr, "GET", false, "app.test:8080", &hosts));
        // A Sec-Fetch-Mode other than navigate wins over an Accept with text/html.
        let fetch = h(&[("sec-fetch-mode", "cors"), ("accept", "text/html")]);
        assert!(!is_navigation(
            &fetch,
            "GET",
            false,
            "app.test:8080",
            &hosts
        ));
    }
}
