//! The HTTP side of sign-in (SPEC §9): the redirect that starts one, the callback that ends
//! one in a session, sign-out, `<prefix>/session`, the cross-site rule, and the pages a
//! navigation gets. The endpoints are routed here by `server/` (Traefik sends `<prefix>/*`
//! straight to gatepass, without forwardAuth).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::flow::{self, Flow, FLOW_TTL, MAX_SIGNINS, SIGNIN_WINDOW};
use super::oidc::{self, AuthorizationRequest};
use super::pages::{self, Action};
use super::store::Stored;
use super::{hash_of, Resolved, Sessions, Tokens};
use crate::policy::deny::{json_response, Body, DenyReason};
use crate::verify::verified::now_secs;

/// Where a request came in, as the browser sees it: `X-Forwarded-Proto` and `-Host` (Traefik
/// sets both), else the `Host` header over http.
pub struct At<'a> {
    pub proto: &'static str,
    pub host: &'a str,
}

impl<'a> At<'a> {
    pub fn of(h: &'a HeaderMap) -> At<'a> {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let proto = match text("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        let host = text("x-forwarded-host")
            .or_else(|| text("host"))
            .unwrap_or("");
        At { proto, host }
    }

    pub fn secure(&self) -> bool {
        self.proto == "https"
    }

    /// `<proto>://<host><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.proto, self.host)
    }
}

/// A response with `no-store`, a status, `Location` and cookies.
fn redirect(status: StatusCode, location: &str, cookies: &[String]) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(l) = HeaderValue::from_str(location) {
        h.insert(LOCATION, l);
    }
    add_cookies(&mut r, cookies);
    r
}

