//! An HTTP client that behaves as a browser does for sign-in tests: a cookie jar (host-only,
//! `Path`, `Max-Age`; cookies are per host, not per port, as browsers keep them), the
//! navigation headers (`Sec-Fetch-Mode: navigate`, `Accept: text/html`), redirects followed one
//! hop at a time (each hop kept, so a test sees every `Location` and `Set-Cookie`), and form
//! posts. The real browser test drives Chromium; this one lets Rust tests sign in at the real
//! OpenID Provider and check every step.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;

/// A cookie in the jar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// The host it was set by (without a port).
    pub host: String,
    pub name: String,
    pub value: String,
    pub path: String,
    expires: Option<Instant>,
}

/// One response.
#[derive(Debug, Clone)]
pub struct Page {
    pub method: Method,
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` line.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// `Location`, resolved against this page's URL.
    pub fn location(&self) -> Option<String> {
        let l = self.h("location")?;
        Some(
            reqwest::Url::parse(&self.url)
                .ok()?
                .join(l)
                .ok()?
                .to_string(),
        )
    }

    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
    }

    /// The value of query parameter `name` in `Location`.
    pub fn location_param(&self, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(&self.location()?).ok()?;
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// The navigation headers a browser sends when a person opens or follows a link.
pub const NAVIGATION: [(&str, &str); 3] = [
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-dest", "document"),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
];

/// A browser: one cookie jar, no automatic redirects.
pub struct Browser {
    client: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".into())
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            jar: Mutex::new(Vec::new()),
        }
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, Vec<Cookie>> {
        self.jar.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Cookie` header for `url`: every live cookie of its host whose path matches.
    pub fn cookie_header(&self, url: &str) -> String {
        let (host, path) = (host_of(url), path_of(url));
        let now = Instant::now();
        self.jar()
            .iter()
            .filter(|c| c.host == host && c.expires.is_none_or(|e| e > now))
            .filter(|c| {
                path == c.path
                    || (path.starts_with(&c.path)
                        && (c.path.ends_with('/') || path[c.path.len()..].starts_with('/')))
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps what a response sets.
    fn store(&self, url: &str, page: &Page) {
        let host = host_of(url);
        for line in page.set_cookies() {
            let mut parts = line.split(';');
            let Some((name, value)) = parts.next().and_then(|kv| kv.trim().split_once('=')) else {
                continue;
            };
            let mut cookie = Cookie {
                host: host.clone(),
                name: name.to_owned(),
                value: value.to_owned(),
                path: "/".into(),
                expires: None,
            };
            let mut gone = false;
            for attr in parts {
                let (k, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
                if k.eq_ignore_ascii_case("path") {
                    cookie.path = v.to_owned();
                } else if k.eq_ignore_ascii_case("max-age") {
                    let secs: i64 = v.parse().unwrap_or(0);
                    gone = secs <= 0;
                    cookie.expires = Some(Instant::now() + Duration::from_secs(secs.max(0) as u64));
                }
            }
            let mut jar = self.jar();
            jar.retain(|c| {
                !(c.host == cookie.host && c.name == cookie.name && c.path == cookie.path)
            });
            if !gone {
                jar.push(cookie);
            }
        }
    }

    /// The value of cookie `name` (any host, any path), if the jar has one.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar()
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    /// Every cookie in the jar.
    pub fn cookies(&self) -> Vec<Cookie> {
        self.jar().clone()
    }

    /// Sets (or replaces) a cookie for `url`'s host, as a page's script or a tamperer would.
    pub fn set_cookie(&self, url: &str, name: &str, value: &str, path: &str) {
        let cookie = Cookie {
            host: host_of(url),
            name: name.into(),
            value: value.into(),
            path: path.into(),
            expires: None,
        };
        let mut jar = self.jar();
        jar.retain(|c| !(c.host == cookie.host && c.name == cookie.name && c.path == cookie.path));
        jar.push(cookie);
    }

    /// Drops every cookie whose name starts with `prefix`.
    pub fn forget(&self, prefix: &str) {
        self.jar().retain(|c| !c.name.starts_with(prefix));
    }

    /// One request with the jar's cookies and `headers`; keeps what it sets.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut req = self.client.request(method.clone(), url);
        let cookies = self.cookie_header(url);
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let page = Page {
            method,
            url: url.to_owned(),
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap_or_default(),
        };
        self.store(url, &page);
        page
    }

    /// A navigation to `url` (the navigation headers, `Sec-Fetch-Site: none`), one hop.
    pub async fn open(&self, url: &str) -> Page {
        let mut h = NAVIGATION.to_vec();
        h.push(("sec-fetch-site", "none"));
        self.request(Method::GET, url, &h, None).await
    }

    /// Follows `page`'s redirects as a navigation (GET), hop by hop, until a page that is not
    /// a redirect: every page, `page` first.
    pub async fn follow(&self, page: Page) -> Vec<Page> {
        self.follow_while(page, |_| true).await
    }

    /// [`Browser::follow`] while the next URL satisfies `go` (the last page is then the
    /// redirect to the first URL that does not).
    pub async fn follow_while(&self, page: Page, go: impl Fn(&str) -> bool) -> Vec<Page> {
        let mut pages = vec![page];
        while let Some(next) = pages
            .last()
            .filter(|p| p.is_redirect())
            .and_then(Page::location)
            .filter(|u| go(u))
        {
            assert!(
                pages.len() < 20,
                "more than 20 redirects: {:?}",
                urls(&pages)
            );
            let mut h = NAVIGATION.to_vec();
            h.push(("sec-fetch-site", "cross-site"));
            pages.push(self.request(Method::GET, &next, &h, None).await);
        }
        pages
    }

    /// Opens `url` and follows its redirects.
    pub async fn navigate(&self, url: &str) -> Vec<Page> {
        let first = self.open(url).await;
        self.follow(first).await
    }

    /// Submits a form to `url` as a navigation (POST, urlencoded, `Origin` of `url`), then
    /// follows the redirects.
    pub async fn submit(&self, url: &str, fields: &[(&str, &str)]) -> Vec<Page> {
        let first = self.submit_once(url, fields).await;
        self.follow(first).await
    }

    /// [`Browser::submit`] without following its answer.
    pub async fn submit_once(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        let origin = reqwest::Url::parse(url)
            .unwrap()
            .origin()
            .ascii_serialization();
        let mut h = NAVIGATION.to_vec();
        h.push(("sec-fetch-site", "same-origin"));
        h.push(("origin", &origin));
        self.request(Method::POST, url, &h, Some(fields)).await
    }
}

/// The URLs of `pages`, for messages.
pub fn urls(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .map(|p| format!("{} {} {}", p.status, p.method, p.url))
        .collect()
}
