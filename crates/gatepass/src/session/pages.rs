//! The small HTML pages navigations get instead of JSON (SPEC §9): under 4 KB (Traefik empties
//! larger auth bodies), `text/html; charset=utf-8`, `no-store`, `Content-Security-Policy:
//! default-src 'none'`; what happened in words, with a sign-in or sign-out link where it helps.
//! Everything interpolated is escaped.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::policy::deny::{Body, DenyReason};

/// A link or button the page offers.
pub enum Action<'a> {
    None,
    /// `<a href>`: e.g. "Sign in" to `<prefix>/signin?rd=...`.
    Link {
        href: &'a str,
        text: &'a str,
    },
    /// A form that POSTs to `action` (sign-out must not be a cross-site GET).
    Post {
        action: &'a str,
        text: &'a str,
    },
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page: `title` as heading, `message` below it, then the action.
pub fn page(status: StatusCode, title: &str, message: &str, action: Action<'_>) -> Response<Body> {
    let action = match action {
        Action::None => String::new(),
        Action::Link { href, text } => {
            format!("<p><a href=\"{}\">{}</a></p>", escape(href), escape(text))
        }
        Action::Post { action, text } => format!(
            "<form method=\"post\" action=\"{}\"><button type=\"submit\">{}</button></form>",
            escape(action),
            escape(text)
        ),
    };
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{m}</p>{action}</body></html>",
        t = escape(title),
        m = escape(message),
    );
    // Never past Traefik's limit, whatever was interpolated (titles and messages are short).
    if html.len() > 3500 {
        html = format!(
            "<!doctype html><title>{0}</title><h1>{0}</h1>",
            escape(title)
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(html)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    r
}

/// The page for a denial of `/validate` (its status, its `Retry-After`): in words, with a
/// sign-in link for a 401 and a sign-out button for a 403.
pub fn denial(
    reason: DenyReason,
    retry_after: Option<u64>,
    signin: &str,
    logout: &str,
) -> Response<Body> {
    let status = reason.status();
    let (title, message, action) = match status {
        StatusCode::UNAUTHORIZED => (
            "Sign-in needed",
            "You are not signed in, or your sign-in has ended.",
            Action::Link { href: signin, text: "Sign in" },
        ),
        StatusCode::FORBIDDEN => (
            "Not allowed",
            "You are signed in, but your account may not open this page. Ask an administrator for access, or sign in as someone else.",
            Action::Post { action: logout, text: "Sign out" },
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "Too many requests",
            "Too many attempts in a short time. Wait a moment, then try again.",
            Action::None,
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Temporarily unavailable",
            "The sign-in service can't be reached right now. Try again in a moment.",
            Action::None,
        ),
        _ => ("Request refused", "This request can't be served.", Action::None),
    };
    let detail = format!("{message} ({})", reason.code().replace('_', " "));
    let mut r = page(status, title, &detail, action);
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_small_escaped_and_locked_down() {
        let r = page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "The provider said <script>alert(1)</script> & \"more\"",
            Action::Link {
                href: "/x?a=1&b=\"2\"",
                text: "Back",
            },
        );
        assert_eq!(r.status(), 403);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["content-security-policy"], "default-src 'none'");
        let body = String::from_utf8(
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;more&quot;"));
        assert!(body.contains("href=\"/x?a=1&amp;b=&quot;2&quot;\""));
        assert!(!body.contains("<script>"));
        let huge = page(
            StatusCode::BAD_REQUEST,
            "t",
            &"x".repeat(10_000),
            Action::None,
        );
        let len = huge.body().size_hint_exact();
        assert!(len < 4096, "{len}");
    }

    trait Exact {
        fn size_hint_exact(&self) -> usize;
    }

    impl Exact for Body {
        fn size_hint_exact(&self) -> usize {
            use hyper::body::Body as _;
            self.size_hint().exact().unwrap_or(u64::MAX) as usize
        }
    }
}