fn add_cookies(r: &mut Response<Body>, cookies: &[String]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(SET_COOKIE, v);
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl Sessions {
    /// `<prefix><path>`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.prefix)
    }

    /// Is `host` (as in `X-Forwarded-Host`) one sign-in may start on?
    pub fn is_host(&self, host: &str) -> bool {
        self.cfg.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// A link that starts a sign-in coming back to `return_to`.
    pub fn signin_link(&self, return_to: &str) -> String {
        let rd: String =
            form_urlencoded::byte_serialize(flow::return_path(return_to).as_bytes()).collect();
        format!("{}?rd={rd}", self.path("/signin"))
    }

    /// Is this request a navigation on a sign-in host?
    pub fn is_navigation(&self, h: &HeaderMap, method: &str, upgrade: bool, host: &str) -> bool {
        flow::is_navigation(h, method, upgrade, host, &self.cfg.hosts)
    }

    /// SPEC §9's cross-site rule for a request the session cookie authenticates: an unsafe
    /// method needs an `Origin` whose host is a sign-in host, or `Sec-Fetch-Site: same-origin`.
    pub fn same_site(&self, h: &HeaderMap, method: &str) -> bool {
        if gatepass_identity::is_safe_method(method) {
            return true;
        }
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        if text("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("same-origin")) {
            return true;
        }
        text("origin")
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, authority)| self.is_host(authority))
    }

    /// The session cookie, when there is exactly one.
    fn cookie<'a>(&'a self, h: &'a HeaderMap) -> Option<&'a str> {
        crate::verify::token::cookie(h, &self.cfg.cookie_name)
            .ok()
            .flatten()
    }

    /// The redirect that starts a sign-in (SPEC §9): 302 to the provider with PKCE, `state`
    /// and `nonce`, a flow cookie for this sign-in only, and the sign-in counter; a 429 page
    /// instead when this browser started more than three in a minute (no loops), a 503 page
    /// while the provider's endpoints are unknown.
    pub fn start(&self, h: &HeaderMap, at: &At<'_>, return_to: &str) -> Response<Body> {
        let now = now_secs();
        let counter = format!("{}_signins", self.cfg.cookie_name);
        let seen = flow::cookies(h, &counter).next();
        let (count, window) = flow::signins(seen, now);
        if count >= MAX_SIGNINS {
            self.metrics.signin("loop_guard");
            tracing::warn!(
                host = at.host,
                "sign-in loop guard: too many sign-ins from one browser"
            );
            let retry = (window + SIGNIN_WINDOW).saturating_sub(now).max(1);
            return pages::denial(DenyReason::SigninLoop, Some(retry), "", "");
        }
        let Some(endpoints) = self.endpoints() else {
            self.metrics.signin("unavailable");
            return pages::denial(DenyReason::SigninUnavailable, None, "", "");
        };
        let flow = Flow {
            state: oidc::random_token(),
            nonce: oidc::random_token(),
            verifier: oidc::random_token(),
            return_to: flow::return_path(return_to).to_owned(),
            host: at.host.to_owned(),
            started: now,
        };
        let redirect_uri = at.url(&self.path("/callback"));
        let location = self.client.authorization_url(
            &endpoints.authorization,
            &AuthorizationRequest {
                redirect_uri: &redirect_uri,
                state: &flow.state,
                nonce: &flow.nonce,
                code_challenge: &oidc::pkce_challenge(&flow.verifier),
            },
        );
        let name = Flow::cookie_name(&self.cfg.cookie_name, &flow.state);
        let cookies = [
            flow::set_cookie(
                &name,
                &flow.seal(&self.keys, &name),
                &self.path("/callback"),
                Some(FLOW_TTL),
                at.secure(),
            ),
            flow::set_cookie(
                &counter,
                &format!("{}.{window}", count + 1),
                "/",
                Some(SIGNIN_WINDOW),
                at.secure(),
            ),
        ];
        self.metrics.signin("started");
        redirect(StatusCode::FOUND, &location, &cookies)
    }

    /// `GET <prefix>/signin?rd=<path>`: a sign-in on purpose.
    pub fn signin(&self, h: &HeaderMap, query: &str) -> Response<Body> {
        let at = At::of(h);
        if !self.is_host(at.host) {
            return self.wrong_host();
        }
        let rd = query_param(query, "rd");
        self.start(h, &at, rd.as_deref().unwrap_or("/"))
    }

    fn wrong_host(&self) -> Response<Body> {
        pages::page(
            StatusCode::BAD_REQUEST,
            "Sign-in is not available here",
            "This host is not one gatepass signs people in on.",
            Action::None,
        )
    }

    /// A callback error page, counted.
    fn callback_error(
        &self,
        outcome: &'static str,
        status: StatusCode,
        title: &str,
        message: &str,
        back: &str,
    ) -> Response<Body> {
        self.metrics.signin(outcome);
        tracing::info!(
            outcome,
            status = status.as_u16(),
            "sign-in callback refused"
        );
        pages::page(
            status,
            title,
            message,
            Action::Link {
                href: back,
                text: "Start again",
            },
        )
    }

    /// `GET <prefix>/callback`: the provider sends the browser back here (SPEC §9).
    pub async fn callback(self: &Arc<Self>, h: &HeaderMap, query: &str) -> Response<Body> {
        let at = At::of(h);
        if !self.is_host(at.host) {
            return self.wrong_host();
        }
        let expired = |this: &Self, back: &str| {
            this.callback_error(
                "flow_expired",
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in has expired or was started in another browser: start again.",
                back,
            )
        };
        let Some(state) = query_param(query, "state") else {
            return expired(self, "/");
        };
        let name = Flow::cookie_name(&self.cfg.cookie_name, &state);
        let flow = flow::cookies(h, &name)
            .find_map(|v| Flow::open(&self.keys, &name, v))
            .filter(|f| f.state == *state && f.host.eq_ignore_ascii_case(at.host));
        let Some(flow) = flow else {
            return expired(self, "/");
        };
        let back = flow.return_to.clone();
        // Used once: a second callback for this flow never reaches the token endpoint
        // (exchanging a code twice makes providers revoke the grant, RFC 6749 §4.1.2).
        let left = std::time::Duration::from_secs(
            (flow.started + FLOW_TTL).saturating_sub(now_secs()).max(1),
        );
        let clear_flow = flow::set_cookie(&name, "", &self.path("/callback"), Some(0), at.secure());
        match self.store.first_callback(hash_of(&state), left).await {
            Ok(true) => {}
            Ok(false) => {
                let mut r = self.callback_error(
                    "replayed",
                    StatusCode::BAD_REQUEST,
                    "Sign-in already used",
                    "This sign-in was already completed or refused: start again.",
                    &back,
                );
                add_cookies(&mut r, &[clear_flow]);
                return r;
            }
            Err(_) => {
                self.metrics.signin("unavailable");
                return pages::denial(DenyReason::StateUnavailable, None, "", "");
            }
        }
        if let Some(error) = query_param(query, "error") {
            let error = oidc::sanitize(&error);
            let mut r = self.callback_error(
                "provider_error",
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                &format!("The sign-in service refused the sign-in: {error}."),
                &back,
            );
            add_cookies(&mut r, &[clear_flow]);
            return r;
        }
        let mut r = self
            .finish(&at, &flow, query_param(query, "code").as_deref())
            .await;
        add_cookies(&mut r, &[clear_flow]);
        r
    }

    /// The code exchanged, the ID token and the access token verified, the session created:
    /// 303 back to where the browser was going, with the session cookie.
    async fn finish(
        self: &Arc<Self>,
        at: &At<'_>,
        flow: &Flow,
        code: Option<&str>,
    ) -> Response<Body> {
        let back = &flow.return_to;
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            return self.callback_error(
                "exchange_failed",
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The sign-in service sent no code.",
                back,
            );
        };
        let Some(endpoints) = self.endpoints() else {
            self.metrics.signin("unavailable");
            return pages::denial(DenyReason::SigninUnavailable, None, "", "");
        };
        let redirect_uri = at.url(&self.path("/callback"));
        let set = match self
            .client
            .exchange_code(&endpoints.token, code, &redirect_uri, &flow.verifier)
            .await
        {
            Ok(set) => set,
            Err(oidc::GrantError::Unavailable) => {
                self.metrics.signin("unavailable");
                return pages::denial(DenyReason::SigninUnavailable, None, "", "");
            }
            Err(e) => {
                return self.callback_error(
                    "exchange_failed",
                    StatusCode::UNAUTHORIZED,
                    "Sign-in failed",
                    &format!("The sign-in service did not accept the sign-in ({e})."),
                    back,
                );
            }
        };
        let Some(id_token) = set.id_token.as_deref() else {
            return self.callback_error(
                "token_refused",
                StatusCode::UNAUTHORIZED,
                "Sign-in failed",
                "The sign-in service sent no ID token.",
                back,
            );
        };
        let id = match oidc::verify_id_token(
            self.issuer(),
            &self.client.client_id,
            id_token,
            Some(&flow.nonce),
        )
        .await
        {
            Ok(id) => id,
            Err(e) => {
                return self.callback_error(
                    "token_refused",
                    StatusCode::UNAUTHORIZED,
                    "Sign-in refused",
                    &format!("{e}: no session was created."),
                    back,
                );
            }
        };
        let tokens = Tokens {
            access: set.access_token,
            refresh: set.refresh_token,
            id: Some(id_token.to_owned()),
        };
        let verified = match self.verify(&tokens).await {
            Ok(v) => v,
            Err(reason) => {
                let why = format!(
                    "The sign-in service's token was refused ({}): no session was created.",
                    reason.code().replace('_', " ")
                );
                return self.callback_error(
                    "token_refused",
                    StatusCode::UNAUTHORIZED,
                    "Sign-in refused",
                    &why,
                    back,
                );
            }
        };
        let session = oidc::random_token();
        let hash = hash_of(&session);
        let now = now_secs();
        let stored = Stored {
            version: 1,
            tokens: self.seal(&hash, &tokens),
            access_exp: verified.exp,
            // The provider's sid (so its back-channel logout ends this session), else a
            // public id of this session: never the cookie.
            sid: id
                .sid
                .unwrap_or_else(|| oidc::random_token()[..22].to_owned()),
            created: now,
            expires: now.saturating_add(self.cfg.session_ttl.0.as_secs()),
            used: now,
        };
        if self.store.create(hash, &stored).await.is_err() {
            self.metrics.signin("unavailable");
            return pages::denial(DenyReason::StateUnavailable, None, "", "");
        }
        let entry = Arc::new(self.entry(hash, &stored, verified, &tokens, now));
        self.cache.insert(session.clone(), entry);
        self.metrics.signin("completed");
        tracing::info!(host = at.host, "signed in");
        let cookies = [
            flow::set_cookie(&self.cfg.cookie_name, &session, "/", None, at.secure()),
            flow::set_cookie(
                &format!("{}_signins", self.cfg.cookie_name),
                "",
                "/",
                Some(0),
                at.secure(),
            ),
        ];
        redirect(StatusCode::SEE_OTHER, &at.url(back), &cookies)
    }

    /// `POST <prefix>/logout` (under the cross-site rule), or `GET` when `Sec-Fetch-Site` is
    /// `same-origin`, `none` or absent (a cross-site GET gets a page with a sign-out button):
    /// ends the session everywhere, clears the cookie, 302 to the provider's end-session
    /// endpoint (or straight to `post_logout_redirect`).
    pub async fn logout(self: &Arc<Self>, h: &HeaderMap, method: &Method) -> Response<Body> {
        let at = At::of(h);
        let site = h
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let acts = match *method {
            Method::POST => self.same_site(h, "POST"),
            Method::GET | Method::HEAD => site.is_none_or(|s| {
                s.eq_ignore_ascii_case("same-origin") || s.eq_ignore_ascii_case("none")
            }),
            _ => false,
        };
        if !acts {
            if *method == Method::POST {
                return DenyReason::CrossSite.response(None);
            }
            return pages::page(
                StatusCode::OK,
                "Sign out?",
                "Another site sent you here. Sign out of this site?",
                Action::Post {
                    action: &self.path("/logout"),
                    text: "Sign out",
                },
            );
        }
        let mut id_token = None;
        if let Some(id) = self.cookie(h) {
            if let Some((token, sid)) = self.id_token_and_sid(id).await {
                id_token = token;
                self.end(id, &sid).await;
                tracing::info!(host = at.host, "signed out");
            }
        }
        let after = if self.is_host(at.host) {
            at.url(&self.cfg.post_logout_redirect)
        } else {
            self.cfg.post_logout_redirect.clone()
        };
        let location = match self
            .endpoints()
            .and_then(|e| e.end_session)
            .filter(|_| self.is_host(at.host))
        {
            Some(end) => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if let Some(t) = &id_token {
                    q.append_pair("id_token_hint", t);
                }
                q.append_pair("client_id", &self.client.client_id)
                    .append_pair("post_logout_redirect_uri", &after);
                let sep = if end.contains('?') { '&' } else { '?' };
                format!("{end}{sep}{}", q.finish())
            }
            None => after,
        };
        let clear = flow::set_cookie(&self.cfg.cookie_name, "", "/", Some(0), at.secure());
        redirect(StatusCode::FOUND, &location, &[clear])
    }

    /// `GET <prefix>/session`: who is signed in, for the page (no token in it); else the 401
    /// of `/validate`.
    pub async fn info(self: &Arc<Self>, h: &HeaderMap) -> Response<Body> {
        let Some(id) = self.cookie(h) else {
            return DenyReason::MissingToken.response(None);
        };
        let entry = match self.cached(id) {
            Some(e) => e,
            None => match self.resolve(id).await {
                Resolved::Valid(e) => e,
                Resolved::Ended => return DenyReason::SessionEnded.response(None),
                Resolved::Unavailable => return DenyReason::SessionUnavailable.response(None),
                Resolved::Refused(reason) => return reason.response(None),
            },
        };
        if self.revocations.is_revoked(&entry.verified) {
            self.forget(id, &entry);
            return DenyReason::SessionEnded.response(None);
        }
        let who = entry.verified.identity();
        let body = serde_json::json!({
            "sub": who.id,
            "username": who.username,
            "role": who.role,
            "permissions": who.permissions,
            "expires_at": entry.verified.exp,
            "session_expires_at": entry.expires,
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// The page a navigation gets for a denial of `/validate`.
    pub fn page_for(
        &self,
        reason: DenyReason,
        retry_after: Option<u64>,
        uri: &str,
    ) -> Response<Body> {
        pages::denial(
            reason,
            retry_after,
            &self.signin_link(uri),
            &self.path("/logout"),
        )
    }
}
